"""The OS layer of the sandbox, tested as a program that got past every
in-process guard would meet it.

Each probe runs plain Python (no validator, no audit hook, no import hook)
in exactly the sandbox a worker gets (`isolation.wrap`, the worker's
environment, and the worker's privilege drop when the tests run as root),
and tries to reach outside. Then the real pool and CLI are killed in every
way a search can die, and no process of theirs may survive.

The tests skip where bubblewrap is missing, except under CI (CI=true), which
installs it: there they fail.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from evoprompting import devices
from evoprompting.sandbox import isolation, pool
from evoprompting.tasks import mnist1d

UID = pool.WorkerConfig().user()
ISOLATION = isolation.detect(require_os_sandbox=False)
if os.environ.get('CI') == 'true':
    # CI installs bubblewrap: the OS layer must be there.
    assert ISOLATION.level == isolation.OS, ISOLATION.detail
pytestmark = pytest.mark.skipif(ISOLATION.level != isolation.OS,
                                reason=f'no OS sandbox: {ISOLATION.detail}')
_DROP = ('from evoprompting.sandbox import runner\n'
         f'runner.drop_privileges({UID.uid}, {UID.gid})\n'
         if os.geteuid() == 0 else '')


def escaped(code: str, *, extra_env=None, timeout=60) -> subprocess.CompletedProcess:
    """Runs `code` as an escaped program: in a worker's sandbox, unguarded."""
    env = pool.worker_env(devices.CPU_WORKER, isolation.OS)
    env.update(extra_env or {})
    argv = isolation.wrap(
        [sys.executable, '-c', _DROP + textwrap.dedent(code)],
        isolation=ISOLATION, env=env,
        read_only=(pool._CODE_ROOT, *isolation.python_paths()))  # pylint: disable=protected-access
    return subprocess.run(argv, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def canary_dir():
    """A folder anyone may write, outside /tmp."""
    folder = tempfile.mkdtemp(prefix='evoprompting-canary-', dir='/var/tmp')
    os.chmod(folder, 0o777)
    yield folder
    subprocess.run(['rm', '-rf', folder], check=False)


def test_unprivileged_on_the_host():
    out = escaped('''
        import os
        print(os.getuid(), os.geteuid(), os.getgroups())
        try:
            open('/etc/shadow').read()
            print('READ')
        except OSError as e:
            print('denied', e.errno)
        print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])
        ''')
    ids, denied, caps = out.stdout.splitlines()[:3]
    uid, euid, groups = ids.split(' ', 2)
    expected = str(UID.uid if os.geteuid() == 0 else os.geteuid())
    assert (uid, euid) == (expected, expected), out
    if os.geteuid() == 0:
        assert groups == '[]'
    assert denied.startswith('denied'), out.stdout
    assert int(caps, 16) == 0


def test_filesystem_is_read_only_and_tmp_private(canary_dir):
    target = os.path.join(canary_dir, 'escaped')
    host_tmp = tempfile.NamedTemporaryFile(prefix='evoprompting-host-',
                                           dir='/tmp')
    out = escaped(f'''
        import os
        for path in ({target!r}, {os.path.join(pool._CODE_ROOT, 'escaped')!r},  # pylint: disable=protected-access
                     '/var/tmp/escaped-anywhere', '/dev/shm/fill', '/dev/fill'):
            try:
                open(path, 'w').write('x')
                print('WROTE', path)
            except OSError as e:
                print('refused', e.errno)
        open('/dev/null', 'w').write('x')  # Devices stay usable.
        open('/tmp/private', 'w').write('x')
        print(sorted(os.listdir('/tmp')))
        ''')
    host_tmp.close()
    assert 'WROTE' not in out.stdout, out
    assert out.stdout.count('refused') == 5, out
    listing = out.stdout.splitlines()[-1]
    assert "'private'" in listing
    assert os.path.basename(host_tmp.name) not in listing  # The host's /tmp.
    assert not os.path.exists(target)
    assert not os.path.exists('/tmp/private')


def test_syscall_filter_denies_exec_sockets_ptrace_namespaces_processes():
    out = escaped('''
        import ctypes, errno, os, socket, threading, time
        from evoprompting.sandbox import runner
        results = {}
        def later():  # A thread that exists before the filter.
            time.sleep(1)
            try:
                socket.socket()
                results['thread socket'] = 'ALLOWED'
            except OSError as e:
                results['thread socket'] = errno.errorcode[e.errno]
        thread = threading.Thread(target=later)
        thread.start()
        print('filter:', repr(runner.install_syscall_filter('cpu')))
        libc = ctypes.CDLL(None, use_errno=True)
        for name, call in (
                ('socket', lambda: socket.socket()),
                ('exec', lambda: os.execv('/bin/true', ['true'])),
                ('ptrace', lambda: libc.ptrace(16, os.getppid(), 0, 0)),
                ('unshare', lambda: libc.unshare(0x10000000)),
                ('fork', os.fork),
                ('posix_spawn', lambda: os.posix_spawn(
                    '/bin/true', ['true'], {})),
                ('memfd', lambda: os.memfd_create('m')),
                ('mkfifo', lambda: os.mkfifo('/tmp/fifo'))):
            try:
                value = call()
                results[name] = ('ALLOWED' if value != -1 else
                                 errno.errorcode[ctypes.get_errno()])
            except OSError as e:
                results[name] = errno.errorcode[e.errno]
        thread.join()
        # Threads are still allowed: XLA:CPU starts its pools lazily.
        late = threading.Thread(target=lambda: results.update(late='ran'))
        late.start()
        late.join()
        import jax.numpy as jnp
        results['jax'] = float(jnp.ones((256, 256)).dot(jnp.ones(256)).sum())
        print(sorted(results.items()))
        ''')
    assert "filter: ''" in out.stdout, out
    assert 'ALLOWED' not in out.stdout, out.stdout
    for name in ('exec', 'ptrace', 'socket', 'thread socket', 'unshare',
                 'fork', 'posix_spawn', 'memfd', 'mkfifo'):
        assert f"('{name}', 'EPERM')" in out.stdout, out.stdout
    assert "('late', 'ran')" in out.stdout and "('jax', 65536.0)" in out.stdout


def test_no_network():
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        out = escaped(f'''
            import socket
            for host in ('127.0.0.1', '8.8.8.8'):
                try:
                    socket.create_connection((host, {port}), timeout=2)
                    print('CONNECTED', host)
                except OSError as e:
                    print('refused', host)
            ''')
    finally:
        listener.close()
    assert 'CONNECTED' not in out.stdout, out
    assert out.stdout.count('refused') == 2


def test_parent_secrets_and_private_folders_are_hidden(monkeypatch):
    monkeypatch.setenv('EVOPROMPTING_TEST_SECRET_TOKEN', 'hunter2')
    out = escaped('''
        import os
        print(sorted(k for k in os.environ if 'SECRET' in k or 'TOKEN' in k))
        print(os.path.exists(os.path.expanduser('~root/.bash_history')))
        ''')
    assert out.stdout.split('\n')[:2] == ['[]', 'False'], out


@pytest.mark.skipif(os.geteuid() != 0, reason='the process limit is set for '
                    'the sandbox user, which root runs workers as')
def test_process_count_limit_binds():
    out = escaped('''
        import os, resource
        resource.setrlimit(resource.RLIMIT_NPROC, (20, 20))
        children = 0
        try:
            for _ in range(200):
                if os.fork() == 0:
                    import time
                    time.sleep(30)
                    os._exit(0)
                children += 1
        except OSError as e:
            print('stopped at', children)
        ''')
    assert 'stopped at' in out.stdout, out
    assert int(out.stdout.split()[-1]) < 20


def _cmdline(pid: int) -> bytes:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read()
    except OSError:
        return b''


def _alive(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmdline = f.read()
            with open(f'/proc/{pid}/stat') as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != 'Z':
            pids.append(int(pid))
    return pids


def _sandboxed(cache: str) -> list[int]:
    """Pids of live processes whose environment names `cache` (workers get
    $EVOPROMPTING_CACHE, a marker a test makes unique)."""
    found = []
    for pid in _alive('evoprompting.sandbox.runner'):
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                if cache.encode() in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def _wait_gone(marker: str, seconds: float = 30.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while _alive(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(marker)


def test_detached_processes_die_with_the_sandbox():
    marker = f'evoprompting-orphan-{os.getpid()}-{time.monotonic_ns()}'
    env = pool.worker_env(devices.CPU_WORKER, isolation.OS)
    code = _DROP + textwrap.dedent(f'''
        import subprocess, time
        subprocess.Popen(['setsid', 'sh', '-c', 'sleep 600; : {marker}'],
                         start_new_session=True)
        subprocess.Popen(['sh', '-c', 'nohup sh -c "sleep 600; : {marker}" &'])
        time.sleep(600)
        ''')
    argv = isolation.wrap([sys.executable, '-c', code], isolation=ISOLATION,
                          env=env, read_only=(pool._CODE_ROOT,  # pylint: disable=protected-access
                                              *isolation.python_paths()))
    proc = subprocess.Popen(argv, start_new_session=True)

    def detached():
        return [p for p in _alive(marker) if _cmdline(p).startswith(b'sh\0')]

    deadline = time.monotonic() + 30
    while len(detached()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(detached()) == 2, 'the probe did not start its processes'
    os.kill(proc.pid, signal.SIGKILL)  # Only the bwrap process we started.
    proc.wait()
    left = _wait_gone(marker)
    assert left == [], [_cmdline(p) for p in left]


@pytest.mark.parametrize('delay_s', [0.0, 0.05, 0.5, 3.0])
def test_a_worker_killed_at_any_point_leaves_nothing(monkeypatch, delay_s):
    # The pool's kill does not depend on bwrap having finished its set-up.
    cache = tempfile.mkdtemp(prefix='evoprompting-kill-', dir='/var/tmp')
    os.chmod(cache, 0o755)
    monkeypatch.setenv('EVOPROMPTING_CACHE', cache)
    task = mnist1d.Mnist1dTask()
    try:
        with pool.WorkerPool(task, allowed_modules=['jax']) as p:
            for _ in range(3):
                worker = p._start(0)  # pylint: disable=protected-access
                time.sleep(delay_s)
                worker.kill()
                deadline = time.monotonic() + 10
                while _sandboxed(cache) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert _sandboxed(cache) == []
    finally:
        subprocess.run(['rm', '-rf', cache], check=False)


_LOOP = textwrap.dedent('''
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            n = 0
            while True:
                n += 1
            return nn.Dense(10)(x)
''')


@pytest.mark.parametrize('how', ['SIGKILL', 'SIGTERM', 'SIGINT'])
def test_workers_die_with_the_cli(tmp_path, how):
    program = tmp_path / 'loop.py'
    program.write_text(_LOOP)
    # The workers' environment carries the cache folder: a unique marker.
    cache = tempfile.mkdtemp(prefix=f'evoprompting-{how}-', dir='/var/tmp')
    os.chmod(cache, 0o755)
    env = {**os.environ, 'EVOPROMPTING_CACHE': cache}
    cli = subprocess.Popen(
        [sys.executable, '-m', 'evoprompting.evaluate', '--task=mnist1d',
         f'--program={program}', '--json',
         '--gin_bindings=mnist1d.TrainConfig.num_steps = 20',
         '--gin_bindings=mnist1d.TrainConfig.eval_every = 10',
         '--gin_bindings=mnist1d.TrainConfig.steps_per_call = 1'],
        cwd=pool._CODE_ROOT, env=env, stdout=subprocess.PIPE,  # pylint: disable=protected-access
        stderr=subprocess.PIPE,
        # As from a terminal: a background job may have inherited SIGINT
        # ignored, and then Python installs no Ctrl-C handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def workers():
        return _sandboxed(cache)

    deadline = time.monotonic() + 120
    while len(workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # The running worker and its slot's spare (and,
        # under the OS sandbox, their bwrap processes).
    try:
        assert len(workers()) >= 2, cli.stderr.read1().decode()
        sent = time.monotonic()
        cli.send_signal(getattr(signal, how))
        cli.wait(timeout=30)
        # The running program is killed, not waited for.
        assert time.monotonic() - sent < 10
        deadline = time.monotonic() + 10
        while workers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert workers() == []
    finally:
        cli.kill()
        subprocess.run(['rm', '-rf', cache], check=False)
