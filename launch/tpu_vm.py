r"""Run the search on Cloud TPU VMs from a laptop, through the `gcloud` CLI.

  python -m launch.tpu_vm ACTION --name=NAME --zone=ZONE [flags]

ACTION is one of create, setup, run, logs, tensorboard, copy, delete, list.
Every action builds `gcloud compute tpus ...` (and `gcloud storage ...`)
commands and runs them; with --dry_run it prints them instead, one per line,
ready to paste into a shell, and runs nothing.

Before the first use
--------------------
Install the Google Cloud CLI and sign in (`gcloud auth login`), pick a project
with the Cloud TPU API enabled (`--project=P`, or `gcloud config set project
P`) and a zone that has the TPU type you want, and make a Cloud Storage bucket
in that project (`gcloud storage buckets create gs://BUCKET
--location=REGION`). For a pod slice (more than one host), load the key that
gcloud uses into your ssh agent once, so one command reaches every worker:
`ssh-add ~/.ssh/google_compute_engine` (the gcloud `tpu-vm ssh` reference
asks for this when targeting multiple workers).

One command
-----------
  python -m launch.tpu_vm run --name=evo --zone=us-central2-b \
      --accelerator_type=v4-8 --bucket=gs://my-bucket/evoprompting \
      --run_name=mnist1d-quick \
      --gin_file=gin/mnist1d/quick.gin --gin_file=gin/devices/tpu.gin

creates the VM if it does not exist and waits until it is READY, installs the
repository on every worker (`setup` below), restores the run's workdir from
the bucket if the VM has none, and starts on every worker (`--worker=all`)

  python -m evoprompting.main --gin_file=... [--gin_bindings=...] \
      --workdir=$HOME/runs/<run_name> --num_processes=0 \
      --mirror_to=<bucket>/<run_name>

with its output appended to $HOME/runs/<run_name>/main.log on each worker.
`--num_processes=0` lets JAX find the slice's hosts by itself: on a multi-host
slice worker 0 drives the search and every worker evaluates its share
(`evoprompting.distributed`). Worker 0 copies its workdir to
<bucket>/<run_name> after every evaluated child, so the results survive the
VM. `run` returns when the
search ends:
  * exit status 0: the search finished;
  * another status while the VM is READY: the search failed; `run` stops with
    the error (read it with `logs`, or in <bucket>/<run_name>/main.log);
  * the VM was preempted or is gone (a preemption deletes the VM and its
    disk), or ssh lost the connection (status 255): `run` recreates the VM if
    needed (a queued request is deleted and queued again: a preempted one is
    never filled again), sets it up again, restores the workdir from the
    bucket and starts the same command, which resumes the search; at most
    --max_restarts times.
Rerunning the same `run` command (same --run_name and --bucket) on a fresh VM
resumes a search too. After a finished or failed run the VM is deleted
unless --keep. Ctrl-C stops `run` but not the search on the VM: follow it
with `logs`, stop it with `delete` (the idle guard below also deletes the VM
once the search has ended).

Actions
-------
create    `gcloud compute tpus tpu-vm create` (with --queued: `gcloud compute
          tpus queued-resources create`, which waits for capacity, for at
          most --timeout_minutes: the request expires after that), then polls
          `describe` until the VM is READY (the request ACTIVE), for at most
          --timeout_minutes. Installs the idle guard.
            python -m launch.tpu_vm create --name=evo --zone=us-central2-b \
                --accelerator_type=v4-32
            python -m launch.tpu_vm create --name=evo5 --zone=us-west4-a \
                --accelerator_type=v5litepod-8 --queued --spot
setup     Copies the repository (`git archive HEAD`: committed files only, so
          commit first) to every worker and installs it there in
          $HOME/evoprompting-venv (Python 3.11 and bubblewrap from apt, then
          `pip install -e '.[clrs,tpu]'` (JAX with libtpu), `pip install
          --no-deps dm-clrs==2.0.3`); installs the idle guard. `run` does
          this itself.
run       As above. --gin_file (paths relative to the repository root) and
          --gin_bindings are repeatable and passed on as given:
            --gin_bindings='NUM_WORKERS = 7' \
            --gin_bindings="devices.DevicePlan.lm_platform = 'cpu'"
logs      Follows $HOME/runs/<run_name>/main.log on worker 0 (Ctrl-C ends).
tensorboard
          Prints the local command `tensorboard --logdir=<bucket>/<run_name>/
          tensorboard`: TensorBoard reads gs:// directly, while the search runs
          and after the VM is gone (without TensorFlow it needs `pip install
          tensorboard gcsfs` and `gcloud auth application-default login`).
copy      Copies the workdir from the bucket to --to, a local folder or
          another gs:// URL (`gcloud storage rsync --recursive`).
delete    Deletes the VM (with --queued: the queued request and its VM).
list      Lists the TPU VMs and the queued requests of the zone: what runs and
          costs money.

Runtime versions (--version) default per generation, from the Cloud TPU
"TPU software versions" page: v6e -> v2-alpha-tpuv6e, v5p -> v2-alpha-tpuv5,
v5e (v5litepod-N) -> v2-alpha-tpuv5-lite, v4 and older -> tpu-ubuntu2204-base.
Capacity for v5e, v6e and Spot VMs is usually found through --queued. Pass the
same --queued to every action on a queued VM.

Cost guardrails
---------------
* `run` deletes the VM when the search finished or failed, unless --keep.
* The idle guard: `create` and `setup` (so `run`) start a loop on every
  worker that deletes the VM (with --queued, the request and its VM) after
  --idle_minutes without an `evoprompting.main` process; deleting is what
  stops the charges (a multi-host slice cannot be stopped; `tpu-vm stop` is
  for single hosts only, per the TPU API reference). The VM's service account
  must be allowed to delete TPUs (the default Compute Engine account with the
  Editor role is); the VM is created with the cloud-platform scope for that
  and for the bucket. --keep installs no guard (and stops an earlier one).
* A queued request expires after --timeout_minutes if not filled.
* `list` shows what exists; `delete` removes it.

Dry run
-------
  python -m launch.tpu_vm run ... --dry_run
prints the commands of one pass of `run` for a fresh start: the VM does not
exist, is created and becomes READY, and the search finishes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from absl import app, flags

ACTIONS = ('create', 'setup', 'run', 'logs', 'tensorboard', 'copy', 'delete',
           'list')
# The flags each action cannot do without; checked before anything runs.
_NEEDS = {
    'create': ('name', 'zone'),
    'setup': ('name', 'zone'),
    'run': ('name', 'zone', 'bucket', 'run_name', 'gin_file'),
    'logs': ('name', 'zone', 'run_name'),
    'tensorboard': ('bucket', 'run_name'),
    'copy': ('bucket', 'run_name', 'to'),
    'delete': ('name', 'zone'),
    'list': ('zone',),
}

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Where things live on every worker (shell words: $HOME expands there).
REMOTE_REPO = '"$HOME"/evoprompting'
REMOTE_VENV = '"$HOME"/evoprompting-venv'
REMOTE_TARBALL = 'evoprompting.tar.gz'  # Relative to the remote home.
LOG_FILE = 'main.log'  # In the run's workdir.
WATCHDOG_PID = '"$HOME"/evoprompting-watchdog.pid'
WATCHDOG_LOG = '"$HOME"/evoprompting-watchdog.log'
# The search binary's processes, and not the shells that start or look for
# them: the command line must begin with the interpreter.
SEARCH_PROCESS = '^[^ ]*python[^ ]* -m evoprompting[.]main( |$)'
# Read and write the bucket, and delete the VM (idle guard).
CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform'
SSH_LOST = 255  # ssh's own exit status: the connection, not the command.

# `describe` states (Cloud TPU API Node.State and QueuedResourceState.State).
NODE_READY = 'READY'
NODE_LOST = ('PREEMPTED', 'TERMINATED')  # Never READY again: recreate.
QUEUED_ACTIVE = 'ACTIVE'
QUEUED_WAITING = ('CREATING', 'ACCEPTED', 'WAITING_FOR_RESOURCES',
                  'PROVISIONING')
# States that `wait_for` gives up on: the resource will not become ready.
_HOPELESS = ('PREEMPTED', 'TERMINATED', 'STOPPED', 'STOPPING', 'DELETING',
             'FAILED', 'SUSPENDING', 'SUSPENDED')

# Default runtime version per TPU generation (Cloud TPU "TPU software
# versions": the PyTorch and JAX table).
_RUNTIME_VERSIONS = {
    'v6e': 'v2-alpha-tpuv6e',
    'v5p': 'v2-alpha-tpuv5',
    'v5litepod': 'v2-alpha-tpuv5-lite',  # v5e: v5litepod-1, -4, -8, ...
    'v4': 'tpu-ubuntu2204-base',
    'v3': 'tpu-ubuntu2204-base',
    'v2': 'tpu-ubuntu2204-base',
}

_ACCELERATOR = re.compile(r'^v\d+[a-z]*-\d+$')
_TPU_NAME = re.compile(r'^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')  # GCE names.
_ZONE = re.compile(r'^[a-z]+-[a-z]+\d+-[a-z]$')
_PROJECT = re.compile(r'^[a-z0-9][-a-z0-9.:]*$')
_RUN_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')

FLAGS = flags.FLAGS
flags.DEFINE_string('name', None, 'The TPU VM (and queued request) name: '
                    'lowercase letters, digits and dashes.')
flags.DEFINE_string('zone', None, 'The zone, e.g. us-central2-b.')
flags.DEFINE_string('project', None, 'The Google Cloud project; default: '
                    "gcloud's configured project.")
flags.DEFINE_string('accelerator_type', 'v4-8', 'The TPU type and size: '
                    'v4-8, v4-32, v5litepod-8, v5p-8, v6e-8, ...')
flags.DEFINE_string('version', None, 'The TPU runtime (software) version; '
                    'default per generation: v6e v2-alpha-tpuv6e, v5p '
                    'v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v2-v4 '
                    'tpu-ubuntu2204-base.')
flags.DEFINE_bool('spot', False, 'Spot VMs: much cheaper, preemptible at any '
                  'time (`run` recreates and resumes).')
flags.DEFINE_bool('queued', False, 'Ask through a queued resource request '
                  '(gcloud compute tpus queued-resources), which waits for '
                  'capacity: the usual way to get v5e, v6e and Spot TPUs. '
                  'Pass it to every action on such a VM.')
flags.DEFINE_integer('timeout_minutes', 60, 'How long create (and run) wait '
                     'for the VM to be READY; a queued request expires after '
                     'that.', lower_bound=1)
flags.DEFINE_float('poll_seconds', 30.0, 'Seconds between two describe '
                   'calls while waiting, and before a restart.',
                   lower_bound=0.0)
flags.DEFINE_string('bucket', None, 'gs:// URL under which each run keeps its '
                    'workdir, as <bucket>/<run_name> (run, copy, tensorboard).')
flags.DEFINE_string('run_name', None, 'The run: its workdir is '
                    '$HOME/runs/<run_name> on the VM and <bucket>/<run_name> '
                    'in the bucket. Letters, digits, ".", "_" and "-". The '
                    'same name resumes the run.')
flags.DEFINE_multi_string('gin_file', [], 'run: gin files for '
                          'evoprompting.main, relative to the repository root, '
                          'in order (e.g. gin/mnist1d/quick.gin, then '
                          'gin/devices/tpu.gin).')
flags.DEFINE_multi_string('gin_bindings', [], 'run: gin bindings for '
                          "evoprompting.main, e.g. 'NUM_WORKERS = 7'.")
flags.DEFINE_integer('max_restarts', 5, 'run: how many times a preempted or '
                     'lost VM is recreated and the search resumed.',
                     lower_bound=0)
flags.DEFINE_bool('keep', False, 'Keep the VM: run does not delete it at the '
                  'end, and no idle guard is installed.')
flags.DEFINE_integer('idle_minutes', 60, 'The idle guard deletes the VM after '
                     'this many minutes without a search process.',
                     lower_bound=1)
flags.DEFINE_string('to', None, 'copy: a local folder or a gs:// URL.')
flags.DEFINE_bool('dry_run', False, 'Print the commands, one per line, '
                  'instead of running them.')

flags.register_validator(
    'name', lambda v: v is None or bool(_TPU_NAME.match(v)),
    message='--name must start with a lowercase letter and hold only '
    'lowercase letters, digits and dashes (at most 63), e.g. --name=evo-v4')
flags.register_validator(
    'zone', lambda v: v is None or bool(_ZONE.match(v)),
    message='--zone must be a zone such as us-central2-b')
flags.register_validator(
    'project', lambda v: v is None or bool(_PROJECT.match(v)),
    message='--project must be a project ID such as my-project')
flags.register_validator(
    'accelerator_type', lambda v: bool(_ACCELERATOR.match(v)),
    message='--accelerator_type must be GENERATION-SIZE, e.g. v4-8, '
    'v5litepod-8, v6e-8')
flags.register_validator(
    'bucket', lambda v: v is None or (v.startswith('gs://') and len(v) > 5
                                      and not re.search(r'\s', v)),
    message='--bucket must be a gs:// URL, e.g. gs://my-bucket/evoprompting')
flags.register_validator(
    'run_name', lambda v: v is None or bool(_RUN_NAME.match(v)),
    message='--run_name may hold only letters, digits, ".", "_" and "-", and '
    'must start with a letter or digit (it names a folder)')
flags.register_validator(
    'gin_file', lambda files: all(not os.path.isabs(f) and '..' not in
                                  f.split('/') for f in files),
    message='--gin_file must be a path inside the repository, relative to '
    'its root (the repository is what is copied to the VM)')


class LaunchError(Exception):
    """A step that failed; the message says what happened and what to do."""


class CommandFailed(LaunchError):
    """A command exited with a non-zero status."""

    def __init__(self, argv: Sequence[str], returncode: int):
        super().__init__(f'exit status {returncode}: {shlex.join(argv)}')
        self.returncode = returncode


@dataclasses.dataclass(frozen=True)
class Tpu:
    """A TPU VM: where it lives and how it is asked for."""
    name: str
    zone: str
    project: str | None = None
    queued: bool = False
    # What to create (other actions do without).
    accelerator_type: str | None = None
    version: str | None = None  # The runtime version.
    spot: bool = False


@dataclasses.dataclass(frozen=True)
class Search:
    """One run of `evoprompting.main` on every worker of a VM."""
    run_name: str
    bucket: str
    gin_files: tuple[str, ...]
    gin_bindings: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """The run's copy in the bucket."""
        return f'{self.bucket.rstrip("/")}/{self.run_name}'

    @property
    def workdir(self) -> str:
        """The run's workdir on a worker, as a shell word."""
        return '"$HOME"/runs/' + shlex.quote(self.run_name)


