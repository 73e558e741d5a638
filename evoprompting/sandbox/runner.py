"""The sandbox worker: a process that runs one candidate program, then exits.

Started by `evoprompting.sandbox.pool.WorkerPool` as
`python -m evoprompting.sandbox.runner`, under the OS sandbox where the host
has one (`evoprompting.sandbox.isolation`). It imports JAX and reads the
task's worker inputs, says it is ready, waits for one program, runs it, replies and
exits: no state of one program can reach another, since no process runs two.
Protocol: one JSON object per line on stdin (requests) and on a private
duplicate of the original stdout (replies). The process's own fd 1 is
pointed at stderr, so nothing the program or a C library prints can corrupt
the protocol.

    -> {"task": <task spec>, "limits": {...}, "allowed_modules": [...],
        "write_dirs": [...], "inputs_path": str, "run_as": [uid, gid]}
    <- {"ready": true, "startup_s": float}
    -> {"source": str, "seed": int, "build_only": bool}
    <- {"val": {"step": int, "predictions": <base.arrays_to_json>}}
    -> {"best": bool}                  (at every evaluation point; then)
    <- {"trained": <base.Trained json>, "output": str}    (it trained), or
       {"built": {"param_shapes": [[int]]}, "output": str}
                                       (build_only: built, not trained), or
       {"result": <EvalResult json>}                      (it failed)

The worker never holds the validation or test labels (`inputs_path` holds
`Task.worker_inputs`) and never reports a metric: the parent's judge
(`evoprompting.sandbox.judge`) scores the validation predictions as they
come, tells the worker which point to keep, and scores the test
predictions of that point.

Defence in depth inside the process, beyond the parent's AST validation and
the OS sandbox:
  * started as root, it reads its data, then drops to the unprivileged
    sandbox user before it says it is ready (`drop_privileges`);
  * it dies with its parent (PR_SET_PDEATHSIG), whatever kills the parent;
  * a seccomp filter (libseccomp, where installed) denies ptrace, mounts,
    namespaces, kernel modules, BPF and the like in every thread, and on
    CPU also execve and sockets (`install_syscall_filter`);
  * `__import__` seen by the program admits only the allowed modules;
  * an audit hook (PEP 578), installed just before the program runs and never
    removed, refuses process creation, sockets, ctypes, FFI loading,
    marshal/pickle loads, memory maps, environment changes and any file
    write outside `write_dirs` (the worker's scratch folder) for the rest of
    the process's life: the result is formatted and sent under it too;
  * limits set here before JAX is imported (address space, file size,
    processes of the sandbox user, no core dumps) plus a CPU-time limit for
    the program.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import json
import os
import resource
import signal
import sys
import time
import types
from typing import Any

import numpy as np

from evoprompting.tasks import base

Status = base.Status
_PROGRAM_MODULE = 'candidate_program'

# Audit events refused while a program runs (exact names and prefixes).
_REFUSED_EVENTS = frozenset({
    'os.system', 'os.exec', 'os.posix_spawn', 'os.spawn', 'os.fork',
    'os.forkpty', 'os.kill', 'os.killpg', 'os.chdir', 'os.putenv',
    'os.unsetenv', 'os.startfile', 'pty.spawn', 'subprocess.Popen',
    'pickle.find_class', 'mmap.__new__',
    'resource.setrlimit', 'resource.prlimit', 'sys.setrecursionlimit',
    'sys.settrace', 'sys.setprofile', 'gc.get_referrers',
    'gc.get_objects', 'gc.get_referents', 'winreg', 'webbrowser.open',
})
_REFUSED_PREFIXES = ('socket.', 'ctypes.', 'cffi.', 'urllib.', 'http.',
                     'ftplib.', 'smtplib.', 'imaplib.', 'poplib.', 'nntplib.',
                     'telnetlib.', 'sqlite3.', 'shutil.', 'os.exec',
                     'os.spawn', 'os.posix_spawn', 'os.fork')
# Audit events with a path argument that are allowed only inside write_dirs.
_PATH_EVENTS = frozenset({
    'os.remove', 'os.rename', 'os.rmdir', 'os.mkdir', 'os.chmod', 'os.chown',
    'os.symlink', 'os.link', 'os.truncate', 'os.utime', 'os.chflags',
    'os.lchflags', 'os.lchmod', 'os.setxattr', 'os.removexattr'})
_TWO_PATH_EVENTS = frozenset({'os.rename', 'os.symlink', 'os.link'})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SandboxViolation(BaseException):
    """Raised by the audit hook. A BaseException, so `except Exception` in a
    program cannot swallow it; the guard also remembers it."""


class Guard:
    """The run-time guard: refuses audit events once `install`ed, for good."""

    def __init__(self, write_dirs: list[str]):
        self.write_dirs = [os.path.realpath(d) + os.sep for d in write_dirs]
        self.violation = ''

    def _writable(self, path: Any) -> bool:
        """Whether `path` lies in a write_dir. An fd (e.g. os.truncate(fd))
        or a relative path (which may be relative to any `dir_fd`) is not."""
        if isinstance(path, int):
            return False
        try:
            name = os.fsdecode(path)
            real = os.path.realpath(name)
        except (TypeError, ValueError):
            return False
        if not os.path.isabs(name):
            return False
        return any((real + os.sep).startswith(d) for d in self.write_dirs)

    def _refuse(self, event: str, detail: str) -> None:
        if not self.violation:
            self.violation = f'blocked at run time: {event}{detail}'
        raise SandboxViolation(self.violation)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event in _REFUSED_EVENTS or event.startswith(_REFUSED_PREFIXES):
            self._refuse(event, '')
        elif event == 'open':
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in 'wax+')
                       or isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing and not self._writable(path):
                self._refuse(event, f'({path!r}, {mode!r}) for writing')
        elif event in _PATH_EVENTS:
            paths = args[:2] if event in _TWO_PATH_EVENTS else args[:1]
            if not all(self._writable(p) for p in paths):
                self._refuse(event, f'({args[0]!r})')

    def install(self) -> None:
        """Adds the audit hook; audit hooks cannot be removed (PEP 578)."""
        sys.addaudithook(self.hook)


class CappedText:
    """A text sink that keeps the first `limit` characters written to it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def write(self, text: str) -> int:
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        tail = f'\n[... {self.dropped} more characters]' if self.dropped else ''
        return ''.join(self.parts) + tail


