"""A pool of sandbox worker processes, and the limits they run under.

The parent process never executes candidate code: it sends source text to a
worker (`evoprompting.sandbox.worker`) and reads back an EvalResult. Each
worker imports JAX and loads the task's data once and is reused across
programs. A worker that exceeds the wall-clock limit is killed; one that dies
(CPU-time limit, memory, a native crash) is replaced on the next request, and
the program gets `timeout`, `oom` or `crash` with the reason.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

from evoprompting import paths
from evoprompting.tasks import base

Status = base.Status
# A worker whose protocol pipe closed is given this long to exit.
_EXIT_GRACE_S = 10.0
_EOF, _TIMED_OUT = 'eof', 'timed out'  # What `_receive` returns besides replies.
_CODE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-program limits in a worker.

    Attributes:
      wall_s: wall-clock seconds for one program (build, compile, train).
      cpu_s: CPU seconds for one program, all threads together.
      memory_mb: address-space limit of a worker process (JAX itself needs a
        few GB of address space).
      file_mb: the largest file a worker may write (compilation cache entries).
      output_chars: how much of what a program prints is kept.
      startup_s: wall-clock seconds a new worker may take to import JAX and
        prepare the task's data.
    """

    wall_s: float = 1800.0
    cpu_s: int = 3600
    memory_mb: int = 12288
    file_mb: int = 256
    output_chars: int = 4000
    startup_s: float = 600.0


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """How worker processes see the machine.

    Attributes:
      platform: JAX platform for workers ('cpu', 'gpu', 'tpu'); '' lets JAX pick.
      host_device_count: on CPU, devices per worker (data-parallel shards).
      compilation_cache_dir: persistent JAX compilation cache shared by
        workers; 'default' is <cache dir>/jax_compilation_cache (see
        `evoprompting.paths`), '' disables it.
      env: extra environment variables, e.g. CUDA_VISIBLE_DEVICES or
        XLA_PYTHON_CLIENT_MEM_FRACTION for GPU workers.
    """

    platform: str = 'cpu'
    host_device_count: int = 1
    compilation_cache_dir: str = 'default'
    env: tuple[tuple[str, str], ...] = ()


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f'signal {-returncode}'


