"""Smoke tests of the real entry points, run as subprocesses with tiny budgets."""

import json
import os
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
    ([], '--program'),
])
def test_evaluate_bad_usage_fails_clearly(args, words):
    out = run('evoprompting.evaluate', *args)
    assert out.returncode != 0
    assert words in out.stderr


def test_main_evaluates_seeds_and_records_the_run(tmp_path):
    workdir = tmp_path / 'run'
    out = run('evoprompting.main', '--gin_file=gin/mnist1d/quick.gin',
              f'--workdir={workdir}', *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    config = (workdir / 'config.gin').read_text()
    assert 'num_steps = 16' in config
    metadata = json.loads((workdir / 'run_metadata.json').read_text())
    assert metadata['packages']['jax'] and metadata['devices']
    assert metadata['git_revision']
    rows = [json.loads(l) for l in
            (workdir / 'seed_results.jsonl').read_text().splitlines()]
    assert [r['name'] for r in rows] == ['greydanus_cnn', 'gru', 'mlp',
                                         'residual_cnn']
    assert all(r['status'] == 'ok' for r in rows), rows
    for name in ('greydanus_cnn', 'gru', 'mlp', 'residual_cnn'):
        assert name in out.stdout


@pytest.mark.parametrize('args, words', [
    (['--gin_file=gin/mnist1d/missing.gin'], 'gin file not found'),
    (['--gin_file=gin/mnist1d/quick.gin', '--gin_bindings=oops'],
     'bad gin configuration'),
    (['--gin_file=gin/mnist1d/quick.gin'], '--workdir'),
])
def test_main_bad_usage_fails_clearly(tmp_path, args, words):
    if words != '--workdir':
        args = [*args, f'--workdir={tmp_path}']
    out = run('evoprompting.main', *args)
    assert out.returncode != 0
    assert words in out.stderr


def test_help_explains_flags():
    for module in ('evoprompting.main', 'evoprompting.evaluate'):
        out = run(module, '--help')  # absl exits 1 after printing help.
        assert '--gin_bindings' in out.stdout and '--gin_file' in out.stdout