# Modules that the allowed libraries' C code imports while a program runs
# (C-level imports go through the calling frame's `__import__`, here the
# program's): numpy's float -> bfloat16 & co. dtype lookups.
_IMPORTED_BY_LIBRARIES = frozenset({'ml_dtypes'})


def _guarded_import(allowed: frozenset[str]):
    real_import = builtins.__import__
    allowed = allowed | _IMPORTED_BY_LIBRARIES

    def guarded(name, globals=None, locals=None, fromlist=(), level=0):  # pylint: disable=redefined-builtin
        if level != 0 or not any(name == m or name.startswith(m + '.')
                                 for m in allowed):
            raise ImportError(f'import of {name!r} is not allowed')
        return real_import(name, globals, locals, fromlist, level)
    return guarded


def _describe(e: BaseException) -> str:
    return f'{type(e).__name__}: {base.first_line(e)}'


class Worker:
    """In-process half of the sandbox: executes one program."""

    def __init__(self, init: dict[str, Any],
                 report_validation: base.ReportValidation):
        self.task = base.task_from_spec(init['task'])
        self.report_validation = report_validation
        self.limits = init['limits']
        self.guard = Guard(init.get('write_dirs', []))
        self.builtins = dict(vars(builtins))
        for name in ('eval', 'exec', 'compile', 'open', 'input', 'breakpoint',
                     'globals', 'locals', 'vars', 'getattr', 'setattr',
                     'delattr', 'help', 'exit', 'quit', 'memoryview'):
            self.builtins.pop(name, None)
        self.builtins['__import__'] = _guarded_import(
            frozenset(init['allowed_modules']))
        # Read in full now, before the worker drops its privileges.
        with np.load(init['inputs_path'], allow_pickle=False) as f:
            self.inputs = {k: f[k] for k in f.files}

    def _limit_cpu(self) -> None:
        """SIGXCPU after `cpu_s` more seconds of CPU time, SIGKILL (which
        no program can ignore) two seconds later."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = int(usage.ru_utime + usage.ru_stime) + 1
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = used + int(self.limits['cpu_s'])
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (
            soft, soft + 2 if hard == resource.RLIM_INFINITY
            else min(soft + 2, hard)))

    def run(self, source: str, seed: int,
            build_only: bool = False) -> dict[str, Any]:
        """Runs the program under the guard, which stays on afterwards.

        Returns the reply: {'trained': <base.Trained json>, 'output': str}
        for a program that trained ({'built': {'param_shapes': ...},
        'output': str} for one built with `build_only`), else
        {'result': <EvalResult json>}.
        """
        sha = base.source_sha256(source)
        output = CappedText(int(self.limits['output_chars']))
        self._limit_cpu()
        self.guard.install()
        try:
            with contextlib.redirect_stdout(output), \
                    contextlib.redirect_stderr(output):
                evidence = self._execute(source, seed, build_only)
            if not self.guard.violation and build_only:
                return {'built': {'param_shapes': [list(s) for s in evidence]},
                        'output': output.getvalue()}
            if not self.guard.violation:
                return {'trained': evidence.to_json(),
                        'output': output.getvalue()}
            result = base.EvalResult(Status.FORBIDDEN, self.guard.violation, sha)
        except SandboxViolation:
            result = base.EvalResult(Status.FORBIDDEN, self.guard.violation, sha)
        except base.ProgramFailure as f:
            result = base.EvalResult(f.status, str(f.message), sha)
        except RecursionError as e:
            result = base.EvalResult(Status.BUILD_ERROR,
                                     f'recursion too deep: {_describe(e)}', sha)
        except BaseException as e:  # pylint: disable=broad-except
            if base.is_out_of_memory(e):
                result = base.EvalResult(
                    Status.OOM, f'out of memory: {_describe(e)}', sha)
            elif isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                result = base.EvalResult(
                    Status.FORBIDDEN,
                    f'program raised {type(e).__name__}', sha)
            else:
                result = base.EvalResult(Status.CRASH, _describe(e), sha)
        if self.guard.violation and result.status != Status.FORBIDDEN:
            # A program that caught the guard's exception is still refused.
            result = base.EvalResult(Status.FORBIDDEN, self.guard.violation, sha)
        return {'result': dataclasses.replace(
            result, source_sha256=sha, output=output.getvalue()).to_json()}

    def _execute(self, source: str, seed: int, build_only: bool) -> Any:
        # A real module: flax and dataclasses look classes' modules up in
        # sys.modules. It is removed again when the program is done.
        module = types.ModuleType(_PROGRAM_MODULE)
        module.__dict__['__builtins__'] = self.builtins
        namespace = module.__dict__
        sys.modules[_PROGRAM_MODULE] = module
        try:
            return self._execute_in(namespace, source, seed, build_only)
        finally:
            del sys.modules[_PROGRAM_MODULE]

    def _execute_in(self, namespace: dict[str, Any], source: str,
                    seed: int, build_only: bool) -> Any:
        """The Trained record, or with `build_only` the parameter shapes."""
        try:
            exec(self.task.preamble, namespace)  # pylint: disable=exec-used
            code = compile(source, '<candidate>', 'exec')
        except SyntaxError as e:
            raise base.ProgramFailure(
                Status.SYNTAX_ERROR, f'line {e.lineno}: {e.msg}') from None
        try:
            exec(code, namespace)  # pylint: disable=exec-used
        except Exception as e:  # pylint: disable=broad-except
            if base.is_out_of_memory(e) or isinstance(e, RecursionError):
                raise
            raise base.ProgramFailure(
                Status.BUILD_ERROR,
                f'running the program failed: {_describe(e)}') from None
        if build_only:
            return self.task.build_program(namespace, self.inputs)
        return self.task.run_program(namespace, seed, self.inputs,
                                     self.report_validation)


def set_process_limits(limits: dict[str, Any]) -> None:
    """Address space, file size, processes and core dumps, for good.

    Set before JAX is imported and before any program runs; soft and hard
    limits are equal, and programs cannot call setrlimit (validator and
    audit hook). The process limit counts every process and thread of this
    uid, so it binds only for a user other than root: the OS sandbox's.
    """
    for kind, value in ((resource.RLIMIT_AS, int(limits['memory_mb']) << 20),
                        (resource.RLIMIT_FSIZE, int(limits['file_mb']) << 20),
                        (resource.RLIMIT_NPROC, int(limits['processes'])),
                        (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(kind, (value, value))


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux PR_SET_PDEATHSIG).

    Exits at once if the parent is already gone. Under the OS sandbox bwrap
    does the same for the whole PID namespace; this covers `process`
    isolation.
    """
    import ctypes  # pylint: disable=g-import-not-at-top
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)  # pylint: disable=protected-access


