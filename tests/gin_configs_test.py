"""Every shipped gin file parses and builds the objects it promises."""

import glob
import os

import gin
import pytest

from evoprompting import gin_utils
from evoprompting.sandbox import pool
from evoprompting.tasks import mnist1d

GIN_DIR = os.path.join(gin_utils.REPO_ROOT, 'gin')
RUN_FILES = {'gin/mnist1d/base.gin': 8000, 'gin/mnist1d/paper.gin': 8000,
             'gin/mnist1d/quick.gin': 1000}
PROBE = '''
from __gin__ import dynamic_registration
import gin_configs_test
gin_configs_test.probe:
  task = %TASK
  limits = %SANDBOX_LIMITS
  worker_config = %WORKER_CONFIG
  num_workers = %NUM_WORKERS
'''


def probe(*, task, limits, worker_config, num_workers):
    return task, limits, worker_config, num_workers


# Method files, layered after a run file: the method label they set.
METHOD_FILES = {'gin/search/evoprompting.gin': 'evoprompting',
                'gin/search/no_prompt_tuning.gin': 'no_prompt_tuning',
                'gin/search/random_parents.gin': 'random_parents',
                'gin/search/naive_few_shot.gin': 'naive_few_shot',
                'gin/search/regularized_evolution.gin': 'regularized_evolution',
                'gin/search/random_search.gin': 'random_search'}
OTHER_FILES = {'gin/devices/cpu.gin', 'gin/lm/tiny_random.gin'}


def test_every_gin_file_is_covered():
    shipped = {os.path.relpath(p, gin_utils.REPO_ROOT)
               for p in glob.glob(os.path.join(GIN_DIR, '**', '*.gin'),
                                  recursive=True)}
    assert shipped == set(RUN_FILES) | set(METHOD_FILES) | OTHER_FILES


@pytest.mark.parametrize('path', sorted(RUN_FILES))
def test_budget_macros_are_consistent(path):
    gin_utils.parse([path], [])
    macro = lambda name: gin.query_parameter(f'{name}/macro.value')
    assert macro('TOTAL_PROMPTS') == macro('ROUNDS') * macro('PROMPTS')
    assert macro('CHILDREN_PER_ROUND') == macro('PROMPTS') * macro('SAMPLES')


@pytest.mark.parametrize('path', sorted(METHOD_FILES))
def test_method_files_set_their_method(path):
    gin_utils.parse(['gin/mnist1d/quick.gin', path], [])
    assert gin.query_parameter('METHOD/macro.value') == METHOD_FILES[path]


@pytest.mark.parametrize('path', sorted(RUN_FILES))
def test_run_files_build_task_and_sandbox(path):
    gin_utils.parse([path], [], entry_config=PROBE)
    task, limits, worker_config, num_workers = gin.get_configurable(probe)()
    assert isinstance(task, mnist1d.Mnist1dTask)
    assert task.train.num_steps == RUN_FILES[path]
    assert task.train.learning_rate == 0.01 and task.train.batch_size == 128
    assert isinstance(limits, pool.Limits)
    assert isinstance(worker_config, pool.WorkerConfig)
    assert num_workers == 1
    # The main binary's entry point is fully bound.
    for name in ('task', 'proposer', 'sandbox', 'config'):
        assert gin.query_parameter(f'search.run.{name}') is not None


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
