"""How a candidate's training run compiles: XLA options and a threaded compiler.

Shared by the tasks' training code (MNIST-1D's `classifier_training`, CLRS's
`clrs_tasks.train`). Both lower every program a run needs (init, training
step(s), evaluation) before the first step and compile them on threads
(`Compiler`): tracing holds the GIL, XLA compiles without it, so the compiles
overlap one another, the next lowering, and the first training calls.
Errors while lowering or compiling a program are the program's
`build_error`s (`build_errors`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import time
from typing import Any, Iterator, Sequence

import jax

from evoprompting.tasks import base

# XLA:CPU settings, measured on the 2-core CPU (see `compiler_options`).
# 'once', for code that runs once or rarely (init, evaluation): XLA's backend
# optimisations and its MLIR fusion emitters cost more compile time than they
# save. Init compiles ~4x faster at level 0, and without the fusion emitters
# init ~1.5x and evaluation 2-3x faster again (evaluation of 1,500 examples
# then runs 2-40 ms instead of 1-13 ms). Never for the train step: its steps
# ran ~1.4x slower at level 0, and the GRU's ~1.5x slower without fusion
# emitters.
# 'train', for the training step: level 1 compiled the seeds' chunks 15-30%
# faster than the default (3) and their steps ran as fast (the heavy work is in
# library calls: Eigen, XNNPACK).
_CPU_COMPILER_OPTIONS = {
    'once': {'xla_backend_optimization_level': 0,
             'xla_cpu_use_fusion_emitters': False},
    'train': {'xla_backend_optimization_level': 1},
}


def compiler_options(purpose: str) -> dict[str, Any]:
    """XLA compiler options for `purpose`: 'once' (init, evaluation) or 'train'.

    The settings are XLA:CPU tuning, and `xla_cpu_use_fusion_emitters` exists
    only there, so on any other default backend (GPU, TPU) this returns {}:
    XLA's own defaults, which are tuned for those backends.
    """
    if purpose not in _CPU_COMPILER_OPTIONS:
        raise ValueError(f'unknown compile purpose {purpose!r}; expected one '
                         f'of {sorted(_CPU_COMPILER_OPTIONS)}')
    if jax.default_backend() != 'cpu':
        return {}
    return dict(_CPU_COMPILER_OPTIONS[purpose])


MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    """Compiles at once by default: one per two CPU cores this process may use.

    XLA:CPU already compiles one large program on about two cores (a CLRS
    training step kept 1.75 cores busy on the 2-core CPU), so there a second
    compile thread made a CLRS evaluation's compiles 7% slower, not faster.
    At most `MAX_DEFAULT_THREADS`: every compile holds its own XLA memory,
    inside the sandbox worker's memory limit.
    """
    cores = len(os.sched_getaffinity(0))
    return max(1, min(MAX_DEFAULT_THREADS, cores // 2))


@contextlib.contextmanager
def build_errors() -> Iterator[None]:
    """Turns errors of tracing and compiling the model into build errors.

    A `ProgramFailure` passes unchanged, and an out-of-memory error is
    re-raised as it is, for the worker to name it.
    """
    try:
        yield
    except base.ProgramFailure:
        raise
    except Exception as e:  # pylint: disable=broad-except
        if base.is_out_of_memory(e):
            raise
        raise base.ProgramFailure(
            base.Status.BUILD_ERROR,
            f'Model failed to compile for training: {type(e).__name__}: '
            f'{base.first_line(e)}') from None


class Compiler:
    """Compiles named programs on threads, each once per argument shapes.

    `submit` lowers (traces) a jitted function on the calling thread, as
    tracing holds the GIL, and compiles it on a thread pool with
    `compiler_options(purpose)`: XLA releases the GIL, so compiles overlap
    one another and the next lowering. `run` calls a program, submitting it
    first if needed and waiting for its compile; `compiled` returns the
    compiled program, for a loop that calls it many times. Lowering and
    compile errors are raised as `build_errors`. `seconds` adds up the time
    spent lowering and waiting for compiles.
    Use as a context manager: leaving it waits for every compile.
    """

    def __init__(self, threads: int):
        self._pool = concurrent.futures.ThreadPoolExecutor(threads)
        # Key -> (the program's abstract outputs, its compile).
        self._programs: dict[Any, tuple[Any, concurrent.futures.Future]] = {}
        self.seconds = 0.0

    def __enter__(self) -> Compiler:
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True)  # Never leave a compile running.

    @staticmethod
    def _key(name: str, args: Sequence[Any]) -> Any:
        shapes = tuple((x.shape, x.dtype) for x in jax.tree.leaves(args))
        return name, jax.tree.structure(args), shapes

    def submit(self, name: str, jitted: Any, purpose: str, *args: Any) -> Any:
        """Starts compiling `jitted` (a `jax.jit` function) for `args`.

        Args:
          name: the program's name; with the arguments' structure and shapes
            it identifies the program.
          jitted: the function, wrapped by `jax.jit` with the caller's options
            (donation, shardings).
          purpose: 'once' or 'train' (`compiler_options`).
          *args: arrays or `jax.ShapeDtypeStruct`s.

        Returns:
          The program's outputs as a pytree of `jax.ShapeDtypeStruct`s.
        """
        key = self._key(name, args)
        if key not in self._programs:
            start = time.perf_counter()
            with build_errors():
                lowered = jitted.lower(*args)
            self._programs[key] = (lowered.out_info, self._pool.submit(
                lowered.compile, compiler_options(purpose)))
            self.seconds += time.perf_counter() - start
        return self._programs[key][0]

    def compiled(self, name: str, jitted: Any, purpose: str,
                 *args: Any) -> Any:
        """The compiled program of `jitted` for `args` (see `submit`)."""
        self.submit(name, jitted, purpose, *args)
        start = time.perf_counter()
        with build_errors():
            executable = self._programs[self._key(name, args)][1].result()
        self.seconds += time.perf_counter() - start
        return executable

    def run(self, name: str, jitted: Any, purpose: str, *args: Any) -> Any:
        """`jitted(*args)` through its compiled program (see `submit`)."""
        return self.compiled(name, jitted, purpose, *args)(*args)