@dataclasses.dataclass(frozen=True)
class Policy:
    """How long to wait, how often to restart, and when to delete the VM."""
    timeout_minutes: int
    poll_seconds: float
    max_restarts: int
    idle_minutes: int
    keep: bool


def default_version(accelerator_type: str) -> str:
    """The runtime version for JAX on `accelerator_type` ('v4-8' ->
    'tpu-ubuntu2204-base'). Raises ValueError for an unknown generation."""
    generation = accelerator_type.split('-')[0]
    if generation not in _RUNTIME_VERSIONS:
        raise ValueError(f'no default runtime version for {generation} '
                         f'(known: {", ".join(_RUNTIME_VERSIONS)}): pass '
                         '--version')
    return _RUNTIME_VERSIONS[generation]


# Commands. Each returns one argv list; nothing here runs anything.

def _tpus(tpu: Tpu, group: str, verb: str, *args: str) -> list[str]:
    """`gcloud compute tpus GROUP VERB NAME ARGS --zone [--project]`."""
    return ['gcloud', 'compute', 'tpus', group, verb, tpu.name,
            f'--zone={tpu.zone}', *args, *_project(tpu.project)]


def _project(project: str | None) -> list[str]:
    return [f'--project={project}'] if project else []


def create_command(tpu: Tpu, *, valid_minutes: int) -> list[str]:
    """Creates the VM, or queues a request for it (valid for
    `valid_minutes`: `--valid-until-duration`, from the gcloud
    `queued-resources create` reference)."""
    common = [f'--accelerator-type={tpu.accelerator_type}',
              f'--scopes={CLOUD_PLATFORM_SCOPE}',
              *(['--spot'] if tpu.spot else [])]
    if tpu.queued:
        # The request and its one VM share the name.
        return _tpus(tpu, 'queued-resources', 'create', f'--node-id={tpu.name}',
                     f'--runtime-version={tpu.version}', *common,
                     f'--valid-until-duration={valid_minutes}m')
    return _tpus(tpu, 'tpu-vm', 'create', f'--version={tpu.version}', *common)


