r"""Evaluation throughput of the sandbox, side by side with an earlier commit.

  python benchmarks/sandbox_overhead.py [--baseline=b59bc38] [--passes=2]
      [--budget_steps=1000] [--workers=1]

Runs the same job in the current tree and in a git worktree of `--baseline`
(made under /tmp, removed afterwards), one after the other, each in its own
process with its own empty cache folder ($EVOPROMPTING_CACHE): one Sandbox of
the MNIST-1D task (gin/mnist1d/base.gin, `--budget_steps` steps, validation
every 100) evaluates the four seeds `--passes` times, all in one
`Sandbox.evaluate` call. Printed per tree: the isolation its workers ran
under, worker starts and their mean start-up (import JAX, load the data, as
the worker reports it), wall time and evaluations per minute, and the summed
compile seconds of each pass (the baseline's later passes hit its shared
persistent compilation cache; the current tree has none). The last line is
one SUMMARY line: current / baseline evaluations per minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

import machine  # pylint: disable=g-import-not-at-top  (benchmarks/machine.py)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string('baseline', 'b59bc38', 'Commit to compare with.')
flags.DEFINE_integer('passes', 2, 'Times each seed is evaluated.')
flags.DEFINE_integer('budget_steps', 1000, 'Training steps per evaluation.')
flags.DEFINE_integer('workers', 1, 'Sandbox workers (the current tree only '
                     'takes more than one here; the baseline gets the same).')
FLAGS = flags.FLAGS

# Runs inside the tree under test; uses only API both trees share.
_DRIVER = r'''
import json, sys, time
from evoprompting import gin_utils
from evoprompting.sandbox import evaluator
import gin
steps, passes, workers = (int(a) for a in sys.argv[1:4])
gin_utils.parse(['gin/mnist1d/base.gin'], [
    f'mnist1d.TrainConfig.num_steps = {steps}',
    'mnist1d.TrainConfig.eval_every = 100'])
make = lambda name: gin.query_parameter(name).scoped_configurable_fn()
task, limits, config = make('%TASK'), make('%SANDBOX_LIMITS'), make('%WORKER_CONFIG')
import inspect
if 'workers' in inspect.signature(evaluator.Sandbox).parameters:
    from evoprompting import devices
    extra = {'workers': [devices.CPU_WORKER] * workers}
else:
    extra = {'num_workers': workers}
sources = [s.source for s in task.seed_programs()]
with evaluator.Sandbox(task, limits=limits, config=config, **extra) as box:
    t0 = time.perf_counter()
    results = box.evaluate(sources * passes, [0] * len(sources) * passes)
    wall = time.perf_counter() - t0
    starts = list(box.pool.startup_s)
    isolation = getattr(getattr(box, 'isolation', None), 'level', 'process')
n = len(sources)
print(json.dumps({
    'isolation': isolation, 'wall_s': wall, 'evals': len(results),
    'ok': sum(r.status.value == 'ok' for r in results),
    'starts': len(starts), 'mean_start_s': sum(starts) / max(len(starts), 1),
    'compile_s_per_pass': [sum(r.compile_s for r in results[p * n:(p + 1) * n])
                           for p in range(passes)]}))
'''


def run_tree(tree: str) -> dict:
    with tempfile.TemporaryDirectory(prefix='sandbox-overhead-cache-') as cache:
        os.chmod(cache, 0o755)
        env = {**os.environ, 'EVOPROMPTING_CACHE': cache, 'PYTHONPATH': tree}
        out = subprocess.run(
            [sys.executable, '-c', _DRIVER, str(FLAGS.budget_steps),
             str(FLAGS.passes), str(FLAGS.workers)],
            cwd=tree, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f'{tree}: {out.stderr[-2000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    worktree = tempfile.mkdtemp(prefix='sandbox-overhead-baseline-')
    subprocess.run(['git', 'worktree', 'add', '--detach', worktree,
                    FLAGS.baseline], cwd=REPO_ROOT, check=True,
                   capture_output=True)
    try:
        os.chmod(worktree, 0o755)
        rows = {'current': run_tree(REPO_ROOT),
                f'baseline {FLAGS.baseline}': run_tree(worktree)}
    finally:
        subprocess.run(['git', 'worktree', 'remove', '--force', worktree],
                       cwd=REPO_ROOT, check=False, capture_output=True)
    print(f'CPU: {machine.describe()}; '
          f'{FLAGS.passes} passes over the 4 MNIST-1D seeds, '
          f'{FLAGS.budget_steps} steps, {FLAGS.workers} worker(s)')
    print('| tree | isolation | evals ok | worker starts | mean start s | '
          'wall s | evals/min | compile s per pass |')
    print('|---|---|---|---|---|---|---|---|')
    for name, r in rows.items():
        per_min = 60 * r['evals'] / r['wall_s']
        compiles = ' / '.join(f'{c:.1f}' for c in r['compile_s_per_pass'])
        print(f'| {name} | {r["isolation"]} | {r["ok"]}/{r["evals"]} | '
              f'{r["starts"]} | {r["mean_start_s"]:.2f} | {r["wall_s"]:.1f} | '
              f'{per_min:.1f} | {compiles} |')
    current, base = rows['current'], rows[f'baseline {FLAGS.baseline}']
    ratio = ((current['evals'] / current['wall_s'])
             / (base['evals'] / base['wall_s']))
    print(f'SUMMARY: evaluations per minute, current / {FLAGS.baseline}: '
          f'{ratio:.2f}x ({current["isolation"]} isolation, a fresh worker per '
          f'program, no compilation cache)')


if __name__ == '__main__':
    app.run(main)
