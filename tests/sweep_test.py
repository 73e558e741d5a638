"""launch.sweep: gin-binding grids expanded into searches, run, resumed and
tabled."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from evoprompting import gin_utils, store
from launch import sweep


@pytest.mark.parametrize('text, expected', [
    ('search.SearchConfig.alpha=[0.3, 0.5]',
     ('search.SearchConfig.alpha', ('0.3', '0.5'))),
    ("  NAME = ['a, b', \"c]\"]", ('NAME', ("'a, b'", '"c]"'))),
    ('x.y=[(1, 2), [3, 4], {"k": 5}]', ('x.y', ('(1, 2)', '[3, 4]',
                                                '{"k": 5}'))),
    ('scope/fn.param=[@a.b(), %MACRO]', ('scope/fn.param',
                                         ('@a.b()', '%MACRO'))),
    ('SEARCH_SEED=[7]', ('SEARCH_SEED', ('7',))),
])
def test_parse_grid(text, expected):
    assert sweep.parse_grid(text) == expected


@pytest.mark.parametrize('text, words', [
    ('alpha=0.3', 'expected BINDING=[V1, V2, ...]'),
    ('=[1]', 'expected BINDING'),
    ('a b=[1]', 'expected BINDING'),
    ('alpha=[]', 'at least one value'),
    ('alpha=[1,,2]', 'no empty ones'),
    ("alpha=['x, 1]", 'unbalanced'),
    ('alpha=[(1, 2]', 'unbalanced'),
    ('alpha=[1, 1]', 'repeated'),
])
def test_malformed_grids_are_refused(text, words):
    with pytest.raises(sweep.SweepError) as info:
        sweep.parse_grid(text)
    assert words in str(info.value)


def test_product_zip_and_names():
    grids = [('search.SearchConfig.alpha', ('0.3', '0.5')),
             ('SEARCH_SEED', ('0', '1'))]
    runs = sweep.plan(['gin/mnist1d/quick.gin'], ['ROUNDS = 1'],
                      ["search.SearchConfig.alpha=[0.3, 0.5]",
                       'SEARCH_SEED=[0, 1]'])
    assert [r.name for r in runs] == [
        'alpha_0.3-SEARCH_SEED_0', 'alpha_0.3-SEARCH_SEED_1',
        'alpha_0.5-SEARCH_SEED_0', 'alpha_0.5-SEARCH_SEED_1']
    assert runs[1].bindings == ('ROUNDS = 1', 'search.SearchConfig.alpha = 0.3',
                                'SEARCH_SEED = 1')
    assert runs[1].command('/w')[-3:] == [
        '--gin_bindings=search.SearchConfig.alpha = 0.3',
        '--gin_bindings=SEARCH_SEED = 1', '--workdir=/w']
    assert sweep.expand(grids, zip_grids=True) == [
        (('search.SearchConfig.alpha', '0.3'), ('SEARCH_SEED', '0')),
        (('search.SearchConfig.alpha', '0.5'), ('SEARCH_SEED', '1'))]
    with pytest.raises(sweep.SweepError, match='one length'):
        sweep.expand([grids[0], ('SEARCH_SEED', ('0',))], zip_grids=True)
    with pytest.raises(sweep.SweepError, match='two grids'):
        sweep.expand([grids[0], grids[0]])
    # Same last name in two grids: the full names tell them apart.
    assert sweep.run_name((('a.TrainConfig.lr', '1'),
                           ('b.TrainConfig.lr', '2'))) == (
        'a.TrainConfig.lr_1-b.TrainConfig.lr_2')
    # Characters unsafe in a path; long names cut, kept unique.
    assert sweep.run_name((('X', "'a/b c'"),)) == "X_a_b_c"
    long = [sweep.run_name((('X', f"'{'v' * 200}{i}'"),)) for i in (1, 2)]
    assert len(set(long)) == 2 and all(len(n) <= 100 for n in long)
    # Values that differ only in characters a name drops still get two folders.
    twins = sweep.plan(['f.gin'], [], ["X=['a/b', 'a b', 'c']"])
    assert len({r.name for r in twins}) == 3
    # Only those get a hash: the others keep the folder they had.
    assert twins[2].name == 'X_c' and twins[0].name.startswith('X_a_b-')


def _sweep(*args, cwd):
    return subprocess.run([sys.executable, '-m', 'launch.sweep', *args],
                          cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize('grid, words', [
    ('search.SearchConfig.alphaa=[0.3, 0.5]', 'alphaa'),
    ('ROUNDZ=[1, 2]', 'did you mean ROUNDS?'),
    ('search.SearchConfig.alpha=0.3', 'expected BINDING=[V1, V2, ...]'),
])
def test_bad_grids_stop_the_sweep_before_any_run(tmp_path, grid, words):
    out = _sweep('--gin_file=gin/mnist1d/quick.gin',
                 '--gin_file=gin/lm/tiny_random.gin', f'--grid={grid}',
                 f'--root={tmp_path / "sweep"}', cwd=tmp_path)
    assert out.returncode != 0 and words in out.stderr, out.stderr
    assert not (tmp_path / 'sweep').exists()


def test_a_two_by_two_sweep_runs_resumes_and_tables(tmp_path):
    seeds = tmp_path / 'my_seeds'
    seeds.mkdir()
    shutil.copy(os.path.join(gin_utils.REPO_ROOT, 'seeds', 'mnist1d', 'mlp.py'),
                seeds)
    root = tmp_path / 'sweep'
    args = ['--gin_file=gin/mnist1d/quick.gin',
            '--gin_file=gin/lm/tiny_random.gin',
            # One seed, one round of two children, 16 training steps each.
            f"--gin_bindings=mnist1d.Mnist1dTask.seeds_dir = '{seeds}'",
            '--gin_bindings=ROUNDS = 1', '--gin_bindings=PROMPTS = 1',
            '--gin_bindings=SAMPLES = 2',
            '--gin_bindings=mnist1d.TrainConfig.num_steps = 16',
            '--gin_bindings=mnist1d.TrainConfig.eval_every = 8',
            '--grid=search.SearchConfig.alpha=[0.9, 0.95]',
            '--grid=SEARCH_SEED=[0, 1]', f'--root={root}', '--parallel=2']
    dry = _sweep(*args, '--dry_run', cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert len(dry.stdout.splitlines()) == 4 and not root.exists()

    out = _sweep(*args, '--report', cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    names = ['alpha_0.9-SEARCH_SEED_0', 'alpha_0.9-SEARCH_SEED_1',
             'alpha_0.95-SEARCH_SEED_0', 'alpha_0.95-SEARCH_SEED_1']
    for name in names:
        assert store.is_finished(str(root / name)), name
        log = store.read_candidates(str(root / name))
        assert len(log) == 3  # The seed and two children, each once.
    table = (root / sweep.TABLE_FILE).read_text()
    rows = [l for l in table.splitlines() if l.startswith('| alpha_')]
    assert [r.split(' | ')[0][2:] for r in rows] == names
    assert all(' | 1/1 | ' in r and ' min |' in r for r in rows)
    assert '| 0.95 | 1 |' in rows[3]
    assert (root / 'report' / 'report.md').exists()

    # Again: every run is finished and skipped; one whose record is lost
    # is started again, and the search it finds is complete.
    os.remove(root / names[0] / sweep.RUN_FILE)
    again = _sweep(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count('finished, skipped') == 3
    assert f'{names[0]}: done' in again.stdout
    assert len(store.read_candidates(str(root / names[0]))) == 3

    # An edited gin file is not the finished run: each is started again,
    # and evoprompting.main refuses the workdirs of other settings; the
    # refused attempts leave the runs' wall times as they were.
    walls = [json.loads((root / n / sweep.RUN_FILE).read_text())['wall_s']
             for n in names]
    edited = tmp_path / 'edited.gin'
    edited.write_text("include 'gin/mnist1d/quick.gin'\n"
                      'mnist1d.TrainConfig.learning_rate = 0.5\n')
    changed = _sweep(f'--gin_file={edited}', *args[1:], cwd=tmp_path)
    assert changed.returncode != 0
    assert 'finished, skipped' not in changed.stdout
    assert changed.stdout.count('FAILED') == 4
    assert walls == [json.loads((root / n / sweep.RUN_FILE).read_text())['wall_s']
                     for n in names]


def _running_mains(root) -> list[int]:
    """Pids of evoprompting.main processes with a workdir under `root`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                argv = f.read().decode(errors='replace').split('\0')
        except OSError:
            continue
        if 'evoprompting.main' in argv and any(
                a.startswith(f'--workdir={root}') for a in argv):
            pids.append(int(pid))
    return pids


