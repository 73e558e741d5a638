"""evoprompting.mirror: the workdir's copy kept up to date during a run."""

import os
import stat
import time

import pytest

from evoprompting import mirror


def _files(folder):
    return {os.path.relpath(os.path.join(d, f), folder):
            open(os.path.join(d, f), 'rb').read()
            for d, _, names in os.walk(folder) for f in names
            if f != mirror.MARKER}


def test_copy_tree_copies_what_changed_and_nothing_else(tmp_path):
    src, dst = tmp_path / 'work', tmp_path / 'copy'
    (src / 'rounds').mkdir(parents=True)
    (src / 'candidates.jsonl').write_text('{"id": 0}\n')
    (src / 'rounds' / 'round_0.json').write_text('[]')
    assert mirror.copy_tree(str(src), str(dst)) == 2
    assert _files(dst) == _files(src)
    assert mirror.copy_tree(str(src), str(dst)) == 0  # Nothing changed.
    with open(src / 'candidates.jsonl', 'a') as f:
        f.write('{"id": 1}\n')
    assert mirror.copy_tree(str(src), str(dst)) == 1
    assert _files(dst) == _files(src)
    assert not any(n.endswith('.mirror-tmp') for n in _files(dst))


def test_what_the_run_deleted_is_deleted_from_the_mirror(tmp_path):
    src, dst = tmp_path / 'work', tmp_path / 'copy'
    (src / 'checkpoints' / '3').mkdir(parents=True)
    (src / 'checkpoints' / '3' / 'state').write_text('old')
    (src / 'store.jsonl').write_text('{}\n')
    mirror.copy_tree(str(src), str(dst))
    assert (dst / mirror.MARKER).exists()
    (src / 'checkpoints' / '3' / 'state').unlink()
    (src / 'checkpoints' / '3').rmdir()
    (src / 'checkpoints' / '4').mkdir()
    (src / 'checkpoints' / '4' / 'state').write_text('new')
    mirror.copy_tree(str(src), str(dst))
    assert _files(dst) == _files(src)
    assert not (dst / 'checkpoints' / '3').exists()
    # A folder of other files is never a destination: it would be emptied.
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'thesis.tex').write_text('x')
    with pytest.raises(ValueError, match='is not a mirror'):
        mirror.check_destination(str(tmp_path / 'mine'), str(src))
    mirror.check_destination(str(dst), str(src))  # An earlier mirror is fine.


def test_requests_coalesce_and_close_copies_the_last_state(tmp_path):
    src, dst = tmp_path / 'work', tmp_path / 'copy'
    src.mkdir()
    with mirror.Mirror(str(src), str(dst)) as copy:
        for i in range(50):
            (src / 'candidates.jsonl').write_text(f'{i}\n')
            copy.request()
    # At most one copy per request and the last one, and the final state
    # is there.
    assert 1 <= copy.copies <= 51
    assert (dst / 'candidates.jsonl').read_text() == '49\n'


def _fake_gcloud(tmp_path, exit_code):
    """A stand-in for Google's CLI (no network here): logs its arguments."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    script = bin_dir / 'gcloud'
    script.write_text('#!/bin/sh\necho "$@" >> "%s"\n'
                      'echo "denied: no such bucket" >&2\nexit %d\n'
                      % (tmp_path / 'gcloud.log', exit_code))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.mark.parametrize('exit_code', [0, 1])
def test_gcs_destination_runs_gcloud_rsync_and_survives_failures(
        tmp_path, monkeypatch, caplog, exit_code):
    bin_dir = _fake_gcloud(tmp_path, exit_code)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    src = tmp_path / 'work'
    src.mkdir()
    with mirror.Mirror(str(src), 'gs://bucket/run') as copy:
        copy.request()
        time.sleep(0.5)
    calls = (tmp_path / 'gcloud.log').read_text().splitlines()
    assert calls and set(calls) == {
        'storage rsync --recursive --delete-unmatched-destination-objects '
        f'{src} gs://bucket/run'}
    assert copy.copies == (len(calls) if exit_code == 0 else 0)
    if exit_code:  # Logged, never raised: the search goes on.
        assert 'no such bucket' in caplog.text


@pytest.mark.parametrize('dest, words', [
    ('gs://', 'names no bucket'),
    ('s3://bucket/run', 'only gs:// URLs'),
    ('{work}', 'must not contain one another'),
    ('{work}/mirror', 'must not contain one another'),
    ('{parent}', 'must not contain one another'),
])
def test_bad_destinations_are_refused(tmp_path, dest, words):
    work = tmp_path / 'work'
    dest = dest.format(work=work, parent=tmp_path)
    with pytest.raises(ValueError, match=words):
        mirror.check_destination(dest, str(work))


def test_files_that_cannot_be_copied_do_not_stop_the_others(tmp_path):
    src, dst = tmp_path / 'work', tmp_path / 'copy'
    src.mkdir()
    os.mkfifo(src / 'a_fifo')
    os.symlink('loop', src / 'loop')  # A symlink to itself.
    os.symlink('/nonexistent', src / 'broken')
    (src / 'z.json').write_text('{}')
    (src / 'unreadable').write_text('secret')
    os.chmod(src / 'unreadable', 0)
    mirror.copy_tree(str(src), str(dst))
    assert (dst / 'z.json').read_text() == '{}'
    assert not (dst / 'a_fifo').exists() and not (dst / 'loop').exists()


def test_a_destination_that_is_a_file_is_refused(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ValueError, match='not a folder'):
        mirror.check_destination(str(tmp_path / 'file'), str(tmp_path / 'w'))
