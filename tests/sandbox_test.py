"""End-to-end tests of the sandbox: hostile and broken programs in real workers.

Each program goes through the real validator and a real worker subprocess
with a tiny training budget. Every one must get the right status and a message
naming the cause, leave no side effect (canary files), and leave the parent
able to evaluate the next program.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import textwrap

import numpy as np
import pytest

from evoprompting import devices
from evoprompting.sandbox import evaluator, isolation, pool, validator
from evoprompting.tasks import base, mnist1d

S = base.Status
TINY = mnist1d.TrainConfig(num_steps=16, eval_every=8, steps_per_call=1)
LIMITS = pool.Limits(wall_s=60, cpu_s=120, memory_mb=6144, startup_s=300,
                     output_chars=500)
MLP = textwrap.dedent('''
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(nn.relu(nn.Dense(16)(x)))
''')


def model(body: str, header: str = '') -> str:
    """A Model whose __call__ runs `body` (indented 8) before a Dense(10)."""
    return header + textwrap.dedent('''
        class Model(nn.Module):
            @nn.compact
            def __call__(self, x):
        ''') + textwrap.indent(textwrap.dedent(body).rstrip('\n') + '\n',
                               ' ' * 8) + '        return nn.Dense(10)(x)\n'


@pytest.fixture(scope='module')
def task(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp('cache'))
    return mnist1d.Mnist1dTask(data=mnist1d.DataConfig(cache_dir=cache),
                               train=TINY, max_params=200_000)


@pytest.fixture(scope='module')
def config():
    return pool.WorkerConfig(require_os_sandbox=os.environ.get('CI') == 'true')


@pytest.fixture(scope='module')
def sandbox(task, config):
    with evaluator.Sandbox(task, limits=LIMITS, config=config) as s:
        yield s


@pytest.fixture(scope='module')
def bare_pool(task, config):
    """Workers reached without the validator, whose import hook also admits
    os/subprocess/socket/pathlib/ctypes: the worker's own run-time guards are
    all that stands between these programs and the machine."""
    modules = validator.DEFAULT_POLICY.allowed_modules | {
        'os', 'subprocess', 'socket', 'pathlib', 'ctypes', 'json'}
    with pool.WorkerPool(task, allowed_modules=modules, limits=LIMITS,
                         config=config) as p:
        yield p


def evaluate(sandbox, source, seed=0):
    return sandbox.evaluate([source], [seed])[0]


def test_seeds_evaluate_ok_with_documented_sizes(sandbox, task):
    sizes = {'greydanus_cnn': 5210, 'residual_cnn': 91082, 'gru': 5110,
             'mlp': 15210}
    seeds = task.seed_programs()
    assert sorted(s.name for s in seeds) == sorted(sizes)
    results = sandbox.evaluate([s.source for s in seeds], [0] * len(seeds))
    for seed, result in zip(seeds, results):
        assert result.status == S.OK, (seed.name, result.message)
        assert result.params == sizes[seed.name]
        assert f'{sizes[seed.name]:,} parameters' in seed.source
        assert 0.0 <= result.metrics['val_accuracy'] <= 1.0
        assert result.metrics['best_step'] in (8, 16)
        assert result.source_sha256 == base.source_sha256(seed.source)


def test_refused_programs_never_start_a_worker(task, config):
    with evaluator.Sandbox(task, limits=LIMITS, config=config) as s:
        results = s.evaluate(['import os\nos.system("true")',
                              'class Model(nn.Module:\n  pass',
                              model('x = eval("x")')], [0, 0, 0])
        assert [r.status for r in results] == [S.FORBIDDEN, S.SYNTAX_ERROR,
                                               S.FORBIDDEN]
        assert "'os'" in results[0].message
        assert 'eval' in results[2].message
        assert s.pool.startup_s == []


@pytest.mark.parametrize('source, status, words', [
    ('x = 1\n', S.BUILD_ERROR, ['no `Model`']),
    ('class Model:\n    pass\n', S.BUILD_ERROR, ['flax.linen.Module']),
    (textwrap.dedent('''
        class Model(nn.Module):
            width: int

            @nn.compact
            def __call__(self, x):
                return nn.Dense(10)(x)
     '''), S.BUILD_ERROR, ['Model()']),
    (model('return nn.Dense(5)(x)\n'), S.BUILD_ERROR,
     ['[128, 5]', '[128, 10]']),
    (model('x = x.reshape((4, -1, 3))\n'), S.BUILD_ERROR,
     ['float32[128, 40]', 'expected logits [128, 10]']),
    (model('raise ValueError("no thanks")\n'), S.BUILD_ERROR,
     ['ValueError', 'no thanks']),
    (model('return jnp.argmax(nn.Dense(10)(x), -1, keepdims=True) * jnp.ones((1, 10), jnp.int32)\n'),
     S.BUILD_ERROR, ['int32', 'floats']),
    (model('pass\n', header='raise RuntimeError("at import")\n'),
     S.BUILD_ERROR, ['RuntimeError', 'at import']),
    (model('x = nn.Dense(100_000)(x)\n'), S.TOO_LARGE,
     ['parameters exceed the cap of 200,000']),
    (model('x = x * jnp.inf\n'), S.NAN, ['non-finite']),
    (model('x = jnp.log(x - 1e9)\n'), S.NAN, ['non-finite']),
    (textwrap.dedent('''
        def f(n):
            return f(n + 1)

        class Model(nn.Module):
            @nn.compact
            def __call__(self, x):
                f(0)
                return nn.Dense(10)(x)
     '''), S.BUILD_ERROR, ['recursion']),
])
def test_broken_programs_get_typed_statuses(sandbox, source, status, words):
    result = evaluate(sandbox, source)
    assert result.status == status, result.message
    for word in words:
        assert word in result.message, result.message


def test_too_large_is_decided_before_training(sandbox):
    result = evaluate(sandbox, model('x = nn.Dense(100_000)(x)\n'))
    assert result.status == S.TOO_LARGE
    assert result.compile_s == 0.0 and result.train_s == 0.0


def test_wall_clock_timeout_then_parent_keeps_going(task, config):
    limits = pool.Limits(wall_s=8, cpu_s=120, memory_mb=6144, startup_s=300)
    with evaluator.Sandbox(task, limits=limits, config=config) as s:
        hang = model('while True:\n    pass\n')
        result = evaluate(s, hang)
        assert result.status == S.TIMEOUT
        assert 'wall-clock limit of 8 s' in result.message
        assert evaluate(s, MLP).status == S.OK
        assert len(s.pool.startup_s) == 2  # The hung worker was replaced.


def test_cpu_time_limit(task, config):
    limits = pool.Limits(wall_s=120, cpu_s=3, memory_mb=6144, startup_s=300)
    with evaluator.Sandbox(task, limits=limits, config=config) as s:
        result = evaluate(s, model('n = 0\nwhile True:\n    n += 1\n'))
        assert result.status == S.TIMEOUT
        assert 'CPU-time limit of 3 s' in result.message
        assert evaluate(s, MLP).status == S.OK


@pytest.mark.parametrize('body', [
    'big = jnp.outer(jnp.arange(60_000.0), jnp.arange(60_000.0)) + x.sum()\n'
    'x = x + jnp.sort(big.ravel())[:40]\n',
    'waste = [0] * (2_000_000_000)\n',
    'waste = np.ones((50_000, 50_000))\n',
])
def test_memory_bombs_are_oom(sandbox, body):
    result = evaluate(sandbox, model(body, header='import numpy as np\n'))
    assert result.status == S.OOM, result.message
    assert 'memory' in result.message.lower()
    assert evaluate(sandbox, MLP).status == S.OK


def test_output_is_captured_and_capped(sandbox):
    result = evaluate(sandbox, model('print("x" * 10_000)\n'))
    assert result.status == S.OK
    assert result.output.startswith('x' * 100)
    assert len(result.output) < 600 and 'more characters' in result.output


def test_same_program_and_seed_give_same_metrics(sandbox):
    first = evaluate(sandbox, MLP, seed=3)
    again = evaluate(sandbox, MLP, seed=3)
    other = evaluate(sandbox, MLP, seed=4)
    assert first.status == again.status == S.OK
    assert first.metrics == again.metrics
    assert first.metrics['final_train_loss'] != other.metrics['final_train_loss']


def _escapes(canary: str) -> list[tuple[str, str]]:
    """Escapes the validator would refuse; the worker must stop each itself."""
    return [
        ('os.system', f'import os\nos.system("touch {canary}")\n'),
        ('subprocess', f'import subprocess\nsubprocess.run(["touch", "{canary}"])\n'),
        ('write', f'import pathlib\npathlib.Path("{canary}").write_text("x")\n'),
        ('os.open', f'import os\nos.open("{canary}", os.O_CREAT | os.O_WRONLY)\n'),
        ('mkdir', f'import os\nos.mkdir("{canary}")\n'),
        ('socket', 'import socket\nsocket.socket().connect(("127.0.0.1", 9))\n'),
        ('ctypes', 'import ctypes\nctypes.CDLL(None).system(b"true")\n'),
        ('fork', 'import os\nos.fork()\n'),
        ('swallowed', textwrap.dedent(f'''
            import pathlib
            try:
                pathlib.Path("{canary}").write_text("x")
            except BaseException:
                pass
            ''')),
    ]


@pytest.fixture
def canary_dir():
    """A folder anyone may write, outside /tmp (a worker's own /tmp is
    private under the OS sandbox, so a canary there would prove nothing)."""
    folder = tempfile.mkdtemp(prefix='evoprompting-canary-', dir='/var/tmp')
    os.chmod(folder, 0o777)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.parametrize('index', range(9))
def test_run_time_guard_blocks_escapes(bare_pool, canary_dir, index):
    canary = os.path.join(canary_dir, 'canary')
    name, body = _escapes(canary)[index]
    result = bare_pool.run_one(body + MLP, 0)
    assert result.status == S.FORBIDDEN, (name, result.status, result.message)
    assert 'blocked at run time' in result.message
    assert not os.path.exists(canary), name
    assert bare_pool.run_one(MLP, 0).status == S.OK


def test_builtins_and_imports_are_restricted_at_run_time(bare_pool):
    # Without the validator, the worker's builtins still lack `open` and its
    # import hook admits only the modules it was given.
    result = bare_pool.run_one('f = open("/etc/hostname")\n' + MLP, 0)
    assert result.status == S.BUILD_ERROR and "'open'" in result.message
    result = bare_pool.run_one('import shutil\n' + MLP, 0)
    assert result.status == S.BUILD_ERROR and "'shutil'" in result.message


def test_native_crash_is_crash_and_worker_is_replaced(bare_pool):
    result = bare_pool.run_one('import os\nos.abort()\n' + MLP, 0)
    assert result.status == S.CRASH
    assert 'SIGABRT' in result.message
    assert bare_pool.run_one(MLP, 0).status == S.OK


def test_parallel_workers_keep_order_and_report_progress(task, config):
    sources = [MLP, 'import os\n' + MLP, model('x = nn.Dense(100_000)(x)\n'),
               MLP.replace('16', '8')]
    seen = {}
    with evaluator.Sandbox(task, limits=LIMITS, config=config,
                           workers=[devices.CPU_WORKER] * 2) as s:
        results = s.evaluate(sources, [0] * 4,
                             on_result=lambda i, r: seen.setdefault(i, r))
        assert len(s.pool.startup_s) == 3  # One fresh worker per program run.
    assert [r.status for r in results] == [S.OK, S.FORBIDDEN, S.TOO_LARGE, S.OK]
    assert results[0].params != results[3].params
    assert seen == dict(enumerate(results))


def test_no_state_reaches_the_next_program(task, config):
    # A suspended generator keeps `jax.enable_x64` entered after the program,
    # and a class attribute set on a library class outlives the module. The
    # next program runs in a fresh process and sees neither.
    leaky = textwrap.dedent('''
        def keep_x64():
            with jax.enable_x64(True):
                yield

        HELD = keep_x64()
        next(HELD)
    ''') + MLP
    probe = model('assert jnp.zeros(1).dtype == jnp.float32\n')
    with evaluator.Sandbox(task, limits=LIMITS, config=config) as s:
        assert evaluate(s, leaky).status == S.OK
        assert evaluate(s, probe).status == S.OK
        assert len(s.pool.startup_s) == 2


# An escaped program that speaks the worker's protocol itself: it writes
# replies to the protocol's file descriptor (os.write is not audited) and
# reads the judge's answers from stdin, then dies before the real worker
# could answer. The judge must not believe a word it cannot check.

def _forger(messages: str) -> str:
    """A program sending `messages` (a Python list expression of dicts;
    'VAL' in one stands for all-zero validation class predictions)."""
    return textwrap.dedent(f'''
        import json
        import os
        import numpy as np
        import jax.numpy as jnp

        class Model(nn.Module):
            @nn.compact
            def __call__(self, x):
                return nn.Dense(10)(x)

        def send(obj):
            text = obj if isinstance(obj, str) else json.dumps(obj)
            line = (text + "\\n").encode()
            for fd in range(3, 10):
                try:
                    os.write(fd, line)
                except OSError:
                    pass

        for message in {messages}:
            send(message)
            if isinstance(message, dict) and "val" in message:
                os.read(0, 100)  # The judge's answer.
        os.abort()
    ''')


def _zeros_npz(rows: int) -> str:
    return base.arrays_to_json({'class': np.zeros(rows, np.int8)})


def test_build_only_counts_parameters_without_training(sandbox, task):
    seeds = task.seed_programs()
    sources = [s.source for s in seeds] + [
        MLP.replace('Dense(10)', 'Dense(7)'),           # Wrong output shape.
        MLP.replace('Dense(16)', 'Dense(100_000)'),     # Over the cap.
        'import os\n' + MLP]                             # Refused.
    built = sandbox.evaluate(sources, [0] * len(sources), build_only=True)
    trained = sandbox.evaluate([s.source for s in seeds], [0] * len(seeds))
    for seed, b, t in zip(seeds, built, trained):
        assert b.status == S.OK, (seed.name, b.message)
        assert b.params == t.params and not b.metrics  # Nothing trained.
        assert b.train_s == 0 and b.isolation == t.isolation
    assert [r.status for r in built[len(seeds):]] == [
        S.BUILD_ERROR, S.TOO_LARGE, S.FORBIDDEN]
    assert 'expected logits [128, 10]' in built[len(seeds)].message


def test_forged_replies_are_not_believed(bare_pool, task):
    splits = mnist1d.load_splits(task.data)
    ok = {'result': {'status': 'ok', 'message': 'perfect', 'source_sha256': '',
                     'params': 1, 'metrics': {'val_accuracy': 0.999,
                                              'test_accuracy': 0.999}}}
    result = bare_pool.run_one(_forger(repr([ok])), 0)
    assert result.status == S.CRASH and 'without predictions' in result.message
    assert not result.metrics

    zeros_val = _zeros_npz(len(splits.val_y))
    zeros_test = _zeros_npz(len(splits.test_y))
    trained = {'param_shapes': [[1]], 'best_step': 8, 'compile_s': 0.0,
               'train_s': 0.0, 'test_predictions': zeros_test}
    # Test predictions with no validation report: nothing was judged.
    result = bare_pool.run_one(_forger(repr([{'trained': trained}])), 0)
    assert result.status == S.CRASH and 'best validation step' in result.message
    # Reported predictions are scored against the labels, whatever is claimed:
    # all zeros score the share of zeros, and a 1-parameter claim is counted.
    val = {'val': {'step': 8, 'predictions': zeros_val}}
    result = bare_pool.run_one(_forger(repr([val, {'trained': trained}])), 0)
    assert result.status == S.OK, result.message
    assert result.metrics['val_accuracy'] == np.mean(splits.val_y == 0)
    assert result.metrics['test_accuracy'] == np.mean(splits.test_y == 0)
    # Claims the judge cannot accept: a report at a step that is not an
    # evaluation point (no label oracle), zero parameters, a count that
    # would overflow int64 (exact, so too large, never negative).
    result = bare_pool.run_one(_forger(repr([
        {'val': {'step': 3, 'predictions': zeros_val}}])), 0)
    assert result.status == S.CRASH and 'evaluation point' in result.message
    for shapes, status in (([[0]], S.CRASH), ([[2**63 - 1, 2]], S.TOO_LARGE)):
        claim = {**trained, 'param_shapes': shapes}
        result = bare_pool.run_one(_forger(repr([val, {'trained': claim}])), 0)
        assert result.status == status, (shapes, result)
    # A build reports no predictions, and trains nothing.
    for forged in ([val], [{'trained': trained}]):
        result = bare_pool.run_one(_forger(repr(forged)), 0, build_only=True)
        assert result.status == S.CRASH and not result.metrics, result
    result = bare_pool.run_one(_forger(repr([
        {'built': {'param_shapes': [[-3]]}}])), 0, build_only=True)
    assert result.status == S.CRASH
    # A reply the parent's JSON parser cannot nest that deep.
    result = bare_pool.run_one(_forger(repr(['[' * 100_000])), 0)
    assert result.status == S.CRASH
    # Malformed evidence is a crash, not a score.
    for bad in ({'val': {'step': 8, 'predictions': 'AAAA'}},
                {'val': {'step': 'eight', 'predictions': zeros_val}},
                {'val': {'step': 8, 'predictions': _zeros_npz(3)}}):
        result = bare_pool.run_one(_forger(repr([bad])), 0)
        assert result.status == S.CRASH, (bad, result)
        assert not result.metrics


def test_workers_never_see_labels(task):
    inputs = task.worker_inputs()
    assert sorted(inputs) == ['test_x', 'train_x', 'train_y', 'val_x']
    # The label cache and the generator are hidden from workers.
    hidden = task.private_paths()
    assert task.data.cache_dir in hidden
    assert any(p.endswith('mnist1d') for p in hidden)


def test_without_bubblewrap_workers_fall_back_loudly(task, monkeypatch, capsys):
    monkeypatch.setattr(isolation, '_probe', lambda: isolation.Isolation(
        isolation.PROCESS, 'bubblewrap (bwrap) is not installed'))
    with evaluator.Sandbox(task, limits=LIMITS) as s:
        assert 'WITHOUT OS isolation' in capsys.readouterr().err
        result = evaluate(s, MLP)
        refused = evaluate(s, 'import os\n' + MLP)
    assert result.status == S.OK and result.isolation == 'process'
    assert refused.status == S.FORBIDDEN and refused.isolation == ''
    with pytest.raises(isolation.IsolationError, match='apt-get install'):
        evaluator.Sandbox(task, config=pool.WorkerConfig(require_os_sandbox=True))


@pytest.mark.skipif(os.geteuid() != 0, reason='workers have uids of their '
                    'own only when the parent is root')
def test_what_a_worker_left_is_reaped_by_its_uid():
    # Under process isolation a detached process escapes the worker's
    # process group; it cannot escape the worker's uid.
    user = pool.WorkerConfig().user(slot=3, turn=1)
    detached = subprocess.Popen(['sleep', '600'], user=user.uid,
                                group=user.gid, start_new_session=True)
    bystander = subprocess.Popen(['sleep', '600'])
    try:
        pool._kill_all_of(user)  # pylint: disable=protected-access
        assert detached.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None
    finally:
        for process in (detached, bystander):
            process.kill()
            process.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason='workers have uids of their '
                    'own only when the parent is root')
def test_pools_alive_at_once_never_share_a_uid(task, config):
    """Two searches on one host (a sweep's parallel runs, the processes of a
    multi-process search): reaping one's worker uid must not kill the
    other's workers."""
    modules = validator.DEFAULT_POLICY.allowed_modules
    make = lambda: pool.WorkerPool(task, allowed_modules=modules,
                                   limits=LIMITS, config=config,
                                   workers=[devices.CPU_WORKER] * 2)
    with make() as one, make() as two:
        assert len(set(one.sandbox_uids)) == 4 == len(set(two.sandbox_uids))
        assert not set(one.sandbox_uids) & set(two.sandbox_uids)
        held = set(one.sandbox_uids)
    with make() as again:  # A closed pool's block is free again.
        assert set(again.sandbox_uids) == held


def test_half_a_reply_cannot_hang_the_parent(task):
    """A worker that writes part of a line and stops is a timeout."""
    limits = pool.Limits(wall_s=5, cpu_s=60, memory_mb=6144, startup_s=300)
    modules = validator.DEFAULT_POLICY.allowed_modules | {'os', 'time'}
    program = textwrap.dedent('''
        import os
        import time
        for fd in range(3, 10):
            try:
                os.write(fd, b'{"val": ')
            except OSError:
                pass
        time.sleep(600)
    ''') + MLP
    with pool.WorkerPool(task, allowed_modules=modules, limits=limits) as p:
        result = p.run_one(program, 0)
    assert result.status == S.TIMEOUT, result