def describe_command(tpu: Tpu, *, queued: bool = False) -> list[str]:
    """Prints the state of the VM (READY, PREEMPTED, ...), or with `queued`
    of the request (WAITING_FOR_RESOURCES, ACTIVE, SUSPENDED, ...)."""
    if queued:
        return _tpus(tpu, 'queued-resources', 'describe',
                     '--format=value(state.state)')
    return _tpus(tpu, 'tpu-vm', 'describe', '--format=value(state)')


def delete_command(tpu: Tpu) -> list[str]:
    """Deletes the VM without asking; a queued request with its VM
    (`--force`, from the gcloud `queued-resources delete` reference)."""
    if tpu.queued:
        return _tpus(tpu, 'queued-resources', 'delete', '--quiet', '--force')
    return _tpus(tpu, 'tpu-vm', 'delete', '--quiet')


def list_commands(zone: str, project: str | None) -> list[list[str]]:
    """Lists the TPU VMs and the queued requests of `zone`."""
    return [['gcloud', 'compute', 'tpus', group, 'list', f'--zone={zone}',
             *_project(project)] for group in ('tpu-vm', 'queued-resources')]


def ssh_command(tpu: Tpu, command: str, *, worker: str = 'all') -> list[str]:
    """Runs the shell `command` on `worker` (all: on every worker at once;
    gcloud exits non-zero when any worker's command did)."""
    return _tpus(tpu, 'tpu-vm', 'ssh', f'--worker={worker}',
                 f'--command={command}')


