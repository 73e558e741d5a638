r"""The EvoPrompting binary: parses flags and gin, records the run, calls one function.

Usage (from the repository root):

  python -m evoprompting.main --gin_file=gin/mnist1d/quick.gin --workdir=DIR \
      [--gin_file=MORE.gin ...] [--gin_bindings='mnist1d.TrainConfig.num_steps=500']

Gin files are layered in the order given, then bindings. The operative
configuration is written to DIR/config.gin and versions, devices and the git
revision to DIR/run_metadata.json before any work starts; then the configured
search runs (`evoprompting.search.run`, bound by the gin files).

Run the same command again on the same DIR to resume an interrupted search
(killed, crashed or stopped with Ctrl-C): nothing evaluated is lost or
evaluated again. A DIR that holds a search of another configuration is
refused unless --allow_config_change is given (the previous configuration is
then kept as DIR/config.previous.gin).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from typing import Callable, Iterator

from absl import app, flags, logging
import gin
import jax

from evoprompting import devices, distributed, gin_utils, logs, mirror
from evoprompting import search, store
from evoprompting.sandbox import evaluator, isolation
from lm import partitioning

FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
    'gin_file', None, 'Gin config files, applied in order (e.g. '
    'gin/mnist1d/quick.gin). Relative paths are also looked up in the '
    'repository root.')
flags.DEFINE_multi_string(
    'gin_bindings', [], 'Individual gin bindings applied after the files, '
    "e.g. --gin_bindings='mnist1d.TrainConfig.num_steps=500'.")
flags.DEFINE_string('workdir', None, 'Output folder of the run (created if '
                    'missing): config.gin, run_metadata.json, results.')
flags.DEFINE_bool('allow_config_change', False, 'Resume a workdir even though '
                  'the gin configuration differs from the one it was started '
                  'with (e.g. to add rounds).')
flags.DEFINE_integer('cpu_devices', 0, 'On a CPU-only machine, JAX devices '
                     'the host CPU is split into (0: one per core): the '
                     'in-process LM shards its sampling and tuning batch '
                     'over them. Candidates train in sandbox workers, which '
                     'have their own setting. No effect on accelerators.',
                     lower_bound=0)
flags.DEFINE_string('mirror_to', '', 'Keep a copy of the workdir here, '
                    'updated after every evaluated child: a gs:// URL '
                    '(gcloud storage rsync) or a local folder. On a VM that '
                    'can be preempted, restore the workdir from it and rerun '
                    'to resume (launch/tpu_vm.py does).')
flags.DEFINE_string('coordinator_address', '', 'host:port of process 0, for '
                    'a search over several processes (hosts), as '
                    'jax.distributed takes it.')
flags.DEFINE_integer('num_processes', 1, 'Processes of the search, each '
                     'started with the same command and its own '
                     '--process_id; 0 = detect them (Cloud TPU VM pods). '
                     'Process 0 owns the workdir and drives the search; the '
                     'others evaluate their share of each round.',
                     lower_bound=0)
flags.DEFINE_integer('process_id', 0, 'This process\'s index, 0 to '
                     '--num_processes - 1.', lower_bound=0)
flags.DEFINE_integer('heartbeat_timeout_s', 60, 'With several processes: '
                     'seconds after which a process that stopped sending '
                     'heartbeats is taken for dead, and the others stop with '
                     'an error.', lower_bound=1)
flags.DEFINE_bool('verbose', False, 'Also show the INFO lines of libraries '
                  '(orbax checkpointing, JAX backends); by default only their '
                  'warnings and errors, and this binary\'s own progress.')
flags.mark_flags_as_required(['gin_file', 'workdir'])

_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'gin-config',
             'numpy', 'mnist1d', 'jraph', 'tensorboardX')


def _git_revision() -> str:
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=gin_utils.REPO_ROOT,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def run_metadata() -> dict:
    """Versions, devices and git revision of this run."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'argv': sys.argv,
        'python': sys.version,
        'platform': platform.platform(),
        'packages': versions,
        'devices': [str(d) for d in jax.devices()],
        'git_revision': _git_revision(),
    }


class ConfigChanged(Exception):
    """The workdir holds a run of another gin configuration."""


