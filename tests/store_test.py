"""The candidate log and loop state survive crashes, including SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from evoprompting import store
from evoprompting.tasks import base


def candidate(i, status=base.Status.OK):
    result = base.EvalResult(status, 'msg', base.source_sha256(f'x = {i}'),
                             params=i, metrics={'val_accuracy': 0.5})
    return store.Candidate(id=i, round=0, source=f'x = {i}\n', result=result,
                           parents=(0, 1), prompt_id=2, temperature=0.6)


def test_round_trip(tmp_path):
    with store.CandidateStore.open(str(tmp_path)) as s:
        for i in range(3):
            s.append(candidate(i, base.Status.NAN if i == 1 else base.Status.OK))
    reopened = store.CandidateStore.open(str(tmp_path))
    assert list(reopened) == [candidate(0), candidate(1, base.Status.NAN),
                              candidate(2)]
    reopened.append(candidate(3))
    with pytest.raises(ValueError, match='not the next id'):
        reopened.append(candidate(7))


def test_truncated_last_line_is_repaired(tmp_path, caplog):
    with store.CandidateStore.open(str(tmp_path)) as s:
        s.append(candidate(0))
        s.append(candidate(1))
    path = tmp_path / store.CANDIDATES_FILE
    whole = path.read_bytes()
    path.write_bytes(whole[:-25])  # A write cut short.
    reopened = store.CandidateStore.open(str(tmp_path))
    assert [c.id for c in reopened] == [0]
    assert 'truncated last record' in caplog.text
    reopened.append(candidate(1))
    reopened.close()
    assert path.read_bytes() == whole


def test_damaged_complete_line_is_an_error(tmp_path):
    path = tmp_path / store.CANDIDATES_FILE
    path.write_text(json.dumps(candidate(0).to_json()) + '\n{oops}\n'
                    + json.dumps(candidate(2).to_json()) + '\n')
    with pytest.raises(store.StoreCorrupted, match='line 2'):
        store.CandidateStore.open(str(tmp_path))


def test_state_is_replaced_atomically(tmp_path):
    assert store.read_state(str(tmp_path)) is None
    store.write_state(str(tmp_path), {'round': 1, 'population': [3, 4]})
    store.write_state(str(tmp_path), {'round': 2, 'population': [5]})
    assert store.read_state(str(tmp_path)) == {'round': 2, 'population': [5]}
    assert os.listdir(tmp_path) == [store.STATE_FILE]


def test_sigkill_during_appends_loses_nothing_recorded(tmp_path):
    """A real writer killed with SIGKILL: every acknowledged record survives."""
    writer = textwrap.dedent(f'''
        import sys
        from evoprompting import store
        from evoprompting.tasks import base
        s = store.CandidateStore.open({str(tmp_path)!r})
        for i in range(100000):
            r = base.EvalResult(base.Status.OK, 'm' * 2000, 'sha', params=i)
            s.append(store.Candidate(id=i, round=0, source='x' * 5000, result=r))
            print(i, flush=True)
    ''')
    proc = subprocess.Popen([sys.executable, '-c', writer],
                            stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    deadline = time.monotonic() + 60
    while acknowledged < 200 and time.monotonic() < deadline:
        acknowledged = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reopened = store.CandidateStore.open(str(tmp_path))
    assert len(reopened) >= acknowledged + 1
    assert [c.id for c in reopened] == list(range(len(reopened)))


def test_store_format_is_recorded_migrated_and_checked(tmp_path):
    fresh = tmp_path / 'fresh'
    store.CandidateStore.open(str(fresh)).close()
    assert json.loads((fresh / store.FORMAT_FILE).read_text()) == {
        'store_format': store.STORE_FORMAT}
    # A workdir of format 1 (no format file, results without `isolation`)
    # opens, its records read with the default, and it is marked current.
    old = tmp_path / 'old'
    old.mkdir()
    record = candidate(0).to_json()
    del record['result']['isolation']
    (old / store.CANDIDATES_FILE).write_text(json.dumps(record) + '\n')
    with store.CandidateStore.open(str(old)) as s:
        assert list(s) == [candidate(0)]
    assert json.loads((old / store.FORMAT_FILE).read_text())[
        'store_format'] == store.STORE_FORMAT
    # A newer format is refused, with what to do.
    (old / store.FORMAT_FILE).write_text(
        json.dumps({'store_format': store.STORE_FORMAT + 1}))
    with pytest.raises(store.StoreFormatError, match='newer version'):
        store.CandidateStore.open(str(old))
    (old / store.FORMAT_FILE).write_text('{not json')
    with pytest.raises(store.StoreFormatError, match='unreadable'):
        store.CandidateStore.open(str(old))
    # Soft prompts of format 2 (a folder per round) cannot be migrated.
    (old / store.FORMAT_FILE).write_text(json.dumps({'store_format': 2}))
    (old / 'soft_prompts' / 'round_0').mkdir(parents=True)
    with pytest.raises(store.StoreFormatError, match='soft prompts in store '
                       'format 2.*another --workdir'):
        store.CandidateStore.open(str(old))
