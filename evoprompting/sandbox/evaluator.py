"""The sandbox as one object: validate in the parent, run in a worker, judge
in the parent.

`Sandbox.evaluate(sources, seeds)` is what the search calls, and
`evaluate_program` what the `evaluate` CLI calls. A program the validator
refuses never reaches a worker; every outcome is an EvalResult with a
status, never an exception.
"""

from __future__ import annotations

import sys
import threading
from typing import Sequence

from evoprompting import devices
from evoprompting.sandbox import isolation, pool, validator
from evoprompting.tasks import base


class Sandbox:
    """Validator + worker pool for one task.

    Attributes:
      isolation: what workers run under (`isolation.Isolation`); a
        process-level fallback is printed as a warning when the sandbox is
        made.
    """

    def __init__(self, task: base.Task, *, limits: pool.Limits = pool.Limits(),
                 config: pool.WorkerConfig = pool.WorkerConfig(),
                 workers: Sequence[devices.WorkerDevices] = (devices.CPU_WORKER,),
                 policy: validator.Policy = validator.DEFAULT_POLICY):
        self.task = task
        self.policy = policy
        self.pool = pool.WorkerPool(
            task, allowed_modules=policy.allowed_modules, limits=limits,
            config=config, workers=workers)
        self.isolation: isolation.Isolation = self.pool.isolation
        if self.isolation.warning:
            print(self.isolation.warning, file=sys.stderr, flush=True)

    def evaluate(self, sources: Sequence[str], seeds: Sequence[int],
                 on_result: pool.ResultCallback | None = None,
                 build_only: bool = False,
                 cancel: threading.Event | None = None
                 ) -> list[base.EvalResult]:
        """Evaluates programs; refused ones never reach a worker.

        Returns results in the order of `sources`; `on_result(index, result)`
        is called in this thread as each result arrives (progress reporting).
        With `build_only` programs are validated and built (abstractly, in a
        worker like any other), not trained: `ok` results carry the
        parameter count and no metrics. `cancel`: see `cancel`.
        """
        results: list[base.EvalResult | None] = []
        runnable = []
        for i, source in enumerate(sources):
            violation = validator.validate(source, self.policy)
            if violation is None:
                runnable.append(i)
                results.append(None)
            else:
                results.append(base.EvalResult(
                    base.Status(violation.status), violation.message,
                    base.source_sha256(source) if isinstance(source, str) else ''))
                if on_result:
                    on_result(i, results[i])

        def report(j: int, result: base.EvalResult) -> None:
            if on_result:
                on_result(runnable[j], result)

        ran = self.pool.evaluate([sources[i] for i in runnable],
                                 [seeds[i] for i in runnable], on_result=report,
                                 build_only=build_only, cancel=cancel)
        for i, result in zip(runnable, ran):
            results[i] = result
        return results

    def cancel(self, cancel: threading.Event) -> None:
        """Cancels the evaluation given `cancel` (`pool.WorkerPool.cancel`)."""
        self.pool.cancel(cancel)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def evaluate_program(*, task: base.Task, limits: pool.Limits,
                     worker_config: pool.WorkerConfig,
                     workers: Sequence[devices.WorkerDevices], source: str,
                     seed: int = 0) -> base.EvalResult:
    """Evaluates one program in a fresh sandbox (the `evaluate` CLI's job;
    the first of `workers`: one program needs one)."""
    with Sandbox(task, limits=limits, config=worker_config,
                 workers=list(workers)[:1]) as sandbox:
        return sandbox.evaluate([source], [seed])[0]