def archive_command(tarball: str) -> list[str]:
    """Packs the committed tree of the repository (HEAD) into `tarball`."""
    return ['git', '-C', REPO_ROOT, 'archive', '--format=tar.gz',
            f'--output={tarball}', 'HEAD']


def copy_repo_command(tpu: Tpu, tarball: str) -> list[str]:
    """Copies `tarball` to the home folder of every worker."""
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', tarball,
            f'{tpu.name}:{REMOTE_TARBALL}', f'--zone={tpu.zone}',
            '--worker=all', *_project(tpu.project)]


def copy_run_command(search: Search, to: str,
                     project: str | None = None) -> list[str]:
    """Copies the run's workdir from the bucket to `to`."""
    return ['gcloud', 'storage', 'rsync', '--recursive', search.url, to,
            *_project(project)]


def tensorboard_command(search: Search) -> list[str]:
    """TensorBoard on this machine, reading the run's copy in the bucket."""
    return ['tensorboard', f'--logdir={search.url}/tensorboard']


# Shell scripts run on the workers: one line each, every user-given word
# quoted.

def setup_script() -> str:
    """Unpacks the copied repository and installs it in REMOTE_VENV."""
    pip = f'{REMOTE_VENV}/bin/pip install -q'
    # Fresh VMs run unattended-upgrades for a while: wait for dpkg's lock.
    apt = 'sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600'
    return ' && '.join([
        f'{apt} update -qq',
        # Ubuntu 22.04 (the TPU images) ships Python 3.10; setup.py asks 3.11.
        f'{apt} install -y -qq bubblewrap python3.11 python3.11-venv',
        f'rm -rf {REMOTE_REPO}',
        f'mkdir -p {REMOTE_REPO}',
        f'tar -xzf "$HOME"/{REMOTE_TARBALL} -C {REMOTE_REPO}',
        f'(test -x {REMOTE_VENV}/bin/python || python3.11 -m venv {REMOTE_VENV})',
        f'cd {REMOTE_REPO}',
        f'{pip} -U pip',
        f"{pip} -e '.[clrs,tpu]'",
        f'{pip} --no-deps dm-clrs==2.0.3',  # Its metadata asks TensorFlow.
    ])


