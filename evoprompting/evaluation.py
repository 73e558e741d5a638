"""Sandboxed evaluation of one program: the entry point of `evoprompting.evaluate`.

Takes its task, limits and worker configuration as arguments (bound by gin in
the binary) and runs the program through `evoprompting.sandbox.Sandbox`.
"""

from __future__ import annotations

from typing import Sequence

from evoprompting import devices
from evoprompting.sandbox import evaluator, pool
from evoprompting.tasks import base


def evaluate_program(*, task: base.Task, limits: pool.Limits,
                     worker_config: pool.WorkerConfig,
                     workers: Sequence[devices.WorkerDevices], source: str,
                     seed: int = 0) -> base.EvalResult:
    """Evaluates one program in a fresh sandbox worker (the first of
    `workers`: one program needs one)."""
    with evaluator.Sandbox(task, limits=limits, config=worker_config,
                           workers=list(workers)[:1]) as sandbox:
        return sandbox.evaluate([source], [seed])[0]
