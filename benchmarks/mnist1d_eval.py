r"""Evaluation throughput of the MNIST-1D seeds, and a PyTorch eager reference.

  python benchmarks/mnist1d_eval.py [--seeds=greydanus_cnn,residual_cnn,gru,mlp]
      [--budgets=quick,paper] [--repeats=1] [--torch_python=PATH|none]
      [--gin_bindings=...] [--json_out=PATH] [--baseline=COMMIT]

For every seed program and training budget, with `--repeats` repetitions:

  1. A fresh `Sandbox` evaluates the seed: the *cold* evaluation, which
     waits for its worker to start. It is split into worker start
     (`WorkerPool.startup_s`: importing JAX, loading the data), compile
     (`EvalResult.compile_s`) and train (`EvalResult.train_s`, which includes
     the validation and test scoring every `eval_every` steps).
  2. The same sandbox evaluates the same program again: the *warm*
     evaluation, on the slot's next worker (every program gets a fresh
     process, without a persistent compilation cache), which started while
     the first ran. Both must give identical metrics (the determinism
     contract); the table says if they do not.
  3. A plain PyTorch eager loop trains the same model (benchmarks/
     torch_reference.py, in a subprocess under `--torch_python`) on the same
     arrays and the same batches (handed over as an .npz), AdamW at the same
     learning rate and weight decay, scoring every `eval_every` steps inside
     the timed loop as the JAX loop does. torch runs with 2 intra-op threads.

Budgets: `quick` is gin/mnist1d/quick.gin (1,000 steps, eval every 100),
`paper` is gin/mnist1d/paper.gin (8,000 steps, eval every 200), an integer N is
gin/mnist1d/base.gin with num_steps=N. `--gin_bindings` apply after these.

Columns: `steps/s` is num_steps / train_s (median over runs; JAX counts the
cold and the warm run); `ratio` is JAX / torch. `compile %` is compile_s over
the evaluation's time in the worker (the Sandbox.evaluate wall time, less the
worker start). `evals/min` is 60 / wall time of Sandbox.evaluate: `fresh` for
the cold evaluation including the worker start, `warm` for the second.
The last line is one SUMMARY line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from evoprompting import gin_utils  # pylint: disable=g-import-not-at-top,wrong-import-position
from evoprompting.sandbox import evaluator  # pylint: disable=g-import-not-at-top,wrong-import-position
from evoprompting.tasks import mnist1d, training  # pylint: disable=g-import-not-at-top,wrong-import-position
import gin  # pylint: disable=g-import-not-at-top,wrong-import-position
import machine  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch_subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position

SEEDS = ('greydanus_cnn', 'residual_cnn', 'gru', 'mlp')
# Seeds benchmarks/torch_reference.py can express, by seed name.
TORCH_MODELS = frozenset(SEEDS)
# The published dataset, so the seeds' figures compare with published ones.
STANDARD_DATA = 'gin/mnist1d/standard_data.gin'
BUDGET_GIN_FILES = {'quick': 'gin/mnist1d/quick.gin',
                    'paper': 'gin/mnist1d/paper.gin'}
TORCH_SCRIPT = os.path.join(REPO_ROOT, 'benchmarks', 'torch_reference.py')
TARGET_RATIO = 2.0
TARGET_COMPILE_SHARE = 0.20

FLAGS = flags.FLAGS
flags.DEFINE_list('seeds', list(SEEDS),
                  f'Seed programs (seeds/mnist1d/NAME.py); any of {SEEDS}.')
flags.DEFINE_list('budgets', ['quick', 'paper'],
                  'Training budgets: quick (1,000 steps), paper (8,000 steps) '
                  'or an integer number of steps (base.gin, eval every 200).')
flags.DEFINE_integer('repeats', 1, 'Repetitions of every measurement.')
flags.DEFINE_integer('seed', 0, 'Training seed (JAX and torch).')
flags.DEFINE_string(
    'torch_python', '',
    "Interpreter that has torch, for the torch reference. '' uses this "
    "interpreter if it can import torch and otherwise skips torch; 'none' "
    'skips torch.')
flags.DEFINE_integer('torch_threads', 2, 'torch.set_num_threads for the '
                     'reference (the JAX worker uses the 2 cores).')
flags.DEFINE_multi_string('gin_bindings', [],
                          'Gin bindings applied after the budget gin file.')
flags.DEFINE_string('json_out', '', 'Also write every measurement here.')
flags.DEFINE_string('baseline', '', 'A commit to compare with: its own '
                    'benchmarks/mnist1d_eval.py runs on the same flags (no '
                    'torch) in a worktree of it, after this tree, and a table '
                    'puts the two side by side.')


@dataclasses.dataclass
class Row:
    """All measurements of one (seed, budget)."""

    seed_name: str
    budget: str
    num_steps: int = 0
    params: int | None = None
    torch_params: int | None = None
    start_s: list[float] = dataclasses.field(default_factory=list)
    cold_compile_s: list[float] = dataclasses.field(default_factory=list)
    warm_compile_s: list[float] = dataclasses.field(default_factory=list)
    train_s: list[float] = dataclasses.field(default_factory=list)
    jax_steps_per_s: list[float] = dataclasses.field(default_factory=list)
    cold_share: list[float] = dataclasses.field(default_factory=list)
    warm_share: list[float] = dataclasses.field(default_factory=list)
    cold_wall_s: list[float] = dataclasses.field(default_factory=list)
    warm_wall_s: list[float] = dataclasses.field(default_factory=list)
    val_accuracy: float | None = None
    deterministic: bool = True
    torch_steps_per_s: list[float] = dataclasses.field(default_factory=list)
    torch_val_accuracy: float | None = None
    errors: list[str] = dataclasses.field(default_factory=list)


def _median(values):
    return statistics.median(values) if values else None


def load_config(budget: str) -> tuple[Any, Any, Any]:
    """(task, limits, worker_config) from the budget's gin file and bindings."""
    if budget in BUDGET_GIN_FILES:
        files, bindings = [BUDGET_GIN_FILES[budget]], []
    elif budget.isdigit():
        files = ['gin/mnist1d/base.gin']
        bindings = [f'mnist1d.TrainConfig.num_steps={int(budget)}']
    else:
        raise app.UsageError(f'unknown budget {budget!r}: quick, paper or N')
    gin_utils.parse([*files, STANDARD_DATA], [*bindings, *FLAGS.gin_bindings])
    make = lambda name: gin.query_parameter(name).scoped_configurable_fn()
    return make('%TASK'), make('%SANDBOX_LIMITS'), make('%WORKER_CONFIG')


