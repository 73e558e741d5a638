"""Every shipped gin file parses and builds the objects it promises."""

import glob
import os
import subprocess
import sys

import gin
import pytest

from clrs_tasks import data as clrs_data
from clrs_tasks import task as clrs_task
from evoprompting import gin_utils
from evoprompting.sandbox import pool
from evoprompting.tasks import mnist1d

GIN_DIR = os.path.join(gin_utils.REPO_ROOT, 'gin')
# Run files: the task they build, its (num_steps, learning_rate, batch_size).
RUN_FILES = {
    'gin/mnist1d/base.gin': (mnist1d.Mnist1dTask, (8000, 0.01, 128)),
    'gin/mnist1d/paper.gin': (mnist1d.Mnist1dTask, (8000, 0.01, 128)),
    'gin/mnist1d/quick.gin': (mnist1d.Mnist1dTask, (1000, 0.01, 128)),
    'gin/clrs/base.gin': (clrs_task.ClrsTask, (2000, 0.001, 32)),
    'gin/clrs/paper.gin': (clrs_task.ClrsTask, (2000, 0.001, 32)),
    'gin/clrs/quick.gin': (clrs_task.ClrsTask, (100, 0.001, 16)),
}
PROBE = '''
from __gin__ import dynamic_registration
import gin_configs_test
gin_configs_test.probe:
  task = %TASK
  limits = %SANDBOX_LIMITS
  worker_config = %WORKER_CONFIG
  workers = %SANDBOX_WORKERS
'''


def probe(*, task, limits, worker_config, workers):
    return task, limits, worker_config, workers


# Method files, layered after a run file: the method label they set.
METHOD_FILES = {'gin/search/evoprompting.gin': 'evoprompting',
                'gin/search/no_prompt_tuning.gin': 'no_prompt_tuning',
                'gin/search/random_parents.gin': 'random_parents',
                'gin/search/naive_few_shot.gin': 'naive_few_shot',
                'gin/search/regularized_evolution.gin': 'regularized_evolution',
                'gin/search/random_search.gin': 'random_search'}
# gin/devices/*.gin: tests/devices_test.py builds a plan from each.
OTHER_FILES = {'gin/devices/cpu.gin', 'gin/devices/gpu.gin',
               'gin/devices/gpu_shared.gin', 'gin/devices/tpu.gin',
               'gin/lm/tiny_random.gin', 'gin/lm/default.gin', 'gin/lm/hf.gin',
               'gin/mnist1d/standard_data.gin'}
# One file per CLRS-30 algorithm, layered after a CLRS budget file.
ALGORITHM_FILES = {f'gin/clrs/algorithms/{a}.gin': a
                   for a in sorted(clrs_data.algorithms())}
ALGORITHM_FILE = """\
# CLRS-30: train and search on {a}. Layer it after a CLRS budget file:
#   --gin_file=gin/clrs/quick.gin --gin_file=gin/clrs/algorithms/{a}.gin
# (the same as --gin_bindings="ALGORITHM='{a}'").
#
# Provides: ALGORITHM. Requires: a file that includes gin/clrs/base.gin first.
ALGORITHM = '{a}'
"""
# lm.pretrain runs: (num_steps, model embed_dim).
PRETRAIN_FILES = {'gin/lm/pretrain_default.gin': (700, 128),
                  'gin/lm/pretrain_wide.gin': (1600, 128),
                  'gin/lm/pretrain_tiny.gin': (6, 32)}


def test_every_gin_file_is_covered():
    shipped = {os.path.relpath(p, gin_utils.REPO_ROOT)
               for p in glob.glob(os.path.join(GIN_DIR, '**', '*.gin'),
                                  recursive=True)}
    assert shipped == (set(RUN_FILES) | set(METHOD_FILES) | OTHER_FILES
                       | set(PRETRAIN_FILES) | set(ALGORITHM_FILES))


@pytest.mark.parametrize('path', sorted(PRETRAIN_FILES))
def test_pretrain_files_bind_the_whole_run(path):
    from lm import model, pretrain  # pylint: disable=g-import-not-at-top
    gin_utils.parse([path], [])
    bound = {name: gin.query_parameter(f'lm.pretrain.train.{name}')
             for name in ('data', 'model', 'num_steps')}
    assert bound['num_steps'] == PRETRAIN_FILES[path][0]
    config = bound['model'].scoped_configurable_fn()
    assert isinstance(config, model.TransformerConfig)
    assert config.embed_dim == PRETRAIN_FILES[path][1]
    data = bound['data'].scoped_configurable_fn()
    assert isinstance(data, pretrain.DataConfig) and data.seq_len <= config.max_len


