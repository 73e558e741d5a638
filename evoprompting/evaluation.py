"""Sandboxed evaluation of one program: the entry point of `evoprompting.evaluate`.

Takes its task, limits and worker configuration as arguments (bound by gin in
the binary) and runs the program through `evoprompting.sandbox.Sandbox`.
"""

from __future__ import annotations

from evoprompting.sandbox import evaluator, pool
from evoprompting.tasks import base


def evaluate_program(*, task: base.Task, limits: pool.Limits,
                     worker_config: pool.WorkerConfig, source: str,
                     seed: int = 0) -> base.EvalResult:
    """Evaluates one program in a fresh sandbox worker."""
    with evaluator.Sandbox(task, limits=limits, config=worker_config) as sandbox:
        return sandbox.evaluate([source], [seed])[0]
