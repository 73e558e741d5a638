r"""Evaluates one program in the sandbox and prints its EvalResult.

  python -m evoprompting.evaluate --task=mnist1d --program=PATH [--json] \
      [--seed=0] [--gin_file=...] [--gin_bindings='mnist1d.TrainConfig.num_steps=500']
  python -m evoprompting.evaluate --task=clrs --algorithm=bfs --program=PATH --json

The task's gin file (gin/<task>/base.gin) is applied first, then --gin_file,
--algorithm (CLRS only: binds ALGORITHM) and --gin_bindings. With --json the
last line of stdout is the EvalResult as one JSON object; its metrics hold the
task's objectives (MNIST-1D: val_accuracy, test_accuracy; CLRS: val_score,
test_score, the OOD score). The exit code is 0 for every result, whatever its status (a bad
program is a result); it is non-zero only for bad usage (missing program file,
unknown task, bad gin).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from evoprompting import evaluation, gin_utils

# Each task's base gin file provides TASK, SANDBOX_LIMITS and WORKER_CONFIG.
TASK_GIN_FILES = {'mnist1d': 'gin/mnist1d/base.gin',
                  'clrs': 'gin/clrs/base.gin'}

FLAGS = flags.FLAGS
flags.DEFINE_string('task', 'mnist1d',
                    f'Task to evaluate on: one of {sorted(TASK_GIN_FILES)}.')
flags.DEFINE_string('algorithm', None,
                    'CLRS-30 algorithm (--task=clrs only; default: base.gin\'s).')
flags.DEFINE_string('program', None, 'Path of the program source (.py).')
flags.DEFINE_integer('seed', 0, 'Training seed.')
flags.DEFINE_bool('json', False, 'Print the result as one JSON line at the end.')
flags.DEFINE_multi_string('gin_file', [], 'Extra gin files after the task file.')
flags.DEFINE_multi_string('gin_bindings', [], 'Gin bindings applied last.')
flags.mark_flag_as_required('program')

_ENTRY_CONFIG = '''
from __gin__ import dynamic_registration
from evoprompting import evaluation
evaluation.evaluate_program.task = %TASK
evaluation.evaluate_program.limits = %SANDBOX_LIMITS
evaluation.evaluate_program.worker_config = %WORKER_CONFIG
'''


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if FLAGS.task not in TASK_GIN_FILES:
        sys.exit(f'error: unknown task {FLAGS.task!r}; known tasks: '
                 f'{", ".join(sorted(TASK_GIN_FILES))}')
    algorithm_bindings = []
    if FLAGS.algorithm is not None:
        if FLAGS.task != 'clrs':
            sys.exit('error: --algorithm applies to --task=clrs only')
        from clrs_tasks import data  # pylint: disable=g-import-not-at-top
        if FLAGS.algorithm not in data.algorithms():
            sys.exit(f'error: unknown CLRS-30 algorithm {FLAGS.algorithm!r}; '
                     f'known: {", ".join(sorted(data.algorithms()))}')
        algorithm_bindings = [f'ALGORITHM = {FLAGS.algorithm!r}']
    if not os.path.isfile(FLAGS.program):
        sys.exit(f'error: program file not found: {FLAGS.program}')
    with open(FLAGS.program, encoding='utf-8', errors='surrogateescape') as f:
        source = f.read()
    try:
        gin_utils.parse([TASK_GIN_FILES[FLAGS.task], *FLAGS.gin_file],
                        [*algorithm_bindings, *FLAGS.gin_bindings],
                        entry_config=_ENTRY_CONFIG)
        result = gin_utils.call(evaluation.evaluate_program, source=source,
                                seed=FLAGS.seed)
    except gin_utils.GinConfigError as e:
        sys.exit(f'error: {e}')
    m = result.metrics
    print(f'status:   {result.status.value}')
    print(f'message:  {result.message}')
    print(f'params:   {result.params}')
    for key in sorted(m):
        print(f'{key + ":":<10}{m[key]}')
    print(f'compile_s: {result.compile_s:.2f}  train_s: {result.train_s:.2f}')
    if result.output:
        print('program output (capped):\n' + result.output)
    if FLAGS.json:
        print(json.dumps(result.to_json(), sort_keys=True))


if __name__ == '__main__':
    app.run(main)