def watchdog_script(tpu: Tpu, idle_minutes: int | None) -> str:
    """Replaces the idle guard: stops the one running (it ends at its next
    one-minute tick, without checking again), then (unless `idle_minutes` is
    None) starts one that deletes the VM after `idle_minutes` minutes without
    a search process, retrying every `idle_minutes` while the deletion fails
    (its output: WATCHDOG_LOG)."""
    stop = (f'if [ -f {WATCHDOG_PID} ]; then kill "$(cat {WATCHDOG_PID})" '
            '2> /dev/null || true; fi')
    if idle_minutes is None:
        return stop
    loop = ('idle=0; while sleep 60; do '
            f'if pgrep -f {shlex.quote(SEARCH_PROCESS)} > /dev/null; '
            'then idle=0; else idle=$((idle + 1)); fi; '
            f'if [ "$idle" -ge {idle_minutes} ]; then date; '
            f'{shlex.join(delete_command(tpu))}; idle=0; fi; done')
    return (f'{stop}; nohup bash -c {shlex.quote(loop)} >> {WATCHDOG_LOG} '
            f'2>&1 < /dev/null & echo $! > {WATCHDOG_PID}')


def restore_script(search: Search) -> str:
    """Stops a search process left from an earlier start (it holds the TPU
    chips), then fills the workdir from the bucket if the worker has none
    (a new VM; a VM that kept its disk has the newer copy)."""
    stale = shlex.quote(SEARCH_PROCESS)
    url = shlex.quote(search.url)
    return (f'if pkill -f {stale}; then sleep 10; pkill -9 -f {stale} || '
            f'true; fi; if [ ! -d {search.workdir} ] && gcloud storage ls '
            f'{url} > /dev/null 2>&1; then mkdir -p {search.workdir} && '
            f'gcloud storage rsync --recursive {url} {search.workdir}; fi')


