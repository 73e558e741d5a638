"""Smoke tests of the real entry points, run as subprocesses with tiny budgets."""

import fcntl
import json
import logging
import os
import re
import subprocess
import sys

import pytest

from evoprompting import gin_utils

TINY = ['--gin_bindings=mnist1d.TrainConfig.num_steps = 16',
        '--gin_bindings=mnist1d.TrainConfig.eval_every = 8']
SEED = os.path.join(gin_utils.REPO_ROOT, 'seeds', 'mnist1d', 'greydanus_cnn.py')


def run(module, *args, cwd=None):
    return subprocess.run([sys.executable, '-m', module, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_evaluate_prints_json_result(tmp_path):
    out = run('evoprompting.evaluate', '--task=mnist1d', f'--program={SEED}',
              '--json', *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['status'] == 'ok' and result['params'] == 5210
    assert {'val_accuracy', 'test_accuracy', 'best_step'} <= set(result['metrics'])
    for key in ('message', 'compile_s', 'train_s', 'source_sha256'):
        assert key in result
    assert 'status:   ok' in out.stdout


def test_evaluate_bad_program_is_a_result_not_a_failure(tmp_path):
    program = tmp_path / 'broken.py'
    program.write_text('class Model(nn.Module:\n')
    out = run('evoprompting.evaluate', f'--program={program}', '--json', *TINY)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['status'] == 'syntax_error' and 'line 1' in result['message']


@pytest.mark.parametrize('args, words', [
    (['--program=/no/such/file.py'], 'program file not found'),
    ([f'--program={SEED}', '--task=imagenet'], "unknown task 'imagenet'"),
    ([f'--program={SEED}', '--gin_bindings=mnist1d.TrainConfig.nope = 1'],
     'bad gin configuration'),
    ([f'--program={SEED}', '--gin_bindings=NUM_WORKRES = 2'],
     'did you mean NUM_WORKERS?'),
    ([], '--program'),
])
def test_evaluate_bad_usage_fails_clearly(args, words):
    out = run('evoprompting.evaluate', *args)
    assert out.returncode != 0
    assert words in out.stderr


# The tiny end-to-end search: 2 rounds of 2 x 2 children written by the
# embedded default LM, each trained 16 steps in the real sandbox.
SEARCH = ['--gin_file=gin/mnist1d/quick.gin', *TINY, '--gin_bindings=ROUNDS = 2',
          '--gin_bindings=PROMPTS = 2', '--gin_bindings=SAMPLES = 2',
          # 16 training steps reach ~25% validation accuracy: alpha admits that.
          '--gin_bindings=search.SearchConfig.alpha = 0.9']


def test_main_runs_a_search_and_records_it(tmp_path):
    workdir, copy = tmp_path / 'run', tmp_path / 'mirror'
    out = run('evoprompting.main', *SEARCH, f'--workdir={workdir}',
              f'--mirror_to={copy}', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # The mirror holds the finished run.
    for name in ('candidates.jsonl', 'state.json', 'config.gin',
                 'best_program.py'):
        assert (copy / name).read_bytes() == (workdir / name).read_bytes()
    config = (workdir / 'config.gin').read_text()
    assert 'num_steps = 16' in config and 'ROUNDS = 2' in config
    metadata = json.loads((workdir / 'run_metadata.json').read_text())
    assert metadata['packages']['jax'] and metadata['devices']
    # On CPU, the LM's process splits the host into one device per core.
    assert len(metadata['devices']) == len(os.sched_getaffinity(0))
    assert metadata['git_revision']
    # The device plan and the sandbox's isolation are on record and printed.
    assert [w['description'] for w in metadata['device_plan']['workers']] == [
        'cpu, 1 host device']
    assert metadata['isolation']['level'] in ('os', 'process')
    assert f"Sandbox isolation: {metadata['isolation']['level']}" in out.stdout
    if os.environ.get('CI') == 'true':
        assert metadata['isolation']['level'] == 'os'
    log = [json.loads(l) for l in
           (workdir / 'candidates.jsonl').read_text().splitlines()]
    assert sorted(c['round'] for c in log) == [-1] * 4 + [0] * 4 + [1] * 4
    assert all(c['result']['status'] == 'ok' for c in log[:4])
    # The default LM writes mostly valid children.
    assert any(c['result']['status'] == 'ok' for c in log[4:]), log[4:]
    assert json.loads((workdir / 'state.json').read_text()) == {
        'completed_rounds': 2}
    assert os.listdir(workdir / 'tensorboard')
    assert 'Seeds done' in out.stderr and 'Round 1 done' in out.stderr
    # Each LM step is said when it starts, then with its time and the ETA.
    assert ('Round 0 (1 of 2): sampling 4 children of up to 384 tokens from '
            '2 prompts with the LM...') in out.stderr
    assert re.search(r'Round 1: 4 proposals sampled in [\d.]+ s \([\d.]+ s '
                     r'each\), saved; ETA \d', out.stderr), out.stderr
    # It ends with the best program overall and what to run next.
    assert 'Best program overall: candidate ' in out.stdout
    best = (workdir / 'best_program.py').read_text()
    assert best in {c['source'] for c in log}
    assert f'python -m evoprompting.report --workdir={workdir}' in out.stdout
    assert f'tensorboard --logdir={workdir / "tensorboard"}' in out.stdout

    # Another configuration on the same workdir is refused, unless allowed.
    more = [*SEARCH, '--gin_bindings=ROUNDS = 3', f'--workdir={workdir}']
    out = run('evoprompting.main', *more, cwd=tmp_path)
    assert out.returncode != 0 and 'another configuration' in out.stderr
    out = run('evoprompting.main', *more, '--allow_config_change', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len((workdir / 'candidates.jsonl').read_text().splitlines()) == 16
    assert (workdir / 'config.previous.gin').exists()
    # The resume says what it resumes and is on record after the first start.
    assert 'Resuming ' in out.stderr and '12 candidates recorded' in out.stderr
    # With the ETA of the rest, from the rounds' recorded timings.
    assert re.search(r'12 candidates recorded, 2 of 3 rounds complete; ETA \d',
                     out.stderr), out.stderr
    assert 'All 4 seed programs of mnist1d are recorded' in out.stderr
    resumed = json.loads((workdir / 'run_metadata.json').read_text())
    assert resumed['started'] == metadata['started']
    assert len(resumed['resumed']) == 1 and resumed['resumed'][0] > metadata['started']


@pytest.mark.parametrize('args, words', [
    (['--gin_file=gin/mnist1d/missing.gin'], 'gin file not found'),
    (['--gin_file=gin/mnist1d/quick.gin', '--gin_bindings=oops'],
     'bad gin configuration'),
    (['--gin_file=gin/mnist1d/quick.gin'], '--workdir'),
    (['--gin_file=gin/mnist1d/quick.gin', '--cpu_devices=-1'],
     'not a non-negative integer'),
    (['--gin_file=gin/mnist1d/quick.gin', '--gin_bindings=ROUNDZ = 2'],
     'gin macro ROUNDZ is set but nothing in this configuration reads it; '
     'did you mean ROUNDS?'),
    (['--gin_file=gin/mnist1d/quick.gin', '--workdir=README.md'],
     'is not a folder'),
    (['--gin_file=gin/mnist1d/quick.gin', '--mirror_to=s3://b/run'],
     '--mirror_to: \'s3://b/run\': only gs:// URLs'),
])
def test_main_bad_usage_fails_clearly(tmp_path, args, words):
    if not any(a.startswith('--workdir') for a in args) and words != '--workdir':
        args = [*args, f'--workdir={tmp_path}']
    out = run('evoprompting.main', *args)
    assert out.returncode != 0
    assert words in out.stderr


def test_a_workdir_in_use_is_refused(tmp_path):
    """Two searches writing one store would corrupt it."""
    workdir = tmp_path / 'run'
    workdir.mkdir()
    with open(workdir / '.lock', 'w') as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        out = run('evoprompting.main', *SEARCH, f'--workdir={workdir}')
    assert out.returncode != 0
    assert f'another evoprompting.main is running on {workdir}' in out.stderr
    assert not (workdir / 'candidates.jsonl').exists()


def test_a_seeds_folder_in_the_working_folder_is_named_not_mistaken(tmp_path):
    """A user's own `seeds/` folder where they run the binary would hide the
    project's seeds package; the error says so."""
    (tmp_path / 'seeds').mkdir()
    out = run('evoprompting.main', '--gin_file=gin/mnist1d/quick.gin',
              f'--workdir={tmp_path / "run"}', cwd=tmp_path)
    assert out.returncode != 0
    assert (f"the project's `seeds` package is hidden by a folder named "
            f"seeds in {tmp_path / 'seeds'}") in out.stderr


def test_help_explains_flags():
    for module in ('evoprompting.main', 'evoprompting.evaluate'):
        out = run(module, '--help')  # absl exits 1 after printing help.
        assert '--gin_bindings' in out.stdout and '--gin_file' in out.stdout


def test_library_info_lines_are_quiet_unless_verbose():
    from evoprompting import logs  # pylint: disable=g-import-not-at-top

    def record(path, level):
        return logging.LogRecord('absl', level, path, 1, 'msg', (), None)

    orbax = '/site-packages/orbax/checkpoint/_src/checkpointer.py'
    assert not logs.quiet_library_info(record(orbax, logging.INFO))
    assert logs.quiet_library_info(record(orbax, logging.WARNING))
    assert not logs.quiet_library_info(
        record('/site-packages/jax/_src/xla_bridge.py', logging.INFO))
    assert logs.quiet_library_info(record('/repo/evoprompting/search.py',
                                          logging.INFO))
