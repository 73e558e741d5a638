"""The operating-system layer of the sandbox: bubblewrap under an unprivileged uid.

`detect(require_os_sandbox)` says once per process which isolation worker
processes get, and `wrap(argv, ...)` turns a worker's command line into the
command that starts it under that isolation.

`os` isolation (bubblewrap, `bwrap`, as Flatpak uses it):
  * an unprivileged uid *as the host sees it*. Started by root, bwrap builds
    the sandbox with root's rights and no user namespace; the worker reads
    its data as root, then drops for good to its own `SandboxUser` (a uid
    of no account, one per worker: no groups, no capabilities, no new
    privileges) before any program runs (`evoprompting.sandbox.runner.drop_privileges`). A uid set
    inside a user namespace that root creates would still be root on the
    host (it can read /etc/shadow, and RLIMIT_NPROC does not bind it).
    Started by another user, bwrap runs unprivileged in a user namespace as
    that user;
  * new PID, IPC, UTS, cgroup and network namespaces (no network at all:
    only a loopback device that nothing listens on);
  * the whole filesystem read-only, /tmp a private size-capped tmpfs that is
    the worker's only writable place, /dev minimal plus the device nodes of
    the worker's own accelerators, a fresh /proc;
  * `--die-with-parent` and its own PID namespace: when the parent dies
    (however: SIGTERM, SIGKILL, Ctrl-C) or kills the worker, every process
    the program started goes with it, `setsid` or not;
  * a new session (no terminal to inject keystrokes into).
  The folders a worker reads (the code, the Python installation, the task's
  data) keep their paths: each one that /tmp or a folder the sandbox user
  cannot enter (such as /root) would hide is bound read-only at its own path
  over an empty tmpfs that replaces the hiding folder, so the rest of that
  folder stays out of sight.

`process` isolation (bubblewrap missing, or namespaces refused by the host):
the worker runs as a plain child process with the in-process guards and
rlimits only. Started by root, it still drops to its `SandboxUser` where the
code and Python are reachable for that user (else it stays root, and the
isolation's detail says so). It dies with its parent (PR_SET_PDEATHSIG, set
by the worker), but processes it detaches can outlive it, and it sees the
network and the whole filesystem. Callers say so loudly;
`require_os_sandbox` makes it an error.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import functools
import os
import shutil
import stat
import subprocess
import sys
from typing import Mapping, Sequence

OS, PROCESS = 'os', 'process'

INSTALL_HINT = ('install bubblewrap (Debian/Ubuntu: `apt-get install '
                'bubblewrap`; Fedora: `dnf install bubblewrap`) and make sure '
                'unprivileged user namespaces are enabled')


class IsolationError(RuntimeError):
    """The OS sandbox is required but cannot be used here."""


@dataclasses.dataclass(frozen=True)
class SandboxUser:
    """The host uid and gid that run a worker when the parent runs as root."""

    uid: int
    gid: int


@dataclasses.dataclass(frozen=True)
class Isolation:
    """Which isolation workers get, and why.

    Attributes:
      level: `OS` or `PROCESS`.
      detail: one line for people: the tool and uid, or why not.
    """

    level: str
    detail: str

    @property
    def warning(self) -> str:
        """A loud line for the console when the OS layer is missing, else ''."""
        if self.level == OS:
            return ''
        return (f'WARNING: sandbox workers run WITHOUT OS isolation '
                f'({self.detail}): generated code is contained only by '
                f'in-process guards and rlimits. To fix: {INSTALL_HINT}.')

    def to_json(self) -> dict[str, str]:
        return {'level': self.level, 'detail': self.detail}


@functools.lru_cache(maxsize=None)
def _probe() -> Isolation:
    bwrap = shutil.which('bwrap')
    if bwrap is None:
        return Isolation(PROCESS, 'bubblewrap (bwrap) is not installed')
    argv = wrap([sys.executable, '-c', ''], isolation=Isolation(OS, ''),
                env={}, read_only=python_paths())
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Isolation(PROCESS, f'bubblewrap failed to start: {e}')
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ['no message'])[-1]
        return Isolation(PROCESS, f'bubblewrap cannot create namespaces here '
                                  f'({reason})')
    who = ('a uid of its own per worker' if os.geteuid() == 0
           else f'uid {os.geteuid()} (this user)')
    return Isolation(OS, f'bubblewrap, {who}, no network, read-only '
                         f'filesystem, own PID namespace, {_seccomp()}')


def _seccomp() -> str:
    """Whether workers can install their seccomp filter."""
    if ctypes.util.find_library('seccomp'):
        return 'seccomp filter'
    return 'no seccomp filter (libseccomp is not installed)'





def detect(require_os_sandbox: bool) -> Isolation:
    """The isolation this host gives workers (probed once per process).

    Raises:
      IsolationError: `require_os_sandbox` and the OS layer is unavailable.
    """
    isolation = _probe()
    if require_os_sandbox and isolation.level != OS:
        raise IsolationError(
            f'the OS sandbox is required (require_os_sandbox) but unavailable: '
            f'{isolation.detail}. To fix: {INSTALL_HINT}.')
    return isolation


def python_paths() -> tuple[str, ...]:
    """The folders this Python installation reads: sys.prefix, the base
    installation, and where the interpreter binary really is."""
    exe_dir = os.path.dirname(os.path.realpath(sys.executable))
    return tuple(dict.fromkeys((sys.prefix, sys.base_prefix, exe_dir)))


def _hiding_folder(path: str) -> str:
    """The folder that hides `path` from the sandbox user ('' if none): /tmp
    (a private tmpfs inside), or the topmost ancestor others cannot enter."""
    parts = path.strip(os.sep).split(os.sep)
    for i in range(1, len(parts)):
        folder = os.sep + os.path.join(*parts[:i])
        if folder == '/tmp':
            return folder
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return folder
        except OSError:
            return ''
    return ''


def reachable_by_others(path: str) -> bool:
    """Whether a user other than the owner can reach `path` (every folder
    on the way lets others through), as a worker dropped to the sandbox
    user must without the OS sandbox to bind it."""
    parts = os.path.realpath(path).strip(os.sep).split(os.sep)
    for i in range(1, len(parts) + 1):
        try:
            mode = os.stat(os.sep + os.path.join(*parts[:i])).st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
    return True


def _read_only_mounts(paths: Sequence[str]) -> list[str]:
    """bwrap arguments that make each of `paths` visible at its own path."""
    covers, binds = set(), []
    for path in sorted({os.path.realpath(p) for p in paths if p}):
        folder = _hiding_folder(path)
        if folder and not any(path.startswith(b + os.sep) for _, b in binds):
            covers.add(folder)
            binds.append((folder, path))
    args = []
    for folder in sorted(covers - {'/tmp'}):
        args += ['--tmpfs', folder]
    made = set()
    for folder, path in binds:
        # bwrap would make the folders between the cover and the bind 0700.
        parts = os.path.relpath(os.path.dirname(path), folder).split(os.sep)
        for i in range(len(parts)):
            between = os.path.join(folder, *parts[:i + 1])
            if parts[0] != '.' and between not in made:
                made.add(between)
                args += ['--perms', '0755', '--dir', between]
        args += ['--ro-bind', path, path]
    return args


def wrap(argv: Sequence[str], *, isolation: Isolation,
         env: Mapping[str, str], read_only: Sequence[str] = (),
         hidden: Sequence[str] = (), tmp_mb: int = 256,
         device_nodes: Sequence[str] = ()) -> list[str]:
    """The command that runs `argv` under `isolation`.

    Under `os` isolation `env` is the worker's whole environment (the
    parent's is cleared), /tmp (the worker's scratch space, also its working
    folder) is a private tmpfs of `tmp_mb` MB, every path in `read_only` is
    visible at its own path, and every folder in `hidden` is replaced by an
    empty one (even inside a `read_only` folder); /dev holds the standard
    nodes and `device_nodes`, and nothing can be created in it. Under `process` isolation
    `argv` is returned as it is; the caller gives the process `env` itself.
    """
    if isolation.level != OS:
        return list(argv)
    cmd = [shutil.which('bwrap') or 'bwrap', '--unshare-pid', '--unshare-net',
           '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try']
    if os.geteuid() != 0:
        cmd += ['--unshare-user', '--disable-userns']
    cmd += ['--die-with-parent', '--new-session', '--ro-bind', '/', '/',
            '--dev', '/dev', '--proc', '/proc', '--perms', '1777',
            '--size', str(tmp_mb << 20), '--tmpfs', '/tmp']
    for node in device_nodes:
        cmd += ['--dev-bind', node, node]
    # Devices stay usable; /dev/shm, an uncapped tmpfs, is not writable.
    cmd += ['--remount-ro', '/dev']
    cmd += _read_only_mounts(read_only)
    for folder in hidden:
        if os.path.isdir(folder):
            cmd += ['--tmpfs', os.path.realpath(folder)]
    cmd += ['--chdir', '/tmp', '--clearenv']
    for key, value in sorted(env.items()):
        cmd += ['--setenv', key, value]
    return [*cmd, '--', *argv]