def start_script(search: Search) -> str:
    """Runs the search in the foreground, its output appended to the log."""
    log = f'{search.workdir}/{LOG_FILE}'
    args = [*(f'--gin_file={f}' for f in search.gin_files),
            *(f'--gin_bindings={b}' for b in search.gin_bindings)]
    return (f'mkdir -p {search.workdir} && cd {REMOTE_REPO} && '
            f'echo "== launch.tpu_vm: start $(date -u +%FT%TZ)" >> {log} && '
            f'exec {REMOTE_VENV}/bin/python -m evoprompting.main '
            f'{" ".join(shlex.quote(a) for a in args)} '
            f'--workdir={search.workdir} --num_processes=0 '
            f'{shlex.quote("--mirror_to=" + search.url)} >> {log} 2>&1')


def logs_script(search: Search) -> str:
    """Follows the run's log from its last lines."""
    return f'tail -n 100 -F {search.workdir}/{LOG_FILE}'


# Running the commands.

class Shell:
    """Runs commands, each echoed to stderr first (queries are not)."""

    def run(self, argv: Sequence[str]) -> int:
        """Runs `argv` with this terminal; returns its exit status."""
        print(f'$ {shlex.join(argv)}', file=sys.stderr, flush=True)
        try:
            return subprocess.run(argv, check=False).returncode
        except FileNotFoundError:
            raise LaunchError(f'{argv[0]} not found: install it (gcloud: the '
                              'Google Cloud CLI) and put it on PATH') from None

    def query(self, argv: Sequence[str]) -> subprocess.CompletedProcess:
        """Runs `argv` and returns its captured output."""
        try:
            return subprocess.run(argv, check=False, capture_output=True,
                                  text=True)
        except FileNotFoundError:
            raise LaunchError(f'{argv[0]} not found: install it and put it on '
                              'PATH') from None

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class DryRun:
    """Prints each command, one per line, and runs nothing.

    Queries (`describe`) are answered as for a fresh start: no VM or request
    exists until a create command was printed; after it, both are
    READY/ACTIVE. Every command succeeds.
    """

    _READY = {'tpu-vm': NODE_READY, 'queued-resources': QUEUED_ACTIVE}

    def __init__(self):
        self._created = set()

    def run(self, argv: Sequence[str]) -> int:
        print(shlex.join(argv), flush=True)
        if argv[:3] == ['gcloud', 'compute', 'tpus'] and argv[4] == 'create':
            self._created.add(argv[3])
            self._created.add('tpu-vm')  # A queued request creates its VM.
        return 0

    def query(self, argv: Sequence[str]) -> subprocess.CompletedProcess:
        print(shlex.join(argv), flush=True)
        if argv[3] in self._created:
            return subprocess.CompletedProcess(argv, 0, self._READY[argv[3]], '')
        return subprocess.CompletedProcess(argv, 1, '', 'NOT_FOUND (dry run)')

    def sleep(self, seconds: float) -> None:
        del seconds


Runner = Shell | DryRun


def _check(runner: Runner, argv: Sequence[str]) -> None:
    returncode = runner.run(argv)
    if returncode:
        raise CommandFailed(argv, returncode)


def state(runner: Runner, argv: Sequence[str]) -> str | None:
    """The state a `describe_command` prints, or None when the resource does
    not exist. Raises LaunchError when gcloud fails otherwise."""
    out = runner.query(argv)
    if out.returncode == 0:
        return out.stdout.strip()
    if re.search(r'NOT_FOUND|not found', out.stderr):
        return None
    raise LaunchError(f'{shlex.join(argv)} failed: {out.stderr.strip()}')


def wait_for(runner: Runner, argv: Sequence[str], ready: str, *,
             policy: Policy) -> None:
    """Polls `describe` until it prints `ready`, for at most
    policy.timeout_minutes. Raises LaunchError when the resource is gone, in a
    state it does not leave for `ready`, or still not ready at the end."""
    deadline = time.monotonic() + 60 * policy.timeout_minutes
    while True:
        now = state(runner, argv)
        if now == ready:
            return
        if now is None or now in _HOPELESS:
            raise LaunchError(f'{argv[3]} {argv[5]} is {now or "gone"}, not '
                              f'{ready}')
        if time.monotonic() > deadline:
            raise LaunchError(
                f'{argv[3]} {argv[5]} is still {now} after '
                f'{policy.timeout_minutes} minutes (--timeout_minutes); see '
                "`list`, and `delete` what you don't want")
        print(f'{argv[3]} {argv[5]}: {now}', file=sys.stderr, flush=True)
        runner.sleep(policy.poll_seconds)