@pytest.mark.parametrize('path', sorted(RUN_FILES))
def test_budget_macros_are_consistent(path):
    gin_utils.parse([path], [])
    macro = lambda name: gin.query_parameter(f'{name}/macro.value')
    assert macro('TOTAL_PROMPTS') == macro('ROUNDS') * macro('PROMPTS')
    assert macro('CHILDREN_PER_ROUND') == macro('PROMPTS') * macro('SAMPLES')
    assert macro('TOURNAMENT_SIZE') == max(1, macro('CHILDREN_PER_ROUND') // 4)


@pytest.mark.parametrize('path', sorted(METHOD_FILES))
def test_method_files_set_their_method(path):
    gin_utils.parse(['gin/mnist1d/quick.gin', path], [])
    assert gin.query_parameter('METHOD/macro.value') == METHOD_FILES[path]


@pytest.mark.parametrize('path', sorted(RUN_FILES))
def test_run_files_build_task_and_sandbox(path):
    gin_utils.parse([path], [], entry_config=PROBE)
    task, limits, worker_config, workers = gin.get_configurable(probe)()
    task_cls, budget = RUN_FILES[path]
    assert isinstance(task, task_cls)
    assert (task.train.num_steps, task.train.learning_rate,
            task.train.batch_size) == budget
    assert isinstance(limits, pool.Limits)
    assert isinstance(worker_config, pool.WorkerConfig)
    assert [w.description for w in workers] == ['cpu, 1 host device']
    # The main binary's entry point is fully bound.
    for name in ('task', 'proposer', 'sandbox', 'config'):
        assert gin.query_parameter(f'search.run.{name}') is not None


def test_macros_the_user_sets_must_be_read(tmp_path):
    quick = ['gin/mnist1d/quick.gin']
    gin_utils.parse(quick, ['ROUNDS = 2', 'mnist1d.TrainConfig.num_steps = 8'])
    with pytest.raises(gin_utils.GinConfigError, match='ROUNDZ.*ROUNDS'):
        gin_utils.parse(quick, ['ROUNDZ = 2'])
    # A macro of the project that this method does not read, set by the user.
    with pytest.raises(gin_utils.GinConfigError, match='TOURNAMENT_SIZE'):
        gin_utils.parse(quick, ['TOURNAMENT_SIZE = 2'])
    gin_utils.parse([*quick, 'gin/search/regularized_evolution.gin'],
                    ['TOURNAMENT_SIZE = 2'])
    # A user's own gin file: its macros must be read too.
    mine = tmp_path / 'mine.gin'
    mine.write_text("STEPS = 8\nmnist1d.TrainConfig.num_steps = %STEPS\n"
                    "mnist1d.TrainConfig:\n  eval_every = 8\n")
    gin_utils.parse([*quick, str(mine)], [])
    mine.write_text("STEPZ = 8\n")
    with pytest.raises(gin_utils.GinConfigError, match='STEPZ'):
        gin_utils.parse([*quick, str(mine)], [])


def test_mnist1d_data_is_private_unless_the_published_set_is_asked_for():
    gin_utils.parse(['gin/mnist1d/quick.gin'], [], entry_config=PROBE)
    assert gin.get_configurable(probe)()[0].data.generator_seed is None
    gin_utils.parse(['gin/mnist1d/quick.gin', 'gin/mnist1d/standard_data.gin'],
                    [], entry_config=PROBE)
    assert gin.get_configurable(probe)()[0].data.generator_seed == 42


@pytest.mark.parametrize('path, algorithm', [
    ('gin/clrs/base.gin', 'bfs'), ('gin/clrs/quick.gin', 'bfs'),
    ('gin/clrs/paper.gin', 'articulation_points')])
def test_clrs_files_train_one_algorithm_set_by_a_binding(path, algorithm):
    gin_utils.parse([path], [], entry_config=PROBE)
    assert gin.get_configurable(probe)()[0].data.algorithm == algorithm
    gin_utils.parse([path], ["ALGORITHM = 'graham_scan'"], entry_config=PROBE)
    task = gin.get_configurable(probe)()[0]
    assert task.data.algorithm == 'graham_scan'
    assert task.train.hidden_dim == (32 if 'quick' in path else 128)


def test_every_clrs_algorithm_has_a_file_that_selects_it():
    assert len(ALGORITHM_FILES) == 30
    for path, algorithm in ALGORITHM_FILES.items():
        with open(os.path.join(gin_utils.REPO_ROOT, path),
                  encoding='utf-8') as f:
            assert f.read() == ALGORITHM_FILE.format(a=algorithm), path
    for budget in ('gin/clrs/quick.gin', 'gin/clrs/paper.gin'):
        gin_utils.parse([budget, 'gin/clrs/algorithms/dijkstra.gin'], [],
                        entry_config=PROBE)
        assert gin.get_configurable(probe)()[0].data.algorithm == 'dijkstra'


def test_bindings_override_files():
    gin_utils.parse(['gin/mnist1d/quick.gin'],
                    ['mnist1d.TrainConfig.num_steps = 300',
                     'mnist1d.TrainConfig.eval_every = 100'],
                    entry_config=PROBE)
    task = gin.get_configurable(probe)()[0]
    assert task.train.num_steps == 300


@pytest.mark.parametrize('files, bindings, words', [
    (['gin/mnist1d/nope.gin'], [], 'gin file not found'),
    (['gin/mnist1d/quick.gin'], ['mnist1d.TrainConfig.bogus = 1'], 'bogus'),
    (['gin/mnist1d/quick.gin'], ['this is not gin'], 'bad gin configuration'),
    (['gin/mnist1d/quick.gin'], ['nothere.Thing.x = 1'], 'nothere'),
])
def test_bad_configuration_is_a_clear_error(files, bindings, words):
    with pytest.raises(gin_utils.GinConfigError, match=words):
        gin_utils.parse(files, bindings)


def test_a_missing_extra_says_how_to_install_it():
    # As after the README's default install: jraph is not there.
    code = ("import sys; sys.modules['jraph'] = None\n"
            'from evoprompting import gin_utils\n'
            "gin_utils.parse(['gin/clrs/quick.gin'], [])\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, cwd=gin_utils.REPO_ROOT, timeout=300,
                         check=False)
    assert out.returncode != 0
    assert "pip install -e '.[clrs]'" in out.stderr, out.stderr[-2000:]
