"""Sandbox worker processes: one fresh process per program, under the OS sandbox.

The parent process never executes candidate code: it sends source text to a
worker (`evoprompting.sandbox.runner`) and reads back an EvalResult. A worker
runs one program and exits, so nothing a program changes (module attributes,
threads, JAX settings, files in its scratch space) reaches the next one; the
next worker of each slot is started as soon as the previous program is done,
so its start-up (importing JAX, loading the task's data) overlaps other work.
Workers run under `evoprompting.sandbox.isolation` (bubblewrap, an
unprivileged uid, no network, read-only filesystem, own PID namespace) where
the host allows, else as plain child processes (`isolation.level` says
which). A worker that exceeds the wall-clock limit is killed with everything
it started; one that dies (CPU-time limit, memory, a native crash) gives the
program `timeout`, `oom` or `crash` with the reason.

Each slot `i` runs its workers on `workers[i]` (a `devices.WorkerDevices`:
environment and device nodes). Workers get a clean environment: the
variables of their device share, the parent's locale, PATH and the
JAX/XLA/accelerator variables, nothing else (no credentials).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import json
import os
import queue
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from evoprompting import devices, paths
from evoprompting.sandbox import isolation as isolation_lib
from evoprompting.sandbox import judge as judge_lib
from evoprompting.tasks import base

Status = base.Status
# A worker whose protocol pipe closed is given this long to exit.
_EXIT_GRACE_S = 10.0
_EOF, _TIMED_OUT = 'eof', 'timed out'  # What `_receive` returns besides replies.
_MAX_REPLY_BYTES = 1 << 28
_CODE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# Parent variables a worker keeps (exact names and prefixes).
_KEPT_ENV = frozenset({'PATH', 'LANG', 'LANGUAGE', 'TZ', 'LD_LIBRARY_PATH'})
_KEPT_ENV_PREFIXES = ('LC_', 'JAX_', 'XLA_', 'TPU_', 'CUDA_', 'NVIDIA_',
                      'LIBTPU', 'OMP_', 'OPENBLAS_', 'MKL_', 'TF_CPP_')


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-program limits in a worker.

    Attributes:
      wall_s: wall-clock seconds for one program (build, compile, train).
      cpu_s: CPU seconds for one program, all threads together.
      memory_mb: address-space limit of a worker process (JAX itself needs a
        few GB of address space).
      file_mb: the largest file a worker may write, and the size of its
        private /tmp under the OS sandbox.
      output_chars: how much of what a program prints is kept.
      startup_s: wall-clock seconds a new worker may take to import JAX and
        prepare the task's data.
      processes: processes and threads of the sandbox user, per worker (JAX
        starts a few dozen threads); 0: 256 + 8 per CPU core. Binds only
        under the OS sandbox's unprivileged uid.
    """

    wall_s: float = 1800.0
    cpu_s: int = 3600
    memory_mb: int = 12288
    file_mb: int = 256
    output_chars: int = 4000
    startup_s: float = 600.0
    processes: int = 0


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """How worker processes are isolated.

    Attributes:
      require_os_sandbox: refuse to start without the OS sandbox (bubblewrap)
        instead of falling back, loudly, to process-level isolation.
        Recommended with any LM other than the embedded one.
      sandbox_uid: the first of the host uids that run workers when the
        parent is root. Slot i's workers take uids sandbox_uid + 2i and
        sandbox_uid + 2i + 1 in turn, so a worker and the spare that follows
        it never share one, and a process limit binds each worker alone
        (RLIMIT_NPROC counts per uid). A pool claims its own block of
        `UIDS_PER_POOL` uids from here (`claim_uid_block`), so pools of
        other searches on the host (a sweep's parallel runs, the processes
        of a multi-process search) never share a uid. None of these uids may
        belong to an account: the default range is far above the ones
        Debian, systemd and subordinate-id ranges hand out.
      sandbox_gid: their group (nogroup by default).
    """

    require_os_sandbox: bool = False
    sandbox_uid: int = 2_000_000_000
    sandbox_gid: int = 65534

    def user(self, slot: int = 0, turn: int = 0) -> isolation_lib.SandboxUser:
        """The user of slot `slot`'s workers on turn `turn` (0 or 1)."""
        return isolation_lib.SandboxUser(
            self.sandbox_uid + 2 * slot + turn % 2, self.sandbox_gid)