def create(runner: Runner, tpu: Tpu, policy: Policy) -> None:
    """Creates the VM (or queues the request) and waits until it is READY."""
    _check(runner, create_command(tpu, valid_minutes=policy.timeout_minutes))
    if tpu.queued:
        wait_for(runner, describe_command(tpu, queued=True), QUEUED_ACTIVE,
                 policy=policy)
    wait_for(runner, describe_command(tpu), NODE_READY, policy=policy)


def ensure_ready(runner: Runner, tpu: Tpu, policy: Policy) -> bool:
    """Makes the VM READY: nothing to do for a READY one; one being made is
    waited for; a missing or preempted one (a suspended or failed request) is
    deleted and created again. Returns whether it was created (and so needs
    `setup`)."""
    node = state(runner, describe_command(tpu))
    if node == NODE_READY:
        return False
    if tpu.queued:
        now = state(runner, describe_command(tpu, queued=True))
        if now in QUEUED_WAITING:
            wait_for(runner, describe_command(tpu, queued=True), QUEUED_ACTIVE,
                     policy=policy)
            wait_for(runner, describe_command(tpu), NODE_READY, policy=policy)
            return True
    else:
        now = node
        if now is not None and now not in NODE_LOST:  # Being made or repaired.
            wait_for(runner, describe_command(tpu), NODE_READY, policy=policy)
            return False
    if now is not None:
        _check(runner, delete_command(tpu))
    create(runner, tpu, policy)
    return True


def setup(runner: Runner, tpu: Tpu, policy: Policy) -> None:
    """Copies the committed repository to every worker, installs it, and
    installs the idle guard (none with policy.keep)."""
    tarball = os.path.join(tempfile.gettempdir(), f'evoprompting-{tpu.name}.tar.gz')
    _check(runner, archive_command(tarball))
    _check(runner, copy_repo_command(tpu, tarball))
    _check(runner, ssh_command(tpu, setup_script()))
    install_watchdog(runner, tpu, policy)


def install_watchdog(runner: Runner, tpu: Tpu, policy: Policy) -> None:
    """Starts the idle guard on every worker (with policy.keep: stops it)."""
    idle = None if policy.keep else policy.idle_minutes
    _check(runner, ssh_command(tpu, watchdog_script(tpu, idle)))


def run_search(runner: Runner, tpu: Tpu, search: Search, policy: Policy) -> None:
    """Runs `search` on every worker of `tpu` until it finishes, recreating
    and resuming it after a preemption (see the module docstring), then
    deletes the VM unless policy.keep.

    Raises:
      LaunchError: the search failed on a healthy VM, or the VM could not be
        made ready, or it was lost more than policy.max_restarts times. The VM
        is deleted first unless policy.keep.
    """
    try:
        _supervise(runner, tpu, search, policy)
    except LaunchError:
        _delete_unless_kept(runner, tpu, policy)
        raise
    _delete_unless_kept(runner, tpu, policy)


def _supervise(runner: Runner, tpu: Tpu, search: Search, policy: Policy) -> None:
    restarts, set_up = 0, False
    while True:
        try:
            if ensure_ready(runner, tpu, policy):
                set_up = False
            if not set_up:
                setup(runner, tpu, policy)
                set_up = True
            _check(runner, ssh_command(tpu, restore_script(search)))
            print(f'Starting {search.run_name} on every worker of {tpu.name}; '
                  f'follow it with: python -m launch.tpu_vm logs '
                  f'--name={tpu.name} --zone={tpu.zone} '
                  f'--run_name={search.run_name}', file=sys.stderr, flush=True)
            returncode = runner.run(ssh_command(tpu, start_script(search)))
            if returncode == 0:
                print(f'{search.run_name} finished; its workdir is in '
                      f'{search.url}', file=sys.stderr, flush=True)
                return
            failure = f'the search exited with status {returncode}'
        except CommandFailed as e:
            failure, returncode = str(e), e.returncode
        now = state(runner, describe_command(tpu))
        if now == NODE_READY and returncode != SSH_LOST:
            raise LaunchError(
                f'{search.run_name} failed on a healthy VM ({failure}); not '
                f'restarted. Its log: python -m launch.tpu_vm logs '
                f'--name={tpu.name} --zone={tpu.zone} '
                f'--run_name={search.run_name}, or {search.url}/{LOG_FILE}')
        restarts += 1
        if restarts > policy.max_restarts:
            raise LaunchError(f'{tpu.name} was lost {restarts} times '
                              f'(--max_restarts={policy.max_restarts}); the '
                              f'workdir is in {search.url}: run again to resume')
        print(f'{tpu.name} is {now or "gone"} ({failure}): restart {restarts} '
              f'of {policy.max_restarts}', file=sys.stderr, flush=True)
        runner.sleep(policy.poll_seconds)


