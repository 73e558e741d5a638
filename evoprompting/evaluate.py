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
unknown task, bad gin, including configured values the task refuses).

Whatever the program printed or raised, the output is safe on a terminal and
the JSON line comes last: the human-readable lines show control, format and
other unprintable characters (ESC, \r, lone surrogates ...) as Python escapes
(program output keeps its newlines and tabs, each line behind '| '), stdout
falls back to backslash escapes where its encoding cannot show a character,
and the JSON line is ASCII (non-finite numbers become null). An unexpected
error in this binary after the usage checks (e.g. a sandbox worker that cannot
start) is reported as a `crash` result, its traceback on stderr.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import sys
import traceback
from typing import Any

from absl import app, flags
import gin

from evoprompting import gin_utils
from evoprompting.sandbox import evaluator
from evoprompting.tasks import base

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
from evoprompting.sandbox import evaluator
evaluator.evaluate_program.task = %TASK
evaluator.evaluate_program.limits = %SANDBOX_LIMITS
evaluator.evaluate_program.worker_config = %WORKER_CONFIG
evaluator.evaluate_program.workers = %SANDBOX_WORKERS
'''
_GIVEN = ('source', 'seed')  # evaluate_program's arguments from flags.


def printable(text: str, *, multiline: bool = False) -> str:
    r"""`text` safe to show on a terminal.

    Characters `str.isprintable` refuses (control and format characters such
    as ESC, \r and the bidi overrides, lone surrogates, line separators ...)
    become their Python escapes (`\x1b`, `\r`, `\udcff`); with `multiline`,
    newlines and tabs stay.
    """
    keep = '\n\t' if multiline else ''
    return ''.join(c if c.isprintable() or c in keep else ascii(c)[1:-1]
                   for c in text)


def json_line(result: base.EvalResult) -> str:
    """`result` as one line of ASCII, strict JSON (non-finite numbers: null)."""
    d = result.to_json()
    try:
        return json.dumps(d, sort_keys=True, allow_nan=False)
    except ValueError:  # NaN or inf somewhere: not JSON.
        return json.dumps(_finite_or_none(d), sort_keys=True, allow_nan=False)


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _escape_undisplayable_output() -> None:
    """Characters stdout/stderr cannot encode print as backslash escapes
    (e.g. LC_ALL=C or PYTHONIOENCODING=ascii) instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors='backslashreplace')


def _configured_arguments(algorithm_bindings: list[str]) -> dict[str, Any]:
    """Parses gin and builds evaluate_program's configured arguments (the
    task, the sandbox limits and worker configuration); exits on bad gin."""
    try:
        gin_utils.parse([TASK_GIN_FILES[FLAGS.task], *FLAGS.gin_file],
                        [*algorithm_bindings, *FLAGS.gin_bindings],
                        entry_config=_ENTRY_CONFIG)
    except gin_utils.GinConfigError as e:
        sys.exit(f'error: {e}')
    try:
        # Builds the configured objects, so values they refuse (e.g. a
        # TrainConfig with num_steps = 0) are usage errors too.
        kwargs = gin.get_bindings(evaluator.evaluate_program)
    except Exception as e:  # pylint: disable=broad-except
        sys.exit(f'error: bad gin configuration: {type(e).__name__}: {e}')
    parameters = inspect.signature(evaluator.evaluate_program).parameters
    missing = [name for name, p in parameters.items() if name not in _GIVEN
               and any(kwargs.get(name, p.default) is unset
                       for unset in (p.empty, gin.REQUIRED))]
    if missing:
        sys.exit('error: bad gin configuration: no value for ' + ', '.join(
            f'evaluator.evaluate_program.{name}' for name in missing))
    return kwargs


def _crash(source: str, what: str, e: BaseException) -> base.EvalResult:
    """A `crash` result for an error of this binary; traceback on stderr."""
    try:
        detail = f'{type(e).__name__}: {base.first_line(e)}'
    except Exception:  # pylint: disable=broad-except
        detail = type(e).__name__
    try:
        trace = ''.join(traceback.format_exception(e))
    except Exception:  # pylint: disable=broad-except
        trace = detail
    print(printable(trace, multiline=True), file=sys.stderr, flush=True)
    return base.EvalResult(base.Status.CRASH, f'{what}: {detail}',
                           base.source_sha256(source))


def _print_human(result: base.EvalResult) -> None:
    m = result.metrics
    print(f'status:   {printable(str(result.status.value))}')
    print(f'message:  {printable(str(result.message))}')
    print(f'params:   {result.params}')
    for key in sorted(m):
        print(printable(f'{key + ":":<10}{m[key]}'))
    print(f'compile_s: {result.compile_s:.2f}  train_s: {result.train_s:.2f}')
    if result.output:
        # Each line behind '| ': nothing the program prints reads as JSON.
        lines = printable(result.output.removesuffix('\n'),
                          multiline=True).split('\n')
        print('program output (capped):\n'
              + '\n'.join('| ' + line for line in lines))


def report(result: base.EvalResult, source: str, as_json: bool) -> None:
    """Prints `result`; with `as_json`, its JSON line always comes last."""
    try:
        _print_human(result)
    except Exception as e:  # pylint: disable=broad-except
        # The result stands: only its display failed (the traceback says why).
        _crash(source, 'printing the result failed', e)
    if as_json:
        try:
            line = json_line(result)
        except Exception as e:  # pylint: disable=broad-except
            line = json_line(_crash(source, 'the result is not JSON', e))
        sys.stdout.flush()
        print(line, flush=True)


def main(argv):
    _escape_undisplayable_output()
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
    try:
        with open(FLAGS.program, encoding='utf-8',
                  errors='surrogateescape') as f:
            source = f.read()
    except OSError as e:
        sys.exit(f'error: cannot read the program file {FLAGS.program}: '
                 f'{e.strerror}')
    configured = _configured_arguments(algorithm_bindings)
    # From here on every outcome is a result, printed by `report`.
    try:
        result = evaluator.evaluate_program(**configured, source=source,
                                             seed=FLAGS.seed)
    except Exception as e:  # pylint: disable=broad-except
        result = _crash(source, 'the evaluation failed', e)
    report(result, source, FLAGS.json)


if __name__ == '__main__':
    app.run(main)
