"""A search over two local processes (jax.distributed on CPU): it records what
one process records, a killed process stops the other with an error, and the
same command resumes and finishes."""

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from evoprompting import distributed, gin_utils, store
from evoprompting.sandbox import evaluator
from evoprompting.tasks import mnist1d

SEEDS = ('mlp', 'gru', 'greydanus_cnn')


def _args(workdir, seeds_dir):
    # The embedded LM: some children train, so the driver tunes and saves
    # its soft prompt between rounds.
    return ['--gin_file=gin/mnist1d/quick.gin',
            f"--gin_bindings=mnist1d.Mnist1dTask.seeds_dir = '{seeds_dir}'",
            '--gin_bindings=ROUNDS = 2', '--gin_bindings=PROMPTS = 2',
            '--gin_bindings=SAMPLES = 2',
            '--gin_bindings=mnist1d.TrainConfig.num_steps = 16',
            '--gin_bindings=mnist1d.TrainConfig.eval_every = 8',
            '--gin_bindings=search.SearchConfig.alpha = 0.95',
            # One temperature, not greedy (greedy children copy a parent,
            # and duplicates never train): with the same keys, process 0
            # samples what a single process samples.
            '--gin_bindings=crossmut.CrossMutConfig.temperature_choices = (0.8,)',
            f'--workdir={workdir}']


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _start(args, process_id=None, port=None, log=None):
    cluster = [] if process_id is None else [
        f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
        f'--process_id={process_id}', '--heartbeat_timeout_s=5']
    return subprocess.Popen(
        [sys.executable, '-m', 'evoprompting.main', *args, *cluster],
        cwd=gin_utils.REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        text=True)


# Process 1 with an LM that cannot load (a batch size that is no number):
# it evaluates and never builds one.
NO_LM = ["--gin_bindings=checkpoints.load_default.batch_size = 'no number'"]


def _two_processes(args, tmp_path, name, kill_process_1=False, other_args=()):
    """Runs both processes (process 1 with `other_args` too); (return codes,
    process 0's output)."""
    port = _free_port()
    logs = [open(tmp_path / f'{name}.p{i}.log', 'w+') for i in (0, 1)]
    procs = [_start(args + list(other_args) * i, i, port, logs[i])
             for i in (0, 1)]
    if kill_process_1:
        # Killed once it serves, before its first result: process 0 cannot
        # finish the seeds without it.
        deadline = time.monotonic() + 120
        while 'evaluates for process 0' not in (tmp_path / f'{name}.p1.log'
                                                ).read_text():
            assert time.monotonic() < deadline and procs[1].poll() is None
            time.sleep(0.05)
        procs[1].kill()
    codes = [p.wait(timeout=300) for p in procs]
    for log in logs:
        log.close()
    return codes, (tmp_path / f'{name}.p0.log').read_text()


def _record(workdir):
    return sorted((c.round, c.proposal, c.source, c.result.status.value)
                  for c in store.read_candidates(str(workdir)))


def test_two_processes_record_what_one_does_and_survive_a_kill(tmp_path):
    seeds = tmp_path / 'my_seeds'
    seeds.mkdir()
    for name in SEEDS:
        shutil.copy(os.path.join(gin_utils.REPO_ROOT, 'seeds', 'mnist1d',
                                 f'{name}.py'), seeds)
    one = _start(_args(tmp_path / 'one', seeds))
    assert one.wait(timeout=600) == 0

    args = _args(tmp_path / 'two', seeds)
    start = time.monotonic()
    codes, out = _two_processes(args, tmp_path, 'killed', kill_process_1=True)
    assert codes[1] != 0 and codes[0] != 0, out
    assert 'another task died' in out or 'unhealthy' in out, out[-3000:]
    assert time.monotonic() - start < 180
    assert not store.is_finished(str(tmp_path / 'two'))

    # The same command again resumes and finishes.
    codes, out = _two_processes(args, tmp_path, 'resumed', other_args=NO_LM)
    assert codes == [0, 0], out[-3000:]
    assert 'Process 0 of 2: drives the search' in out
    assert store.is_finished(str(tmp_path / 'two'))
    two = _record(tmp_path / 'two')
    assert len({(r, p) for r, p, _, _ in two}) == len(two)  # Each once.
    assert two == _record(tmp_path / 'one')
    assert [s for r, _, _, s in two if r == -1] == ['ok'] * len(SEEDS)
    # Children trained on both processes.
    assert sum(s == 'ok' for r, _, _, s in two if r >= 0) >= 2


def test_process_0_failing_before_any_work_stops_the_others_with_its_error(
        tmp_path):
    """Here its workdir is in use: process 1 exits with that message at
    once, not by a heartbeat abort."""
    workdir = tmp_path / 'busy'
    workdir.mkdir()
    args = _args(workdir, tmp_path / 'unused')
    with open(workdir / '.lock', 'w') as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        codes, out = _two_processes(args, tmp_path, 'busy')
    other = (tmp_path / 'busy.p1.log').read_text()
    assert codes == [1, 1], out[-2000:] + other[-2000:]
    assert 'another evoprompting.main is running on' in out
    assert ('error: process 0 stopped: WorkdirBusy: another evoprompting.main '
            'is running on') in other