def _delete_unless_kept(runner: Runner, tpu: Tpu, policy: Policy) -> None:
    if policy.keep:
        print(f'{tpu.name} is kept (--keep): delete it with python -m '
              f'launch.tpu_vm delete --name={tpu.name} --zone={tpu.zone}'
              f'{" --queued" if tpu.queued else ""}', file=sys.stderr)
        return
    if runner.run(delete_command(tpu)):
        print(f'Deleting {tpu.name} failed: check with `list`.',
              file=sys.stderr)


def main(argv):
    if len(argv) != 2:
        raise app.UsageError(f'expected one action, one of {", ".join(ACTIONS)}; '
                             f'got {argv[1:]}')
    action = argv[1]
    if action not in ACTIONS:
        raise app.UsageError(f'unknown action {action!r}: expected one of '
                             f'{", ".join(ACTIONS)}')
    for name in _NEEDS[action]:
        if not FLAGS[name].value:
            raise app.UsageError(f'{action} needs --{name}')
    for gin_file in FLAGS.gin_file:
        if not os.path.isfile(os.path.join(REPO_ROOT, gin_file)):
            raise app.UsageError(f'--gin_file={gin_file}: no such file in the '
                                 f'repository ({REPO_ROOT})')
    version = FLAGS.version
    if action in ('create', 'run') and not version:
        try:
            version = default_version(FLAGS.accelerator_type)
        except ValueError as e:
            raise app.UsageError(f'--accelerator_type={FLAGS.accelerator_type}: '
                                 f'{e}') from None
    tpu = Tpu(name=FLAGS.name, zone=FLAGS.zone, project=FLAGS.project,
              accelerator_type=FLAGS.accelerator_type, version=version,
              spot=FLAGS.spot, queued=FLAGS.queued)
    search = Search(run_name=FLAGS.run_name, bucket=FLAGS.bucket,
                    gin_files=tuple(FLAGS.gin_file),
                    gin_bindings=tuple(FLAGS.gin_bindings))
    policy = Policy(timeout_minutes=FLAGS.timeout_minutes,
                    poll_seconds=FLAGS.poll_seconds,
                    max_restarts=FLAGS.max_restarts,
                    idle_minutes=FLAGS.idle_minutes, keep=FLAGS.keep)
    runner = DryRun() if FLAGS.dry_run else Shell()
    try:
        if action == 'create':
            create(runner, tpu, policy)
            install_watchdog(runner, tpu, policy)
        elif action == 'setup':
            setup(runner, tpu, policy)
        elif action == 'run':
            run_search(runner, tpu, search, policy)
        elif action == 'logs':
            _check(runner, ssh_command(tpu, logs_script(search), worker='0'))
        elif action == 'tensorboard':
            print(shlex.join(tensorboard_command(search)), flush=True)
            print('# TensorBoard reads gs:// without TensorFlow through fsspec: '
                  'pip install tensorboard gcsfs; gcloud auth '
                  'application-default login', file=sys.stderr)
        elif action == 'copy':
            _check(runner, copy_run_command(search, FLAGS.to, FLAGS.project))
        elif action == 'delete':
            _check(runner, delete_command(tpu))
        elif action == 'list':
            for command in list_commands(FLAGS.zone, FLAGS.project):
                _check(runner, command)
    except LaunchError as e:
        sys.exit(f'error: {e}')
    except KeyboardInterrupt:
        if action == 'run':
            sys.exit(f'Interrupted. The search may still run on {tpu.name}: '
                     'follow it with `logs`, stop it with `delete`; the idle '
                     'guard deletes the VM once it has ended.')
        sys.exit('Interrupted.')


if __name__ == '__main__':
    app.run(main)