UIDS_PER_POOL = 1024  # Two per worker slot: at most 512 workers.
_UID_BLOCKS = 1024  # Pools on one host at once.
# Root's alone (checked): not under a world-writable /tmp, not per $TMPDIR.
_UID_LOCK_DIR = '/run/evoprompting-sandbox-uids'


def claim_uid_block(first: int) -> tuple[int, int]:
    """(the first uid of a block no other live pool on this host holds, the
    file descriptor whose lock holds it: close it to give the block back).

    Blocks start at `first`, `UIDS_PER_POOL` apart; each is held by an
    exclusive lock on a file of a root-only folder, which the kernel
    releases when the holder exits, however it ends.
    """
    os.makedirs(_UID_LOCK_DIR, mode=0o700, exist_ok=True)
    st = os.lstat(_UID_LOCK_DIR)
    if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid()
            or st.st_mode & 0o022):
        raise RuntimeError(f'{_UID_LOCK_DIR} must be a folder of this user '
                           'that nobody else can write')
    for block in range(_UID_BLOCKS):
        start = first + block * UIDS_PER_POOL
        fd = os.open(os.path.join(_UID_LOCK_DIR, str(start)),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return start, fd
    raise RuntimeError(f'{_UID_BLOCKS} sandbox pools already run on this '
                       f'host (locks in {_UID_LOCK_DIR})')


def _killing_signal(returncode: int | None) -> int:
    """The signal that ended a worker, 0 if none. bwrap reports a command
    killed by signal N as exit code 128 + N."""
    if returncode is None:
        return 0
    if returncode < 0:
        return -returncode
    return returncode - 128 if 128 < returncode < 128 + 65 else 0


def _children(pid: int) -> list[int]:
    """Pids of the live child processes of `pid`."""
    children = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat', encoding='utf-8') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


def _kill_all_of(user: isolation_lib.SandboxUser) -> None:
    """SIGKILLs every process of `user` (root only): a process of that uid
    sends kill(-1), which reaches every process it may signal but itself.
    Under process isolation this is what reaches processes a program
    detached from its worker (a uid of their own, `WorkerConfig.user`)."""
    def kill_all_but_me():  # Runs in the child, after it became `user`.
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass  # Nothing of that uid is left.

    subprocess.run(['true'], user=user.uid, group=user.gid, extra_groups=[],
                   preexec_fn=kill_all_but_me, env={'PATH': '/usr/bin:/bin'},
                   cwd='/', stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30, check=False)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f'signal {signum}'


def worker_env(worker_devices: devices.WorkerDevices,
               level: str) -> dict[str, str]:
    """The whole environment of a worker process."""
    env = {k: v for k, v in os.environ.items()
           if k in _KEPT_ENV or k.startswith(_KEPT_ENV_PREFIXES)}
    parent_xla_flags = env.get('XLA_FLAGS', '')
    env.update(worker_devices.env)
    if parent_xla_flags and 'XLA_FLAGS' in dict(worker_devices.env):
        env['XLA_FLAGS'] = f'{parent_xla_flags} {env["XLA_FLAGS"]}'
    env.update({
        'PYTHONPATH': _CODE_ROOT, 'PYTHONUNBUFFERED': '1',
        'PYTHONDONTWRITEBYTECODE': '1', 'PYTHONNOUSERSITE': '1',
        paths.CACHE_ENV: paths.default_cache_dir()})
    if level == isolation_lib.OS:
        env.update({'HOME': '/tmp', 'TMPDIR': '/tmp'})
    return env


class WorkerProcess:
    """One worker subprocess, started at once; `run` waits until it is ready.

    Not thread-safe; the pool hands each to one thread at a time.
    """

    def __init__(self, spawn: Callable[..., subprocess.Popen], *,
                 init: dict[str, Any], limits: Limits,
                 new_judge: Callable[[], judge_lib.Judge],
                 isolation: isolation_lib.Isolation,
                 run_as: isolation_lib.SandboxUser | None,
                 worker_devices: devices.WorkerDevices, read_only: Sequence[str],
                 hidden: Sequence[str], log_dir: str):
        """Starts the worker through `spawn` (`subprocess.Popen`, called on a
        long-lived thread: a worker dies with the thread that started it);
        it drops to `run_as` (None: it keeps this process's user)."""
        self.limits = limits
        self.new_judge = new_judge
        # Under process isolation, what a program detached is found by uid.
        self.reap_user = (run_as if isolation.level != isolation_lib.OS
                          else None)
        self.log = tempfile.NamedTemporaryFile(
            mode='w+b', dir=log_dir, prefix='worker-', suffix='.log',
            delete=False)
        self.scratch = tempfile.mkdtemp(prefix='scratch-', dir=log_dir)
        env = worker_env(worker_devices, isolation.level)
        init = dict(init)
        if run_as is not None:
            init['run_as'] = [run_as.uid, run_as.gid]
            os.chown(self.scratch, run_as.uid, run_as.gid)
        if isolation.level == isolation_lib.OS:
            init['write_dirs'] = ['/tmp']  # Its private tmpfs.
        else:
            init['write_dirs'] = [self.scratch]
            init['parent_pid'] = os.getpid()
            env.update({'HOME': self.scratch, 'TMPDIR': self.scratch})
        argv = isolation_lib.wrap(
            [sys.executable, '-m', 'evoprompting.sandbox.runner'],
            isolation=isolation, env=env, read_only=read_only, hidden=hidden,
            tmp_mb=limits.file_mb, device_nodes=worker_devices.device_nodes)
        self.started = time.monotonic()
        self.proc = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=self.log, cwd=self.scratch, env=env,
                          start_new_session=True)
        self.ready = False
        self.startup_s = 0.0
        self._pending = b''  # Bytes of the worker's next reply line.
        try:
            self._send(init)
        except OSError:
            pass  # Died at once; `wait_ready` reports why.

    def wait_ready(self) -> None:
        """Waits for the worker's ready line. Raises RuntimeError if it died."""
        if self.ready:
            return
        left = self.limits.startup_s - (time.monotonic() - self.started)
        ready = self._receive(max(left, 0.0))
        if not isinstance(ready, dict) or not ready.get('ready'):
            reason = (f'no ready reply within startup_s = '
                      f'{self.limits.startup_s:g} s; {self._death_reason()}'
                      if ready == _TIMED_OUT else self._death_reason())
            self.kill()
            raise RuntimeError(f'sandbox worker failed to start: {reason}')
        self.ready = True
        self.startup_s = float(ready['startup_s'])

    def _send(self, obj: dict[str, Any]) -> None:
        self.proc.stdin.write((base.dumps(obj) + '\n').encode())
        self.proc.stdin.flush()

    def _receive(self, timeout: float) -> dict[str, Any] | str:
        """The next reply, or `_EOF` (the worker died, or sent something that
        is not one JSON line within the size limit), or `_TIMED_OUT`.

        Reads the raw pipe against the deadline itself: a worker that writes
        half a line and stops cannot make the parent wait past it.
        """
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b'\n' not in self._pending:
            if len(self._pending) > _MAX_REPLY_BYTES:
                return _EOF
            left = deadline - time.monotonic()
            if left <= 0:
                return _TIMED_OUT
            readable, _, _ = select.select([fd], [], [], min(left, 1.0))
            if readable:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return _EOF
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b'\n')
        try:
            return json.loads(line)
        except (ValueError, RecursionError):
            return _EOF

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
                f'killed by {_signal_name(_killing_signal(code))}'
                if _killing_signal(code) else f'exited with code {code}')
        return f'worker {what}' + (f'; its log: {tail}' if tail else '')

    def run(self, source: str, seed: int,
            build_only: bool = False) -> base.EvalResult:
        """Runs one program (`build_only`: builds it, no training); the
        worker is done afterwards (call `kill`)."""
        self.wait_ready()
        log_start = os.path.getsize(self.log.name)
        sha = base.source_sha256(source)
        deadline = time.monotonic() + self.limits.wall_s
        judge = self.new_judge()
        try:
            self._send({'source': source, 'seed': seed,
                        'build_only': build_only})
            reply = self._receive(self.limits.wall_s)
            while isinstance(reply, dict) and 'val' in reply:
                if build_only:
                    raise ValueError('a validation report for a build')
                self._send({'best': self._report(judge, reply['val'])})
                reply = self._receive(deadline - time.monotonic())
        except OSError:
            reply = _EOF
        except Exception as e:  # pylint: disable=broad-except
            # Whatever a report makes the judge raise (malformed arrays,
            # overflow, memory), the program is a crash, never the search's.
            self.kill()
            return base.EvalResult(
                Status.CRASH, f'malformed validation report: '
                f'{type(e).__name__}: {base.first_line(e)}', sha)
        if reply == _TIMED_OUT:
            self.kill()
            return base.EvalResult(
                Status.TIMEOUT,
                f'wall-clock limit of {self.limits.wall_s:g} s exceeded', sha)
        if reply != _EOF:
            return dataclasses.replace(
                self._verdict(judge, reply, build_only), source_sha256=sha)
        try:
            code = self.proc.wait(timeout=_EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        reason = self._death_reason(log_start)
        if _killing_signal(code) == signal.SIGXCPU:
            return base.EvalResult(
                Status.TIMEOUT,
                f'CPU-time limit of {self.limits.cpu_s} s exceeded ({reason})',
                sha)
        if any(s in reason for s in ('Out of memory', 'bad_alloc', 'MemoryError',
                                     'RESOURCE_EXHAUSTED', 'Cannot allocate')):
            return base.EvalResult(Status.OOM, f'out of memory: {reason}', sha)
        return base.EvalResult(Status.CRASH, reason, sha)

    @staticmethod
    def _report(judge: judge_lib.Judge, report: Any) -> bool:
        """Scores one validation report (ValueError if malformed)."""
        step = report['step']
        if not isinstance(step, int):
            raise ValueError(f'step {step!r} is not an integer')
        return judge(step, base.arrays_from_json(report['predictions']))

    def _verdict(self, judge: judge_lib.Judge, reply: Any,
                 build_only: bool) -> base.EvalResult:
        """The verdict on the final reply: a failure the worker reports
        stands (a program only loses by it); test predictions are scored,
        or for a build the parameter shapes."""
        try:
            evidence = 'built' if build_only else 'trained'
            if evidence in reply:
                result = (judge.built_verdict(reply['built']['param_shapes'])
                          if build_only else judge.verdict(
                              base.Trained.from_json(reply['trained'])))
                output = reply.get('output', '')
                if not isinstance(output, str):
                    raise ValueError('output is not text')
                # The worker caps it (plus a note of what it dropped).
                return dataclasses.replace(
                    result, output=output[:self.limits.output_chars + 100])
            result = base.EvalResult.from_json(reply['result'])
            if result.status == Status.OK:
                raise ValueError('an ok result without predictions')
            # Only the status and what the worker saw are taken from it.
            return base.EvalResult(result.status, str(result.message)[:2000],
                                   '', output=str(result.output)[
                                       :self.limits.output_chars + 100])
        except Exception as e:  # pylint: disable=broad-except
            return base.EvalResult(
                Status.CRASH, f'malformed worker reply: {type(e).__name__}: '
                f'{base.first_line(e)}', '')

    def stop(self) -> None:
        """Sends SIGKILL to the worker and all it started (any thread may
        call it; `run` then returns at once and the owner calls `kill`).

        Under the OS sandbox the worker runs in its own session and PID
        namespace, below the bwrap process we started: that one is stopped
        first (it can start nothing more), then its children (PID 1 of the
        namespace: killing it kills every process in the namespace), then it.
        `--die-with-parent` alone leaves a gap while bwrap sets up.
        """
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGSTOP)
            for child in _children(self.proc.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """Kills the worker and all it started, and cleans up after it."""
        self.stop()
        self.proc.wait()
        if self.reap_user is not None:
            _kill_all_of(self.reap_user)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.log.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


ResultCallback = Callable[[int, base.EvalResult], None]


class WorkerPool:
    """Sandbox workers for one task: one slot per entry of `workers`.

    `evaluate(sources, seeds)` runs programs on all slots at once and returns
    results in order. Programs must already have passed the validator (see
    `evoprompting.sandbox.evaluator.Sandbox`, which does both). The task's
    data is prepared here, in the trusted parent; workers get only
    `task.worker_inputs()` (no validation or test labels; the task's
    `private_paths` are hidden from them) and return predictions, which the
    pool judges (`judge.Judge`): the judge is not in the worker.

    Raises:
      isolation.IsolationError: `config.require_os_sandbox` and no OS sandbox.
    """

    def __init__(self, task: base.Task, *, allowed_modules: Sequence[str],
                 limits: Limits = Limits(), config: WorkerConfig = WorkerConfig(),
                 workers: Sequence[devices.WorkerDevices] = (devices.CPU_WORKER,)):
        if not workers:
            raise ValueError('a pool needs at least one worker')
        self.limits, self.config = limits, config
        self.workers = tuple(workers)
        self.isolation = isolation_lib.detect(config.require_os_sandbox)
        task.prepare()
        self.log_dir = tempfile.mkdtemp(prefix='evoprompting-sandbox-')
        # Workers that dropped to the sandbox user reach their scratch
        # folders by path; nobody can list the folder.
        os.chmod(self.log_dir, 0o711)
        inputs_path = os.path.join(self.log_dir, 'inputs.npz')
        np.savez(inputs_path, **task.worker_inputs())
        os.chmod(inputs_path, 0o644)
        self._new_judge = lambda: judge_lib.judge_for(task)
        self._init = {'task': base.task_to_spec(task),
                      'inputs_path': inputs_path,
                      'limits': {**dataclasses.asdict(limits), 'processes':
                                 limits.processes or 256 + 8 * (os.cpu_count() or 1)},
                      'allowed_modules': sorted(allowed_modules)}
        self._read_only = (_CODE_ROOT, *isolation_lib.python_paths(),
                           inputs_path)
        # Root's workers drop to the sandbox user. Without the OS sandbox to
        # bind them, the code and Python must be reachable for that user.
        self._drop_privileges = False
        if os.geteuid() == 0:
            if (self.isolation.level == isolation_lib.OS or all(
                    map(isolation_lib.reachable_by_others, self._read_only))):
                self._drop_privileges = True
            else:
                self.isolation = dataclasses.replace(
                    self.isolation, detail=(
                        f'{self.isolation.detail}; workers run as root: the '
                        f'code or Python is not reachable by other users'))
        self._uid_lock = None
        if self._drop_privileges:
            if len(self.workers) * 2 > UIDS_PER_POOL:
                raise ValueError(f'at most {UIDS_PER_POOL // 2} workers')
            first, self._uid_lock = claim_uid_block(config.sandbox_uid)
            self.config = dataclasses.replace(config, sandbox_uid=first)
        self._turns = [0] * len(self.workers)  # Of each slot's two users.
        self._hidden = task.private_paths()
        # Workers are started on this one long-lived thread: the OS sandbox
        # and PR_SET_PDEATHSIG kill a worker when the *thread* that started
        # it ends, so not on the short-lived threads of `evaluate`.
        self._launcher = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix='sandbox-launcher')
        self._slots: queue.SimpleQueue[tuple[int, WorkerProcess | None]] = (
            queue.SimpleQueue())
        self._running: set[WorkerProcess] = set()  # Guarded by _lock.
        self._lock = threading.Lock()
        for i in range(len(self.workers)):
            self._slots.put((i, None))  # Started on first use.
        self.startup_s: list[float] = []
        self._closed = False

    @property
    def num_workers(self) -> int:
        return len(self.workers)

    @property
    def sandbox_uids(self) -> tuple[int, ...]:
        """The uids workers run as; empty if they keep this process's."""
        if not self._drop_privileges:
            return ()
        return tuple(self.config.user(slot, turn).uid
                     for slot in range(self.num_workers) for turn in (0, 1))

    def _start(self, slot: int) -> WorkerProcess:
        """Starts slot `slot`'s next worker. Called by the slot's holder."""
        turn = self._turns[slot]
        self._turns[slot] = 1 - turn
        run_as = (self.config.user(slot, turn) if self._drop_privileges
                  else None)
        return WorkerProcess(
            lambda *a, **k: self._launcher.submit(
                subprocess.Popen, *a, **k).result(),
            init=self._init, limits=self.limits, new_judge=self._new_judge,
            isolation=self.isolation, run_as=run_as,
            worker_devices=self.workers[slot], read_only=self._read_only,
            hidden=self._hidden, log_dir=self.log_dir)

    def run_one(self, source: str, seed: int,
                cancel: threading.Event | None = None,
                build_only: bool = False) -> base.EvalResult | None:
        """Runs one program on a fresh worker of a free slot (`build_only`:
        builds it, no training).

        The slot's next worker is started as this one begins the program, so
        its start-up overlaps the run; it touches no device until its own
        program arrives, after this worker is gone. Returns None, running
        nothing, if `cancel` is set before the program starts.
        """
        slot, worker = self._slots.get()
        spare = None
        try:
            if worker is None:
                worker = self._start(slot)
            worker.wait_ready()
            self.startup_s.append(worker.startup_s)
            if not self._closed:
                spare = self._start(slot)
            with self._lock:
                if cancel is not None and cancel.is_set():
                    return None
                self._running.add(worker)
            return dataclasses.replace(worker.run(source, seed, build_only),
                                       isolation=self.isolation.level)
        finally:
            if worker is not None:
                with self._lock:
                    self._running.discard(worker)
                worker.kill()
            self._slots.put((slot, spare))

    def cancel(self, cancel: threading.Event) -> None:
        """Cancels the evaluation given `cancel`: no program of it starts
        after this, running ones are killed (safe from any thread)."""
        with self._lock:
            cancel.set()
            for worker in self._running:
                worker.stop()

    def evaluate(self, sources: Sequence[str], seeds: Sequence[int],
                 on_result: ResultCallback | None = None,
                 build_only: bool = False,
                 cancel: threading.Event | None = None
                 ) -> list[base.EvalResult]:
        """Runs programs on the workers; results in the order of `sources`.
        With `build_only` each is only built: `ok` results carry the
        parameter count and no metrics.

        `on_result(index, result)` is called in this thread as results arrive.
        If this thread is interrupted (Ctrl-C: KeyboardInterrupt) or
        `on_result` raises, queued programs are cancelled and running ones
        killed at once; their results are never reported. Another thread
        can do the same with `cancel(event)` for the `cancel` event given
        here; the results of cancelled programs are then None.
        """
        if len(sources) != len(seeds):
            raise ValueError('one seed per source')
        results: list[base.EvalResult | None] = [None] * len(sources)
        ex = concurrent.futures.ThreadPoolExecutor(self.num_workers)
        cancel = cancel or threading.Event()
        futures = {ex.submit(self.run_one, s, k, cancel, build_only): i
                   for i, (s, k) in enumerate(zip(sources, seeds))}
        try:
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if on_result:
                    on_result(i, results[i])
        except BaseException:
            for future in futures:
                future.cancel()
            self.cancel(cancel)
            raise
        finally:
            ex.shutdown(wait=True)
        return results

    def close(self) -> None:
        """Stops every worker. Call when no evaluation is in flight."""
        if self._closed:
            return
        self._closed = True
        for _ in range(self.num_workers):
            _, worker = self._slots.get()
            if worker is not None:
                worker.kill()
        self._launcher.shutdown()
        shutil.rmtree(self.log_dir, ignore_errors=True)
        if self._uid_lock is not None:
            os.close(self._uid_lock)  # After every worker is gone.

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