class WorkerProcess:
    """One worker subprocess and its log. Not thread-safe; the pool serialises."""

    def __init__(self, init: dict[str, Any], limits: Limits,
                 config: WorkerConfig, log_dir: str):
        self.limits = limits
        self.log = tempfile.NamedTemporaryFile(
            mode='w+b', dir=log_dir, prefix='worker-', suffix='.log',
            delete=False)
        env = dict(os.environ)
        env.update(config.env)
        env['PYTHONUNBUFFERED'] = '1'
        # Workers import the same code as this process, wherever it lives.
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in (_CODE_ROOT, env.get('PYTHONPATH')) if p)
        if config.platform:
            env['JAX_PLATFORMS'] = config.platform
        if config.platform == 'cpu':
            flags = env.get('XLA_FLAGS', '')
            env['XLA_FLAGS'] = (
                f'{flags} --xla_force_host_platform_device_count='
                f'{config.host_device_count}').strip()
        self.workdir = tempfile.mkdtemp(prefix='worker-', dir=log_dir)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'evoprompting.sandbox.worker'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            cwd=self.workdir, env=env, start_new_session=True)
        self._send({**init, 'write_dirs': [*init['write_dirs'], self.workdir]})
        ready = self._receive(limits.startup_s)
        if not isinstance(ready, dict) or not ready.get('ready'):
            reason = self._death_reason()
            self.kill()
            raise RuntimeError(f'sandbox worker failed to start: {reason}')
        self.startup_s = time.perf_counter() - t0
        self.devices = ready.get('devices', [])

    def _send(self, obj: dict[str, Any]) -> None:
        self.proc.stdin.write((base.dumps(obj) + '\n').encode())
        self.proc.stdin.flush()

    def _receive(self, timeout: float) -> dict[str, Any] | str:
        """The next reply, or `_EOF` (the worker died), or `_TIMED_OUT`."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return _TIMED_OUT
            readable, _, _ = select.select([fd], [], [], min(left, 1.0))
            if readable:
                line = self.proc.stdout.readline()
                return json.loads(line) if line else _EOF

    def _log_tail(self, start: int, lines: int = 6) -> str:
        with open(self.log.name, 'rb') as f:
            f.seek(start)
            text = f.read().decode('utf-8', 'replace')
        tail = [l for l in text.strip().splitlines() if l.strip()][-lines:]
        return ' | '.join(tail)[-800:]

    def _death_reason(self, log_start: int = 0) -> str:
        code = self.proc.poll()
        tail = self._log_tail(log_start)
        what = ('still running' if code is None else
                f'killed by {_signal_name(code)}' if code < 0 else
                f'exited with code {code}')
        return f'worker {what}' + (f'; its log: {tail}' if tail else '')

    def run(self, source: str, seed: int) -> tuple[base.EvalResult, bool]:
        """Runs one program. Returns the result and whether this worker lives."""
        log_start = os.path.getsize(self.log.name)
        self._send({'source': source, 'seed': seed})
        reply = self._receive(self.limits.wall_s)
        sha = base.source_sha256(source)
        if reply == _TIMED_OUT:
            self.kill()
            return base.EvalResult(
                Status.TIMEOUT,
                f'wall-clock limit of {self.limits.wall_s:g} s exceeded', sha), False
        if reply != _EOF:
            result = base.EvalResult.from_json(reply['result'])
            return result, not reply.get('restart', False)
        try:
            code = self.proc.wait(timeout=_EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        reason = self._death_reason(log_start)
        if code == -signal.SIGXCPU:
            return base.EvalResult(
                Status.TIMEOUT,
                f'CPU-time limit of {self.limits.cpu_s} s exceeded ({reason})',
                sha), False
        if any(s in reason for s in ('Out of memory', 'bad_alloc', 'MemoryError',
                                     'RESOURCE_EXHAUSTED', 'Cannot allocate')):
            return base.EvalResult(Status.OOM, f'out of memory: {reason}', sha), False
        return base.EvalResult(Status.CRASH, reason, sha), False

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


ResultCallback = Callable[[int, base.EvalResult], None]


class WorkerPool:
    """Reusable sandbox workers for one task.

    `evaluate(sources, seeds)` runs programs on up to `num_workers` workers at
    once and returns results in order. Programs must already have passed the
    validator (see `evoprompting.sandbox.Sandbox`, which does both).
    """

    def __init__(self, task: base.Task, *, allowed_modules: Sequence[str],
                 limits: Limits = Limits(), config: WorkerConfig = WorkerConfig(),
                 num_workers: int = 1):
        if num_workers < 1:
            raise ValueError('num_workers must be >= 1')
        self.limits, self.config = limits, config
        self.log_dir = tempfile.mkdtemp(prefix='evoprompting-sandbox-')
        cache_dir = config.compilation_cache_dir
        if cache_dir == 'default':
            cache_dir = os.path.join(paths.default_cache_dir(),
                                     'jax_compilation_cache')
        write_dirs = [cache_dir] if cache_dir else []
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
        self._init = {'task': base.task_to_spec(task),
                      'limits': dataclasses.asdict(limits),
                      'allowed_modules': sorted(allowed_modules),
                      'write_dirs': write_dirs,
                      'compilation_cache_dir': cache_dir}
        self.num_workers = num_workers
        self._idle: queue.SimpleQueue[WorkerProcess | None] = queue.SimpleQueue()
        for _ in range(num_workers):
            self._idle.put(None)  # Started lazily, on first use.
        self.startup_s: list[float] = []
        self._closed = False

    def _start(self) -> WorkerProcess:
        worker = WorkerProcess(self._init, self.limits, self.config, self.log_dir)
        self.startup_s.append(worker.startup_s)
        return worker

    def run_one(self, source: str, seed: int) -> base.EvalResult:
        worker = self._idle.get()
        try:
            if worker is None:
                worker = self._start()
            result, alive = worker.run(source, seed)
            if not alive:
                worker.kill()
                worker = None
            return result
        except BaseException:
            if worker is not None:
                worker.kill()
            worker = None
            raise
        finally:
            self._idle.put(worker)

    def evaluate(self, sources: Sequence[str], seeds: Sequence[int],
                 on_result: ResultCallback | None = None
                 ) -> list[base.EvalResult]:
        """Runs programs on the workers; results in the order of `sources`.

        `on_result(index, result)` is called in this thread as results arrive.
        """
        if len(sources) != len(seeds):
            raise ValueError('one seed per source')
        results: list[base.EvalResult | None] = [None] * len(sources)
        with concurrent.futures.ThreadPoolExecutor(self.num_workers) as ex:
            futures = {ex.submit(self.run_one, s, k): i
                       for i, (s, k) in enumerate(zip(sources, seeds))}
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if on_result:
                    on_result(i, results[i])
        return results

    def close(self) -> None:
        """Stops every worker. Call when no evaluation is in flight."""
        if self._closed:
            return
        self._closed = True
        for _ in range(self.num_workers):
            worker = self._idle.get()
            if worker is not None:
                worker.kill()
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