def write_run_record(workdir: str, *, allow_config_change: bool,
                     extra: dict | None = None) -> None:
    """Writes config.gin (the parsed configuration) and run_metadata.json
    (`run_metadata()` and `extra`; on a resume, the first start is kept as
    `started` and this one is appended to `resumed`).

    Raises:
      ConfigChanged: `workdir` has a config.gin that differs from the current
        configuration and not `allow_config_change`.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, 'config.gin')
    config = gin.config_str()
    if os.path.exists(path):
        with open(path, encoding='utf-8') as f:
            previous = f.read()
        if previous != config:
            if not allow_config_change:
                changed = sorted(set(config.splitlines()) ^ set(previous.splitlines()))
                raise ConfigChanged(
                    f'{workdir} holds a run of another configuration '
                    f'(differing lines: {changed[:6]}). Use another --workdir, '
                    'or pass --allow_config_change to resume it with this one.')
            os.replace(path, os.path.join(workdir, 'config.previous.gin'))
    with open(path, 'w', encoding='utf-8') as f:
        f.write(config)
    record = {**run_metadata(), **(extra or {})}
    path = os.path.join(workdir, 'run_metadata.json')
    if os.path.exists(path):  # A resume: keep the first start, add this one.
        try:
            with open(path, encoding='utf-8') as f:
                previous = json.load(f)
        except ValueError:
            previous = {}
        record['resumed'] = [*previous.get('resumed', []), record['started']]
        record['started'] = previous.get('started', record['started'])
    store.write_json_atomic(path, record)


LOCK_FILE = '.lock'


class WorkdirBusy(Exception):
    """Another search holds the workdir."""


def _lock_workdir(workdir: str) -> int:
    """An exclusive lock on `workdir`, held while this process lives (the
    kernel drops it however the process ends): two searches writing one
    store would corrupt it. Returns the lock's file descriptor.

    Raises:
      WorkdirBusy: another process holds the lock.
    """
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT,
                 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WorkdirBusy(f'another evoprompting.main is running on '
                          f'{workdir}; wait for it, or stop it') from None
    return fd


@contextlib.contextmanager
def _others_stop_on_error(cluster: distributed.Cluster | None
                          ) -> Iterator[None]:
    """Process 0 of several: whatever ends its search early (a refused
    workdir or configuration, an LM that does not load, Ctrl-C), the other
    processes stop with its message instead of waiting for work."""
    try:
        yield
    except BaseException as e:
        if cluster is not None:
            cluster.stop_others(f'{type(e).__name__}: {e}')
        raise


@contextlib.contextmanager
def _workdir_mirror() -> Iterator[Callable[[], None]]:
    """Yields what to call after each write to the workdir: a request for a
    --mirror_to copy (the last copy is made on the way out, also after an
    error or Ctrl-C), or nothing without the flag."""
    if not FLAGS.mirror_to:
        yield lambda: None
        return
    with mirror.Mirror(FLAGS.workdir, FLAGS.mirror_to) as copy:
        copy.request()  # The run record and config, before any work.
        logging.info('Mirroring %s to %s after every record', FLAGS.workdir,
                     FLAGS.mirror_to)
        yield copy.request


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if os.path.exists(FLAGS.workdir) and not os.path.isdir(FLAGS.workdir):
        raise app.UsageError(f'--workdir={FLAGS.workdir} is not a folder')
    if FLAGS.mirror_to:
        try:
            mirror.check_destination(FLAGS.mirror_to, FLAGS.workdir)
        except ValueError as e:
            raise app.UsageError(f'--mirror_to: {e}') from None
    if not FLAGS.verbose:
        logs.quiet_libraries()
    partitioning.set_cpu_device_count(FLAGS.cpu_devices)
    try:
        gin_utils.parse(FLAGS.gin_file, FLAGS.gin_bindings)
        plan = gin.get_bindings(devices.worker_devices)['plan']
        host = devices.detect_host()
        # The LM's share of the devices, before JAX starts its backends.
        lm_env = devices.apply_lm_env(plan, host)
        if 'JAX_PLATFORMS' in lm_env:  # JAX read the variable at import.
            jax.config.update('jax_platforms', lm_env['JAX_PLATFORMS'])
        cluster = distributed.initialize(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
            heartbeat_timeout_s=FLAGS.heartbeat_timeout_s)
        if cluster is not None:
            print(f'Process {cluster.process_id} of {cluster.num_processes}'
                  + (': drives the search' if cluster.is_driver else
                     ': evaluates for process 0'), flush=True)
            # The evaluating side's bindings only (the sandbox's task):
            # search.run's would build the proposer and load its LM.
            distributed.share_host_files(
                cluster, gin.get_bindings(evaluator.Sandbox)['task'])
        if cluster is not None and not cluster.is_driver:
            with gin_utils.call(evaluator.Sandbox) as sandbox:
                distributed.serve(sandbox, cluster)
            return
        with _others_stop_on_error(cluster):
            _lock_workdir(FLAGS.workdir)  # Held until this process exits.
            sandbox = isolation.detect(require_os_sandbox=False)
            print(devices.describe(plan, host), flush=True)
            print(f'Sandbox isolation: {sandbox.level} ({sandbox.detail})',
                  flush=True)
            write_run_record(
                FLAGS.workdir, allow_config_change=FLAGS.allow_config_change,
                extra={'device_plan': devices.plan_to_json(plan, host),
                       'isolation': sandbox.to_json()})
            logging.info('Config written to %s', FLAGS.workdir)
            with _workdir_mirror() as on_change:
                gin_utils.call(search.run, workdir=FLAGS.workdir,
                               allow_config_change=FLAGS.allow_config_change,
                               on_change=on_change, cluster=cluster)
    except (gin_utils.GinConfigError, ConfigChanged, search.SearchError,
            devices.PlanError, isolation.IsolationError,
            store.StoreFormatError, distributed.ClusterError,
            WorkdirBusy) as e:
        sys.exit(f'error: {e}')
    except KeyboardInterrupt:
        sys.exit(f'Interrupted. Everything evaluated is saved in '
                 f'{FLAGS.workdir}; run the same command to resume.')


if __name__ == '__main__':
    app.run(main)