class _KeyValueStore:
    """The coordination service's key-value store, in memory (its two calls:
    a set that refuses reused keys, a get that waits for a key)."""

    def __init__(self):
        self.values, self.changed = {}, threading.Condition()

    def key_value_set(self, key, value):
        with self.changed:
            assert key not in self.values, f'ALREADY_EXISTS: {key}'
            self.values[key] = value
            self.changed.notify_all()

    def blocking_key_value_get(self, key, timeout_ms):
        with self.changed:
            assert self.changed.wait_for(lambda: key in self.values,
                                         timeout_ms / 1000)
            return self.values[key]


def test_host_files_land_in_each_process_own_data_folder(tmp_path):
    service = _KeyValueStore()
    driver = distributed.Cluster(0, 2, service)
    other = distributed.Cluster(1, 2, service)
    here, there = (mnist1d.Mnist1dTask(data=mnist1d.DataConfig(
        cache_dir=str(tmp_path / name))) for name in ('here', 'there'))
    distributed.share_host_files(driver, here)
    distributed.share_host_files(other, there)
    seed_file = os.path.join('mnist1d', mnist1d.PRIVATE_SEED_FILE)
    assert ((tmp_path / 'there' / seed_file).read_text()
            == (tmp_path / 'here' / seed_file).read_text())
    assert os.stat(tmp_path / 'there' / seed_file).st_mode & 0o777 == 0o600
    # Another host's own private data is an error, not silently kept.
    (tmp_path / 'there' / seed_file).write_text('7\n')
    service = _KeyValueStore()
    distributed.share_host_files(distributed.Cluster(0, 2, service), here)
    with pytest.raises(distributed.ClusterError, match='differs from process 0'):
        distributed.share_host_files(distributed.Cluster(1, 2, service), there)


def test_stop_others_is_sent_once():
    service = _KeyValueStore()
    driver = distributed.Cluster(0, 2, service)
    driver.stop_others('KeyboardInterrupt: ')
    driver.stop_others('again')  # A second stop (the sandbox's) is a no-op.
    with pytest.raises(distributed.ClusterError,
                       match='process 0 stopped: KeyboardInterrupt'):
        distributed.serve(None, distributed.Cluster(1, 2, service))


def test_an_error_on_another_process_stops_process_0(tmp_path):
    """serve() sends its error; process 0 raises it instead of waiting."""
    task = mnist1d.Mnist1dTask(data=mnist1d.DataConfig(
        cache_dir=str(tmp_path / 'cache')))
    service = _KeyValueStore()
    with evaluator.Sandbox(task) as local:
        cluster = distributed.ClusterSandbox(local, distributed.Cluster(
            0, 2, service))

        class Failing:
            def evaluate(self, *args, **kwargs):
                raise RuntimeError('out of disk')

        serving = threading.Thread(target=lambda: pytest.raises(
            RuntimeError, distributed.serve, Failing(),
            distributed.Cluster(1, 2, service)))
        serving.start()
        # Programs the validator refuses: they never reach a worker.
        with pytest.raises(distributed.ClusterError,
                           match='process 1: RuntimeError: out of disk'):
            cluster.evaluate(['x = (', 'y = ('], [0, 0])
        serving.join(timeout=30)
        assert not serving.is_alive()


_CHECKPOINT_ON_PROCESS_0 = textwrap.dedent('''
    import sys
    import jax
    import numpy as np
    process_id, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(f'127.0.0.1:{port}', 2, process_id)
    assert len(jax.devices()) == 2  # Every process starts its backend.
    from lm import checkpoints
    if process_id == 0:  # Like the LM's soft prompt: one process's arrays.
        tree = {'soft_prompt': jax.device_put(np.arange(6.0).reshape(2, 3),
                                              jax.local_devices()[0])}
        manager = checkpoints.CheckpointManager(folder, max_to_keep=2)
        manager.save(1, tree)
        back = manager.restore(1, jax.eval_shape(lambda: tree))
        assert np.array_equal(back['soft_prompt'], tree['soft_prompt'])
        manager.close()
    print('OK', flush=True)
''')


def test_one_process_checkpoints_without_the_others(tmp_path):
    """Orbax waits for every process at its barriers unless told the
    checkpoints are one process's own (the LM runs on process 0 alone)."""
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, '-c', _CHECKPOINT_ON_PROCESS_0, str(i), str(port),
         str(tmp_path / 'ckpt')], env=dict(os.environ, JAX_PLATFORMS='cpu'),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in (0, 1)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and 'OK' in out, err[-3000:]
