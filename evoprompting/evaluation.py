"""Sandboxed evaluation entry points configured by the binaries.

`evaluate_seeds` is the main binary's job until the search loop lands;
`evaluate_program` backs `python -m evoprompting.evaluate`. Both take their
task, limits and worker configuration as arguments (bound by gin in the
binaries) and run every program through `evoprompting.sandbox.Sandbox`.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from absl import logging

from evoprompting.sandbox import evaluator, pool
from evoprompting.tasks import base


def format_table(names: Sequence[str],
                 results: Sequence[base.EvalResult]) -> str:
    """A plain-text table of seed results (one row per program)."""
    header = (f'{"program":<16} {"status":<11} {"params":>9} {"val_acc":>8} '
              f'{"test_acc":>8} {"best_step":>9} {"compile_s":>9} {"train_s":>8}')
    rows = [header, '-' * len(header)]
    for name, r in zip(names, results):
        m = r.metrics
        acc = lambda k: f'{m[k]:.4f}' if k in m else '-'
        rows.append(
            f'{name:<16} {r.status.value:<11} '
            f'{r.params if r.params is not None else "-":>9} '
            f'{acc("val_accuracy"):>8} {acc("test_accuracy"):>8} '
            f'{int(m["best_step"]) if "best_step" in m else "-":>9} '
            f'{r.compile_s:>9.2f} {r.train_s:>8.2f}')
    return '\n'.join(rows)


def evaluate_seeds(*, task: base.Task, limits: pool.Limits, worker_config: pool.WorkerConfig,
        num_workers: int = 1, seed: int = 0, workdir: str) -> list[base.EvalResult]:
    """Evaluates every seed program of `task`; writes `seed_results.jsonl`.

    Args:
      task: the task whose seeds are evaluated.
      limits: per-program sandbox limits.
      worker_config: how workers see the machine.
      num_workers: sandbox worker processes.
      seed: training seed of every program.
      workdir: output folder (created if missing).
    """
    os.makedirs(workdir, exist_ok=True)
    seeds = task.seed_programs()
    logging.info('Evaluating %d seed programs of %s', len(seeds), task.name)
    done = 0

    def report(i: int, result: base.EvalResult) -> None:
        nonlocal done
        done += 1
        logging.info('[%d/%d] %s: %s (%s)', done, len(seeds), seeds[i].name,
                     result.status.value, result.message)

    with evaluator.Sandbox(task, limits=limits, config=worker_config,
                           num_workers=num_workers) as sandbox:
        results = sandbox.evaluate([s.source for s in seeds], [seed] * len(seeds),
                                   on_result=report)
    path = os.path.join(workdir, 'seed_results.jsonl')
    with open(path, 'w', encoding='utf-8') as f:
        for s, r in zip(seeds, results):
            f.write(json.dumps({'name': s.name, **r.to_json()}) + '\n')
    print(format_table([s.name for s in seeds], results), flush=True)
    logging.info('Wrote %s', path)
    return results


def evaluate_program(*, task: base.Task, limits: pool.Limits,
                     worker_config: pool.WorkerConfig, source: str,
                     seed: int = 0) -> base.EvalResult:
    """Evaluates one program in a fresh sandbox worker."""
    with evaluator.Sandbox(task, limits=limits, config=worker_config) as sandbox:
        return sandbox.evaluate([source], [seed])[0]