# Denied everywhere: debugging other processes, kernel modules, namespaces,
# mounts, BPF, perf, keyrings, userfaultfd. On CPU also new programs, new
# processes (threads only), sockets and anonymous memory files, none of which
# XLA:CPU needs (GPU compilers fork and exec ptxas; libtpu talks to its local
# mesh controller over sockets). memfd_create would hold memory outside
# RLIMIT_AS.
_DENIED_SYSCALLS = (
    'ptrace', 'process_vm_readv', 'process_vm_writev', 'kexec_load',
    'kexec_file_load', 'init_module', 'finit_module', 'delete_module',
    'mount', 'umount2', 'pivot_root', 'chroot', 'unshare', 'setns', 'bpf',
    'perf_event_open', 'userfaultfd', 'keyctl', 'add_key', 'request_key',
    'acct', 'swapon', 'swapoff', 'reboot', 'iopl', 'ioperm',
    'open_by_handle_at', 'name_to_handle_at', 'mknod', 'mknodat')
_DENIED_ON_CPU = ('execve', 'execveat', 'socket', 'memfd_create', 'fork',
                  'vfork')
_CLONE_THREAD = 0x10000
_SCMP_ACT_ALLOW = 0x7fff0000
_SCMP_CMP_MASKED_EQ = 7
_SCMP_FLTATR_CTL_TSYNC = 4  # Every thread, not only the calling one.