def find_torch_python() -> tuple[str, str]:
    """(interpreter, '') or ('', why torch is not available)."""
    return torch_subprocess.find_torch_python(FLAGS.torch_python)


def write_torch_data(task: Any, folder: str, seed: int) -> str:
    """The splits and the JAX loop's batch order as an .npz; returns its path."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    splits = mnist1d.load_splits(task.data)
    cfg = task.train
    order = training.batch_order(
        len(splits.train_x), cfg.batch_size, cfg.num_steps, seed)
    path = os.path.join(folder, f'mnist1d-{cfg.num_steps}-{seed}.npz')
    np.savez(path, train_x=splits.train_x, train_y=splits.train_y,
             val_x=splits.val_x, val_y=splits.val_y, test_x=splits.test_x,
             test_y=splits.test_y, order=order)
    return path


def run_torch(python: str, data: str, model: str, task: Any,
              seed: int) -> dict[str, Any]:
    cfg = task.train
    return torch_subprocess.run_json(python, TORCH_SCRIPT, [
        f'--data={data}', f'--model={model}', f'--eval_every={cfg.eval_every}',
        f'--learning_rate={cfg.learning_rate}',
        f'--weight_decay={cfg.weight_decay}',
        f'--threads={FLAGS.torch_threads}', f'--seed={seed}'])


def run_jax(task: Any, limits: Any, worker_config: Any, source: str,
            seed: int, row: Row) -> None:
    """One cold (waits for its worker) and one warm (pre-started worker)
    evaluation."""
    with evaluator.Sandbox(task, limits=limits, config=worker_config) as sandbox:
        results, walls = [], []
        for _ in range(2):
            t0 = time.perf_counter()
            results.append(sandbox.evaluate([source], [seed])[0])
            walls.append(time.perf_counter() - t0)
        start = sandbox.pool.startup_s[0]
    cold, warm = results
    for r in results:
        if not r.ok:
            row.errors.append(f'{r.status.value}: {r.message}')
            return
    row.params = cold.params
    row.num_steps = task.train.num_steps
    row.start_s.append(start)
    row.cold_compile_s.append(cold.compile_s)
    row.warm_compile_s.append(warm.compile_s)
    for r in results:
        row.train_s.append(r.train_s)
        row.jax_steps_per_s.append(task.train.num_steps / r.train_s)
    row.cold_share.append(cold.compile_s / (walls[0] - start))
    row.warm_share.append(warm.compile_s / walls[1])
    row.cold_wall_s.append(walls[0])
    row.warm_wall_s.append(walls[1])
    row.val_accuracy = cold.metrics['val_accuracy']
    if dict(cold.metrics) != dict(warm.metrics):
        row.deterministic = False
        row.errors.append(f'metrics differ: {dict(cold.metrics)} vs '
                          f'{dict(warm.metrics)}')


def _fmt(value, spec: str, missing: str = '-') -> str:
    return missing if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    header = ('| seed | steps | params jax / torch | start s | compile s cold / '
              'warm | train s | compile % cold / warm | evals/min fresh / warm '
              '| jax steps/s | torch steps/s | jax/torch | val acc jax / torch |')
    lines = [header, '|' + '---|' * header.count(' | ') + '---|']
    for r in rows:
        ratio = (_median(r.jax_steps_per_s) / _median(r.torch_steps_per_s)
                 if r.jax_steps_per_s and r.torch_steps_per_s else None)
        lines.append(
            f'| {r.seed_name} | {r.num_steps or r.budget} | '
            f'{_fmt(r.params, ",")} / {_fmt(r.torch_params, ",")} | '
            f'{_fmt(_median(r.start_s), ".2f")} | '
            f'{_fmt(_median(r.cold_compile_s), ".2f")} / '
            f'{_fmt(_median(r.warm_compile_s), ".2f")} | '
            f'{_fmt(_median(r.train_s), ".2f")} | '
            f'{_fmt(_median(r.cold_share), ".0%")} / '
            f'{_fmt(_median(r.warm_share), ".0%")} | '
            f'{_fmt(60 / _median(r.cold_wall_s) if r.cold_wall_s else None, ".1f")} / '
            f'{_fmt(60 / _median(r.warm_wall_s) if r.warm_wall_s else None, ".1f")} | '
            f'{_fmt(_median(r.jax_steps_per_s), ".0f")} | '
            f'{_fmt(_median(r.torch_steps_per_s), ".0f")} | '
            f'{_fmt(ratio, ".2f")}x | '
            f'{_fmt(r.val_accuracy, ".3f")} / {_fmt(r.torch_val_accuracy, ".3f")} |')
    return '\n'.join(lines)


def summary(rows: list[Row], torch_note: str) -> str:
    parts = []
    ratios = [(_median(r.jax_steps_per_s) / _median(r.torch_steps_per_s),
               f'{r.seed_name} @{r.num_steps}')
              for r in rows if r.jax_steps_per_s and r.torch_steps_per_s]
    if ratios:
        low, where = min(ratios)
        parts.append(f'min jax/torch steps/s ratio {low:.2f}x ({where}; target '
                     f'>= {TARGET_RATIO:g}x {"met" if low >= TARGET_RATIO else "NOT met"})')
    else:
        parts.append(f'no torch comparison ({torch_note})')
    paper = [r for r in rows if r.num_steps == 8000 and r.cold_share]
    for kind, what in (('cold', 'first evaluation'),
                       ('warm', 'second, on a pre-started worker')):
        shares = [(_median(getattr(r, f'{kind}_share')), r.seed_name)
                  for r in paper]
        if shares:
            high, where = max(shares)
            parts.append(
                f'max compile share at paper budget, {what} {high:.0%} '
                f'({where}; target <= {TARGET_COMPILE_SHARE:.0%} '
                f'{"met" if high <= TARGET_COMPILE_SHARE else "NOT met"})')
    all_walls = [w for r in rows for w in r.warm_wall_s]
    if all_walls:
        parts.append(f'evaluations/min (second evaluations) '
                     f'{60 * len(all_walls) / sum(all_walls):.1f} over all rows')
    errors = sum(len(r.errors) for r in rows)
    if errors:
        parts.append(f'{errors} errors (see above)')
    if not all(r.deterministic for r in rows):
        parts.append('NONDETERMINISTIC metrics')
    return 'SUMMARY: ' + '; '.join(parts)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    unknown = sorted(set(FLAGS.seeds) - set(SEEDS))
    if unknown:
        raise app.UsageError(f'unknown seeds {unknown}; known: {SEEDS}')
    torch_python, torch_note = find_torch_python()
    if not torch_python:
        log(f'torch not available: {torch_note}')
    import jax  # pylint: disable=g-import-not-at-top
    log(f'jax {jax.__version__}, {machine.describe()}; '
        f'torch: {torch_python or torch_note}')

    rows = []
    folder = tempfile.mkdtemp(prefix='mnist1d-eval-')
    try:
        for budget in FLAGS.budgets:
            task, limits, worker_config = load_config(budget)
            log(f'budget {budget}: {task.train}')
            data = (write_torch_data(task, folder, FLAGS.seed)
                    if torch_python else '')
            for name in FLAGS.seeds:
                with open(os.path.join(REPO_ROOT, 'seeds', 'mnist1d',
                                       f'{name}.py'), encoding='utf-8') as f:
                    source = f.read()
                row = Row(name, budget)
                for rep in range(FLAGS.repeats):
                    run_jax(task, limits, worker_config, source, FLAGS.seed, row)
                    if torch_python and name in TORCH_MODELS:
                        t = run_torch(torch_python, data, name, task, FLAGS.seed)
                        row.torch_params = t['params']
                        row.torch_steps_per_s.append(t['steps_per_s'])
                        row.torch_val_accuracy = t['val_accuracy']
                    log(f'  {name} [{rep + 1}/{FLAGS.repeats}]: compile cold '
                        f'{_fmt(row.cold_compile_s[-1] if row.cold_compile_s else None, ".2f")} s'
                        f', jax {_fmt(row.jax_steps_per_s[-1] if row.jax_steps_per_s else None, ".0f")}'
                        f' steps/s, torch '
                        f'{_fmt(row.torch_steps_per_s[-1] if row.torch_steps_per_s else None, ".0f")}'
                        f' steps/s, load {os.getloadavg()[0]:.2f}'
                        + (f', ERROR {row.errors[-1]}' if row.errors else ''))
                rows.append(row)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(table(rows))
    for r in rows:
        for e in r.errors:
            print(f'error: {r.seed_name} @{r.budget}: {e}')
    if not torch_python:
        print(f'torch not available: {torch_note}')
    if FLAGS.json_out:
        with open(FLAGS.json_out, 'w', encoding='utf-8') as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)
    summary_line = summary(rows, torch_note)
    if FLAGS.baseline:
        before = run_baseline(FLAGS.baseline)
        print(comparison(rows, before, FLAGS.baseline))
        now = [w for r in rows for w in r.cold_wall_s]
        then = [w for r in before for w in r.cold_wall_s]
        if now and then:
            summary_line += (f'; fresh evaluations per minute, this tree / '
                             f'{FLAGS.baseline}: '
                             f'{(len(now) / sum(now)) / (len(then) / sum(then)):.2f}x')
    print(summary_line, flush=True)


def run_baseline(commit: str) -> list[Row]:
    """The rows of `commit`'s own mnist1d_eval.py on this run's flags
    (without torch), measured in a temporary worktree of it."""
    tree = tempfile.mkdtemp(prefix='mnist1d-eval-baseline-')
    subprocess.run(['git', 'worktree', 'add', '--detach', tree, commit],
                   cwd=REPO_ROOT, check=True, capture_output=True)
    try:
        out = os.path.join(tree, 'rows.json')
        argv = [sys.executable, os.path.join(tree, 'benchmarks', 'mnist1d_eval.py'),
                f'--seeds={",".join(FLAGS.seeds)}',
                f'--budgets={",".join(FLAGS.budgets)}',
                f'--repeats={FLAGS.repeats}', f'--seed={FLAGS.seed}',
                '--torch_python=none', f'--json_out={out}',
                *(f'--gin_bindings={b}' for b in FLAGS.gin_bindings)]
        log(f'baseline {commit}: {" ".join(argv[1:])}')
        subprocess.run(argv, cwd=tree, env={**os.environ, 'PYTHONPATH': tree},
                       check=True, stdout=subprocess.DEVNULL)
        with open(out, encoding='utf-8') as f:
            return [Row(**r) for r in json.load(f)]
    finally:
        subprocess.run(['git', 'worktree', 'remove', '--force', tree],
                       cwd=REPO_ROOT, check=False, capture_output=True)


def comparison(rows: list[Row], before: list[Row], commit: str) -> str:
    """This tree's rows beside the baseline's, by (seed, budget)."""
    by_key = {(r.seed_name, r.budget): r for r in before}
    per_min = lambda walls: 60 * len(walls) / sum(walls) if walls else None
    lines = [f'\nThis tree (now) against {commit} (before), side by side in '
             'this run:', '',
             '| seed | budget | evals/min fresh, now / before | evals/min warm, '
             'now / before | JAX steps/s, now / before | val accuracy, now / '
             'before |', '|---|---|---:|---:|---:|---:|']
    for r in rows:
        b = by_key.get((r.seed_name, r.budget), Row(r.seed_name, r.budget))
        lines.append(
            f'| {r.seed_name} | {r.budget} '
            f'| {_fmt(per_min(r.cold_wall_s), ".1f")} / {_fmt(per_min(b.cold_wall_s), ".1f")} '
            f'| {_fmt(per_min(r.warm_wall_s), ".1f")} / {_fmt(per_min(b.warm_wall_s), ".1f")} '
            f'| {_fmt(_median(r.jax_steps_per_s), ".0f")} / {_fmt(_median(b.jax_steps_per_s), ".0f")} '
            f'| {_fmt(r.val_accuracy, ".4f")} / {_fmt(b.val_accuracy, ".4f")} |')
    return '\n'.join(lines)


if __name__ == '__main__':
    app.run(main)