def test_sigterm_stops_the_sweep_and_its_runs(tmp_path):
    root = tmp_path / 'sweep'
    process = subprocess.Popen(
        [sys.executable, '-m', 'launch.sweep', '--gin_file=gin/mnist1d/quick.gin',
         '--gin_file=gin/lm/tiny_random.gin', '--grid=SEARCH_SEED=[0, 1, 2]',
         f'--root={root}'], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _running_mains(root):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode != 0 and 'Stopped (SIGTERM)' in err, err
    assert 'SEARCH_SEED_1' not in out  # No run started after the signal.
    assert not _running_mains(root)


def test_children_pass_a_stop_on_and_start_nothing_after_it(tmp_path):
    children = sweep.Children()
    codes = []
    with open(tmp_path / 'log', 'w') as log:
        thread = threading.Thread(target=lambda: codes.append(children.run(
            [sys.executable, '-c', 'import time; time.sleep(60)'], log)))
        thread.start()
        while not children._running:  # pylint: disable=protected-access
            time.sleep(0.01)
        children.stop(signal.SIGTERM)
        thread.join(timeout=10)
        assert codes == [-signal.SIGTERM]
        assert children.run([sys.executable, '-c', 'pass'], log) == sweep.STOPPED


def test_tpu_vm_sweeps_hand_each_run_to_launch_tpu_vm(tmp_path):
    root = tmp_path / 'sweep'
    out = _sweep('--gin_file=gin/mnist1d/quick.gin',
                 '--gin_file=gin/devices/tpu.gin', '--grid=SEARCH_SEED=[0, 1, 2]',
                 f'--root={root}', '--parallel=2', '--tpu_vm=evo',
                 '--zone=us-central2-b', '--bucket=gs://bkt/sweep',
                 '--tpu_vm_flag=--accelerator_type=v4-32', '--dry_run',
                 cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [shlex.split(line) for line in out.stdout.splitlines()]
    actions = [(line[3], line[4]) for line in lines]
    assert actions == [('run', '--name=evo'), ('copy', '--bucket=gs://bkt/sweep'),
                       ('run', '--name=evo-1'), ('copy', '--bucket=gs://bkt/sweep'),
                       ('run', '--name=evo'), ('copy', '--bucket=gs://bkt/sweep'),
                       ('delete', '--name=evo'), ('delete', '--name=evo-1')]
    assert '--gin_bindings=SEARCH_SEED = 1' in lines[2]
    assert '--keep' in lines[0] and '--accelerator_type=v4-32' in lines[0]
    assert lines[1][-1] == f'--to={root / "SEARCH_SEED_0"}'
    assert not root.exists()
    # Every command is one launch.tpu_vm accepts: its own dry run prints it.
    for line in lines:
        check = subprocess.run([*line, '--dry_run'], cwd=gin_utils.REPO_ROOT,
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, (line, check.stderr[-2000:])
    missing = _sweep('--gin_file=gin/mnist1d/quick.gin', '--grid=X=[1]',
                     f'--root={root}', '--tpu_vm=evo', cwd=tmp_path)
    assert missing.returncode != 0
    assert '--tpu_vm needs --zone and --bucket' in missing.stderr