def _scmp_act_errno(code: int) -> int:
    return 0x00050000 | code


def install_syscall_filter(platform: str) -> str:
    """Makes the denied system calls fail in every thread of this process,
    for good (a seccomp filter through libseccomp, if present).

    On CPU, `clone` is allowed for threads only (CLONE_THREAD set) and
    `clone3`, whose flags a filter cannot read, fails with ENOSYS, so that
    the C library falls back to `clone` for new threads.
    Returns '' once installed, else why not (no libseccomp).
    """
    import ctypes  # pylint: disable=g-import-not-at-top
    import ctypes.util  # pylint: disable=g-import-not-at-top

    class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
        _fields_ = [('arg', ctypes.c_uint), ('op', ctypes.c_int),
                    ('datum_a', ctypes.c_uint64), ('datum_b', ctypes.c_uint64)]

    name = ctypes.util.find_library('seccomp')
    if name is None:
        return 'libseccomp is not installed'
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
        ctypes.POINTER(ArgCmp)]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                     ctypes.c_uint32]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    deny = _scmp_act_errno(errno.EPERM)
    rules = [(name, deny, ()) for name in _DENIED_SYSCALLS]
    if platform == 'cpu':
        rules += [(name, deny, ()) for name in _DENIED_ON_CPU]
        rules += [('clone', deny, (ArgCmp(0, _SCMP_CMP_MASKED_EQ,
                                          _CLONE_THREAD, 0),)),
                  ('clone3', _scmp_act_errno(errno.ENOSYS), ())]
    context = lib.seccomp_init(_SCMP_ACT_ALLOW)
    try:
        if lib.seccomp_attr_set(context, _SCMP_FLTATR_CTL_TSYNC, 1):
            raise OSError('seccomp: cannot synchronise threads')
        for syscall, action, conditions in rules:
            number = lib.seccomp_syscall_resolve_name(syscall.encode())
            array = (ArgCmp * len(conditions))(*conditions)
            if number >= 0 and lib.seccomp_rule_add_array(
                    context, action, number, len(conditions), array):
                raise OSError(f'seccomp: cannot filter {syscall}')
        # Loading a filter without CAP_SYS_ADMIN needs no_new_privs.
        if ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0):
            raise OSError(ctypes.get_errno(), 'prctl(PR_SET_NO_NEW_PRIVS)')
        if lib.seccomp_load(context):
            raise OSError('seccomp: cannot load the filter')
    finally:
        lib.seccomp_release(context)
    return ''


def drop_privileges(uid: int, gid: int) -> None:
    """Becomes `uid`:`gid` for good: no supplementary groups, no capabilities
    (they go with the switch away from uid 0), no new privileges on exec.
    Every thread of the process switches (glibc applies set*id to all)."""
    import ctypes  # pylint: disable=g-import-not-at-top
    pr_set_no_new_privs = 38
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_no_new_privs, 1, 0, 0, 0):
        raise OSError(ctypes.get_errno(), 'prctl(PR_SET_NO_NEW_PRIVS) failed')
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError(f'still uid {os.geteuid()} after dropping to {uid}')


def main() -> None:
    proto_out = os.fdopen(os.dup(1), 'w', encoding='utf-8')
    os.dup2(2, 1)  # Stray writes to fd 1 go to the log, never the protocol.
    sys.stdout = sys.stderr
    t0 = time.perf_counter()
    init = json.loads(sys.stdin.readline())
    if init.get('parent_pid'):
        die_with_parent(int(init['parent_pid']))
    set_process_limits(init['limits'])
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_enable_compilation_cache', False)

    def reply(obj: dict[str, Any]) -> None:
        proto_out.write(base.dumps(obj) + '\n')
        proto_out.flush()

    def report_validation(step: int, predictions: Any) -> bool:
        reply({'val': {'step': int(step),
                       'predictions': base.arrays_to_json(predictions)}})
        return bool(json.loads(sys.stdin.readline())['best'])

    worker = Worker(init, report_validation)
    if init.get('run_as'):
        drop_privileges(*init['run_as'])

    # No device is touched before the program arrives: a spare worker starts
    # while the previous one still holds the devices.
    reply({'ready': True, 'startup_s': time.perf_counter() - t0})
    line = sys.stdin.readline()
    if line:
        job = json.loads(line)
        platform = jax.devices()[0].platform  # The backend starts now.
        install_syscall_filter(platform)
        try:
            reply(worker.run(job['source'], int(job['seed']),
                             bool(job.get('build_only'))))
        except ValueError as e:  # e.g. a number that is not finite
            reply({'result': base.EvalResult(
                Status.CRASH, f'unreportable result: {_describe(e)}',
                base.source_sha256(job['source'])).to_json()})
    # No atexit handlers, no joining threads a program may have left.
    os._exit(0)  # pylint: disable=protected-access


if __name__ == '__main__':
    main()
