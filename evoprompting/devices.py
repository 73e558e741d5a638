"""The device plan: which devices the in-process LM and each evaluation worker get.

One binary owns the machine. A `DevicePlan` (built from gin/devices/*.gin)
says where the code LM runs (the search's parent process) and where each of
the `num_workers` sandbox worker processes runs; `plan_workers` turns it into
one `WorkerDevices` per worker (the environment and device files the sandbox
pool gives that worker) and `lm_env` into the environment of the LM's process,
for a `Host` that `detect_host` reads from the machine (tests pass fakes).

  CPU  Workers get `devices_per_worker` forced XLA host devices each; the LM
       uses the CPU (its device count is main's `--cpu_devices`).
  GPU  Each process sees its own GPUs through CUDA_VISIBLE_DEVICES (GPU UUIDs
       when known, so the choice survives a sandbox that shows fewer GPUs;
       else PCI-ordered indices). Exclusive by default; with
       `share_gpus=True` several processes use one GPU, each with
       XLA_PYTHON_CLIENT_PREALLOCATE=false and its own memory fraction, the
       fractions of the processes on a GPU adding up to at most 1.
  TPU  A chip belongs to one process. Each process is its own one-host libtpu
       topology on a disjoint, aligned block of 1, 2, 4 or 8 chips.

What was checked, and where (no TPU or GPU was at hand to run any of it):
- libtpu per-process variables: TPU_VISIBLE_CHIPS (TPU_VISIBLE_DEVICES on older
  runtimes: pytorch/xla PR 3956 "TPU_VISIBLE_DEVICES has been deprecated in
  favor of TPU_VISIBLE_CHIPS"), TPU_CHIPS_PER_PROCESS_BOUNDS and
  TPU_PROCESS_BOUNDS (older names TPU_CHIPS_PER_HOST_BOUNDS and
  TPU_HOST_BOUNDS, still set by Ray's TPU accelerator manager), a unique
  TPU_MESH_CONTROLLER_ADDRESS/PORT per process (skye's public
  tpu_topology_env_vars gist, "non-communicating processes"), and
  TPU_PROCESS_PORT / TPU_PROCESS_ADDRESSES / CLOUD_TPU_TASK_ID /
  ALLOW_MULTIPLE_LIBTPU_LOAD=1 as JAX's own `jax/_src/test_multiprocess.py`
  (jax 0.10.2, installed here) sets them for several processes on one host.
  Chip bounds: 1 chip '1,1,1', 2 chips '1,2,1' (chips 0,1 or 2,3), 4 chips
  '2,2,1', 8 chips '2,4,1' (the gist, Ray, and test_multiprocess for 2x4
  v6e hosts). Every process here is standalone (TPU_PROCESS_BOUNDS '1,1,1'),
  so the LM on some chips and workers on others is the gist's
  "non-communicating processes" case; vLLM's TPU backend runs pipeline
  stages as such processes too (vllm-project/tpu-inference PR 1753).
  Untested here: other block shapes on 8-chip hosts, whether
  TPU_RUNTIME_METRICS_PORTS clash between processes, whether libtpu inside
  the network-less OS sandbox waits on the GCE metadata server (if so, add
  TPU_SKIP_MDS_QUERY=1 with TPU_ACCELERATOR_TYPE, TPU_WORKER_ID=0 and
  TPU_WORKER_HOSTNAMES=localhost), and multi-host slices (there the LM under
  jax.distributed needs whole hosts: put the workers on the CPU).
- TPU chip discovery: /dev/accel<i>, else the numbered /dev/vfio/<group>
  entries (Ray's TPU manager), TPU generation from PCI device ids of vendor
  0x1ae0 (jax/_src/hardware_utils.py). Chip i is the i-th such node, sorted.
- GPU memory: jaxlib 0.10.2 `xla_client.generate_pjrt_gpu_plugin_options`
  reads XLA_PYTHON_CLIENT_PREALLOCATE and XLA_CLIENT_MEM_FRACTION or the
  older XLA_PYTHON_CLIENT_MEM_FRACTION, and refuses both at once; the plan
  uses the older name (read by every jaxlib) unless the parent's environment
  already sets the newer one. The JAX docs ("GPU memory allocation") say the
  fraction still caps the BFC pool with preallocation off.
- JAX_PLATFORMS: a listed platform that fails to start is an error
  (jax/_src/xla_bridge.py), so an accelerator process never falls back to
  the CPU quietly.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Mapping, MutableMapping, Sequence

PLATFORMS = ('cpu', 'gpu', 'tpu')
# Chips of one libtpu process, and its TPU_CHIPS_PER_PROCESS_BOUNDS.
TPU_CHIP_BOUNDS = {1: '1,1,1', 2: '1,2,1', 4: '2,2,1', 8: '2,4,1'}
# PCI device ids of Google TPU chips (jax/_src/hardware_utils.py).
_GOOGLE_PCI_VENDOR = '0x1ae0'
_TPU_PCI_DEVICES = {'0x0027': 'v3', '0x0056': 'plc', '0x005e': 'v4',
                    '0x0062': 'v5p', '0x0063': 'v5e', '0x006f': 'v6e',
                    '0x0076': 'tpu7x'}
_TWO_DEVICES_PER_CHIP = ('v2', 'v3')
# Device files every GPU process needs besides its /dev/nvidia<minor>.
_NVIDIA_SHARED_NODES = ('/dev/nvidiactl', '/dev/nvidia-uvm',
                        '/dev/nvidia-uvm-tools')
_VFIO_CONTAINER = '/dev/vfio/vfio'
MEM_FRACTION_VAR = 'XLA_PYTHON_CLIENT_MEM_FRACTION'
NEW_MEM_FRACTION_VAR = 'XLA_CLIENT_MEM_FRACTION'


class PlanError(ValueError):
    """A device plan that cannot run on this host; the message says why."""


@dataclasses.dataclass(frozen=True)
class WorkerDevices:
    """What one evaluation worker process is given.

    Attributes:
      env: environment variables set in the worker (JAX_PLATFORMS, XLA_FLAGS,
        CUDA_VISIBLE_DEVICES, XLA_PYTHON_CLIENT_MEM_FRACTION, TPU_* ...).
      device_nodes: device files under /dev that the OS sandbox binds into
        the worker (e.g. /dev/nvidia0, /dev/nvidiactl, /dev/accel0); none on
        CPU.
      description: one line for people, e.g. 'cpu, 1 host device'.
    """

    env: tuple[tuple[str, str], ...]
    device_nodes: tuple[str, ...] = ()
    description: str = ''


CPU_WORKER = WorkerDevices(
    env=(('JAX_PLATFORMS', 'cpu'),
         ('XLA_FLAGS', '--xla_force_host_platform_device_count=1')),
    description='cpu, 1 host device')


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """Where the LM's process and each worker process run.

    Host-independent mistakes raise `PlanError` when the plan is made; the
    rest (devices that do not exist, too few of them) when it is applied to
    a host by `plan_workers`, `lm_env` or `describe`.

    Attributes:
      num_workers: evaluation worker processes (>= 1).
      worker_platform: where workers run: 'cpu', 'gpu' or 'tpu'.
      devices_per_worker: per worker, forced XLA host devices on 'cpu', GPUs
        on 'gpu', TPU chips (1, 2, 4 or 8) on 'tpu'.
      lm_platform: where the LM's process runs: 'cpu', 'gpu' or 'tpu'.
      lm_devices: the LM's GPU indices (PCI order, as nvidia-smi numbers
        them) or TPU chips; empty exactly when `lm_platform` is 'cpu'.
      worker_pool: the GPU indices or chips that workers are given, in
        order; empty: every GPU or chip the LM does not have (with
        `share_gpus`, every GPU). Worker i gets the next
        `devices_per_worker` of them (round robin when GPUs are shared).
      share_gpus: let processes share GPUs (the LM and workers on one GPU,
        or several workers per GPU); needs the memory fractions.
      lm_memory_fraction: with `share_gpus` and the LM on a GPU, the share
        of each of its GPUs' memory the LM may use, in (0, 1].
      worker_memory_fraction: with `share_gpus`, the share of a GPU's
        memory each worker may use, in (0, 1].
      tpu_base_port: TPU processes get two ports each from here on (process
        0 is the LM): TPU_PROCESS_PORT = base + 2p and
        TPU_MESH_CONTROLLER_PORT = base + 2p + 1.
    """

    num_workers: int = 1
    worker_platform: str = 'cpu'
    devices_per_worker: int = 1
    lm_platform: str = 'cpu'
    lm_devices: tuple[int, ...] = ()
    worker_pool: tuple[int, ...] = ()
    share_gpus: bool = False
    lm_memory_fraction: float | None = None
    worker_memory_fraction: float | None = None
    tpu_base_port: int = 8476

    def __post_init__(self):
        # Gin writes lists as readily as tuples.
        for name in ('lm_devices', 'worker_pool'):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _check_plan(self)

    @property
    def accelerator(self) -> str:
        """'gpu' or 'tpu' if a role runs on one, else 'cpu'."""
        for platform in (self.lm_platform, self.worker_platform):
            if platform != 'cpu':
                return platform
        return 'cpu'


@dataclasses.dataclass(frozen=True)
class Host:
    """The devices of one machine, as `detect_host` finds them.

    Attributes:
      cpu_count: CPU cores this process may use.
      gpu_count: NVIDIA GPUs.
      tpu_chip_count: TPU chips.
      device_nodes: the accelerator device files that exist (/dev/nvidia*,
        /dev/accel*, /dev/vfio/*).
      gpu_minors: for GPU i (PCI order), the minor number of its
        /dev/nvidia<minor>; empty: i.
      gpu_uuids: for GPU i, its UUID ('GPU-...'); empty: unknown, and
        CUDA_VISIBLE_DEVICES names GPUs by index.
      tpu_version: TPU generation ('v4', 'v5e', ...), '' if unknown.
      mem_fraction_var: the variable that carries a GPU memory fraction
        (the one the parent's environment already uses, if any).
    """

    cpu_count: int = 1
    gpu_count: int = 0
    tpu_chip_count: int = 0
    device_nodes: tuple[str, ...] = ()
    gpu_minors: tuple[int, ...] = ()
    gpu_uuids: tuple[str, ...] = ()
    tpu_version: str = ''
    mem_fraction_var: str = MEM_FRACTION_VAR


# ---------------------------------------------------------------------------
# Reading the machine.


def detect_host(*, root: str = '/', nvidia_smi: str | None = 'nvidia-smi',
                environ: Mapping[str, str] | None = None) -> Host:
    """Reads this machine's devices without starting any accelerator runtime.

    Looks at device files, /proc/driver/nvidia/gpus (minor numbers and UUIDs
    in PCI order), `nvidia-smi` if the driver's /proc entries are missing,
    and PCI ids under /sys (TPU generation). Never imports JAX.

    Args:
      root: the filesystem root to read (tests point it at a fake tree).
      nvidia_smi: the nvidia-smi program, or None not to run it.
      environ: the environment (default os.environ), for the memory
        fraction variable's name.
    """
    environ = os.environ if environ is None else environ
    dev = os.path.join(root, 'dev')
    found = []
    for pattern in ('nvidia*', 'accel*', os.path.join('vfio', '*')):
        for path in glob.glob(os.path.join(dev, pattern)):
            if not os.path.isdir(path):
                found.append('/dev/' + os.path.relpath(path, dev))
    nodes = tuple(sorted(found, key=_natural_key))

    minors, uuids = _gpus_from_proc(root)
    if not minors:
        numbered = sorted(int(m.group(1)) for m in
                          (re.fullmatch(r'/dev/nvidia(\d+)', n) for n in nodes)
                          if m)
        uuids = _gpu_uuids_from_nvidia_smi(nvidia_smi) if root == '/' else []
        if uuids and len(numbered) != len(uuids):
            numbered = list(range(len(uuids)))
        minors = numbered

    accel = [n for n in nodes if re.fullmatch(r'/dev/accel\d+', n)]
    vfio = [n for n in nodes if re.fullmatch(r'/dev/vfio/\d+', n)]
    tpu_count, tpu_version = _tpus_from_pci(root)
    tpu_count = len(accel) or len(vfio) or tpu_count
    try:
        cpu_count = len(os.sched_getaffinity(0))
    except AttributeError:
        cpu_count = os.cpu_count() or 1
    return Host(
        cpu_count=cpu_count, gpu_count=len(minors), tpu_chip_count=tpu_count,
        device_nodes=nodes, gpu_minors=tuple(minors),
        gpu_uuids=tuple(uuids) if len(uuids) == len(minors) else (),
        tpu_version=tpu_version,
        mem_fraction_var=(NEW_MEM_FRACTION_VAR if environ.get(NEW_MEM_FRACTION_VAR)
                          else MEM_FRACTION_VAR))


def _natural_key(path: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r'(\d+)', path))


def _gpus_from_proc(root: str) -> tuple[list[int], list[str]]:
    """Minor numbers and UUIDs of the GPUs in PCI bus order (as CUDA's
    PCI_BUS_ID order and nvidia-smi number them), from the driver."""
    minors, uuids = [], []
    for folder in sorted(glob.glob(os.path.join(
            root, 'proc', 'driver', 'nvidia', 'gpus', '*'))):
        try:
            with open(os.path.join(folder, 'information'),
                      encoding='utf-8') as f:
                text = f.read()
        except OSError:
            continue
        minor = re.search(r'^Device Minor:\s*(\d+)', text, re.MULTILINE)
        if minor is None:
            continue
        minors.append(int(minor.group(1)))
        uuid = re.search(r'^GPU UUID:\s*(\S+)', text, re.MULTILINE)
        uuids.append(uuid.group(1) if uuid else '')
    return minors, (uuids if all(uuids) else [])


def _gpu_uuids_from_nvidia_smi(program: str | None) -> list[str]:
    if not program or not shutil.which(program):
        return []
    try:
        out = subprocess.run(
            [program, '--query-gpu=uuid', '--format=csv,noheader'],
            capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _tpus_from_pci(root: str) -> tuple[int, str]:
    count, version = 0, ''
    for vendor_path in glob.glob(os.path.join(
            root, 'sys', 'bus', 'pci', 'devices', '*', 'vendor')):
        try:
            with open(vendor_path, encoding='utf-8') as f:
                if f.read().strip() != _GOOGLE_PCI_VENDOR:
                    continue
            with open(os.path.join(os.path.dirname(vendor_path), 'device'),
                      encoding='utf-8') as f:
                device = f.read().strip()
        except OSError:
            continue
        if device in _TPU_PCI_DEVICES:
            count += 1
            version = _TPU_PCI_DEVICES[device]
    return count, version


# ---------------------------------------------------------------------------
# Checking a plan.


def _check_plan(plan: DevicePlan) -> None:
    """What can be checked without a host."""
    for role in ('lm_platform', 'worker_platform'):
        value = getattr(plan, role)
        if value not in PLATFORMS:
            raise PlanError(f'unknown platform {value!r} for {role}: use one '
                            f'of {", ".join(map(repr, PLATFORMS))}')
    if {plan.lm_platform, plan.worker_platform} == {'gpu', 'tpu'}:
        raise PlanError('the LM on gpu and the workers on tpu (or the other '
                        'way round): a plan splits one kind of accelerator')
    if not _is_int(plan.num_workers) or plan.num_workers < 1:
        raise PlanError(f'num_workers must be at least 1, got '
                        f'{plan.num_workers!r}')
    if not _is_int(plan.devices_per_worker) or plan.devices_per_worker < 1:
        raise PlanError(
            f'devices_per_worker must be at least 1 (a worker with no '
            f'{_unit(plan.worker_platform, 2)}), got {plan.devices_per_worker!r}')
    if plan.worker_platform == 'tpu' and plan.devices_per_worker not in TPU_CHIP_BOUNDS:
        raise PlanError(f'devices_per_worker={plan.devices_per_worker} TPU chips: '
                        f'a TPU process has 1, 2, 4 or 8 chips')
    for name in ('lm_devices', 'worker_pool'):
        devices = getattr(plan, name)
        if not isinstance(devices, tuple) or not all(
                _is_int(d) and d >= 0 for d in devices):
            raise PlanError(f'{name} must be a tuple of device indices >= 0, '
                            f'got {devices!r}')
        twice = sorted({d for d in devices if devices.count(d) > 1})
        if twice:
            raise PlanError(f'{name} lists {_unit(_platform_of(plan, name))} '
                            f'{_join(twice)} more than once')
    if plan.lm_platform == 'cpu' and plan.lm_devices:
        raise PlanError(f'lm_devices={plan.lm_devices} but the LM runs on the '
                        "CPU (lm_platform='cpu'): give lm_devices=() or an "
                        'accelerator lm_platform')
    if plan.lm_platform != 'cpu' and not plan.lm_devices:
        raise PlanError(
            f"the LM on {plan.lm_platform} needs at least one "
            f"{_unit(plan.lm_platform)}: set lm_devices (e.g. (0,)), or "
            "lm_platform='cpu'")
    if plan.lm_platform == 'tpu' and len(plan.lm_devices) not in TPU_CHIP_BOUNDS:
        raise PlanError(f'lm_devices={plan.lm_devices}: a TPU process has 1, '
                        f'2, 4 or 8 chips')
    if plan.worker_platform == 'cpu' and plan.worker_pool:
        raise PlanError(f'worker_pool={plan.worker_pool} but the workers run '
                        "on the CPU (worker_platform='cpu')")
    if not isinstance(plan.share_gpus, bool):
        raise PlanError(f'share_gpus must be True or False, got '
                        f'{plan.share_gpus!r}')
    fractions = {'lm_memory_fraction': plan.lm_memory_fraction,
                 'worker_memory_fraction': plan.worker_memory_fraction}
    if not plan.share_gpus:
        given = [k for k, v in fractions.items() if v is not None]
        if given:
            raise PlanError(f'{", ".join(given)} given without share_gpus=True: '
                            'memory fractions apply only to shared GPUs')
    else:
        if plan.worker_platform != 'gpu':
            raise PlanError(
                'share_gpus=True needs the workers on GPUs (worker_platform='
                f"'gpu'), got {plan.worker_platform!r}"
                + ('; a TPU chip belongs to one process and cannot be shared'
                   if plan.accelerator == 'tpu' else ''))
        needed = ['worker_memory_fraction'] + (
            ['lm_memory_fraction'] if plan.lm_platform == 'gpu' else [])
        for name in needed:
            if fractions[name] is None:
                raise PlanError(f'share_gpus=True needs {name} (the share of '
                                'a GPU\'s memory, in (0, 1])')
        if plan.lm_platform != 'gpu' and plan.lm_memory_fraction is not None:
            raise PlanError('lm_memory_fraction given but the LM is not on a GPU')
        for name, value in fractions.items():
            if value is None:
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0 < value <= 1):
                raise PlanError(f'{name} must be in (0, 1], got {value!r}')
    ports = 2 * (plan.num_workers + 1)
    if (not _is_int(plan.tpu_base_port) or plan.tpu_base_port < 1024
            or plan.tpu_base_port + ports - 1 > 65535):
        raise PlanError(f'tpu_base_port={plan.tpu_base_port!r}: the TPU '
                        f'processes need {ports} ports from it on, within '
                        '1024-65535')


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _platform_of(plan: DevicePlan, field: str) -> str:
    return plan.lm_platform if field == 'lm_devices' else plan.worker_platform


def _unit(platform: str, count: int = 1) -> str:
    name = {'cpu': 'host device', 'gpu': 'GPU', 'tpu': 'TPU chip'}[platform]
    return name if count == 1 else name + 's'


def _join(items: Sequence[Any]) -> str:
    return ','.join(str(i) for i in items)


@dataclasses.dataclass(frozen=True)
class _Assignment:
    """Who gets which accelerator indices (empty: the CPU)."""

    lm: tuple[int, ...]
    workers: tuple[tuple[int, ...], ...]


def _available(platform: str, host: Host) -> int:
    return host.gpu_count if platform == 'gpu' else host.tpu_chip_count


def _options(plan: DevicePlan, host: Host) -> str:
    """The arrangements that fit this host, for error messages."""
    accel = plan.accelerator
    n = _available(accel, host)
    lines = []
    if accel == 'tpu' and n == 1:
        lines.append(
            'this host has one TPU chip, and a chip belongs to one process, '
            'so the LM and the workers cannot both use it. Either the LM on '
            "the CPU and one worker on the chip (lm_platform='cpu', "
            'lm_devices=(), NUM_WORKERS=1), or the LM on the chip and the '
            "workers on the CPU (worker_platform='cpu', devices_per_worker=1)")
        return ': ' + lines[0]
    if plan.worker_platform == accel:
        free = n - (len(plan.lm_devices) if plan.lm_platform == accel else 0)
        fit = free // plan.devices_per_worker
        if fit >= 1:
            lines.append(f'fewer workers (NUM_WORKERS = {fit} fits)')
        if plan.lm_platform == accel:
            lines.append("the LM on the CPU (lm_platform='cpu', lm_devices=()) "
                         f'so the workers get all {n} {_unit(accel, n)}')
        lines.append("the workers on the CPU (worker_platform='cpu')")
        if accel == 'gpu' and not plan.share_gpus:
            lines.append('shared GPUs (share_gpus=True with lm_memory_fraction '
                         'and worker_memory_fraction; gin/devices/gpu_shared.gin)')
    return '. Options: ' + '; '.join(lines) if lines else ''


def _assign(plan: DevicePlan, host: Host) -> _Assignment:
    """Checks `plan` against `host` and gives each process its devices."""
    accel = plan.accelerator
    if plan.worker_platform == 'cpu':
        need = plan.num_workers * plan.devices_per_worker
        if need > host.cpu_count:
            raise PlanError(
                f'{plan.num_workers} CPU workers x {plan.devices_per_worker} '
                f'host devices = {need}, more than the {host.cpu_count} CPU '
                'cores of this host: lower NUM_WORKERS or devices_per_worker')
    if accel == 'cpu':
        return _Assignment((), ((),) * plan.num_workers)
    n = _available(accel, host)
    unit = _unit(accel, 2)
    if n == 0:
        looked = ('/dev/nvidia* or nvidia-smi' if accel == 'gpu' else
                  '/dev/accel*, /dev/vfio/<n> or a TPU PCI device')
        raise PlanError(f'the plan runs on {accel} but this host has no {unit} '
                        f'(found no {looked}): use gin/devices/cpu.gin')
    options = _options(plan, host)
    for name in ('lm_devices', 'worker_pool'):
        missing = [d for d in getattr(plan, name) if d >= n]
        if missing:
            raise PlanError(f'{name}: {_unit(accel, len(missing))} '
                            f'{_join(missing)} not on this host (it has '
                            f'{unit} 0-{n - 1}){options}')
    lm = plan.lm_devices if plan.lm_platform == accel else ()
    if plan.worker_platform == 'cpu':
        workers: tuple[tuple[int, ...], ...] = ((),) * plan.num_workers
    elif plan.share_gpus:
        k = plan.devices_per_worker
        pool = plan.worker_pool or tuple(range(n))
        if k > len(pool):
            raise PlanError(f'devices_per_worker={k} but the workers share only '
                            f'{len(pool)} GPUs ({_join(pool)})')
        workers = tuple(tuple(pool[(i * k + j) % len(pool)] for j in range(k))
                        for i in range(plan.num_workers))
        _check_fractions(plan, lm, workers)
    else:
        k = plan.devices_per_worker
        pool = plan.worker_pool or tuple(d for d in range(n) if d not in lm)
        both = sorted(set(pool) & set(lm))
        if both:
            raise PlanError(
                f'{_unit(accel, len(both))} {_join(both)} would be in two '
                'processes (the LM and a worker)'
                + ('; a TPU chip belongs to one process' if accel == 'tpu' else
                   '; to share GPUs set share_gpus=True with memory fractions')
                + options)
        need = plan.num_workers * k
        if need > len(pool):
            if accel == 'tpu' and n == 1:
                raise PlanError(f'the plan needs {len(lm) + need} TPU chips{options}')
            held = f'; the LM has {_unit(accel, len(lm))} {_join(lm)}' if lm else ''
            raise PlanError(
                f'{plan.num_workers} workers x {k} {_unit(accel, k)} = {need} '
                f'{unit}, but only {len(pool)} are free for workers (this host '
                f'has {n}{held}){options}')
        workers = tuple(tuple(pool[i * k:(i + 1) * k])
                        for i in range(plan.num_workers))
    if accel == 'tpu':
        processes = [('the LM', lm)] if lm else []
        processes += [(f'worker {i}', w) for i, w in enumerate(workers) if w]
        for who, chips in processes:
            _check_chip_block(who, chips)
    return _Assignment(lm, workers)


def _check_chip_block(who: str, chips: Sequence[int]) -> None:
    """libtpu runs a process on a block of chips that its bounds describe:
    1, 2, 4 or 8 consecutive chips starting at a multiple of the count."""
    size = len(chips)
    if list(chips) != list(range(chips[0], chips[0] + size)) or chips[0] % size:
        raise PlanError(
            f'{who} would get TPU chips {_join(chips)}: a process needs an '
            f'aligned block of {size} chips ({_join(range(size))}, '
            f'{_join(range(size, 2 * size))}, ...); set lm_devices or '
            'worker_pool so that each process gets one')


def _check_fractions(plan: DevicePlan, lm: tuple[int, ...],
                     workers: tuple[tuple[int, ...], ...]) -> None:
    users: dict[int, list[tuple[str, float]]] = {}
    for gpu in lm:
        users.setdefault(gpu, []).append(('the LM', plan.lm_memory_fraction))
    for i, gpus in enumerate(workers):
        for gpu in gpus:
            users.setdefault(gpu, []).append(
                (f'worker {i}', plan.worker_memory_fraction))
    for gpu, who in sorted(users.items()):
        total = sum(f for _, f in who)
        if total > 1 + 1e-9:
            parts = ' + '.join(f'{name} {f:g}' for name, f in who)
            raise PlanError(
                f'GPU {gpu} is shared by {parts} = {total:.3g} of its memory, '
                'more than 1: lower the memory fractions or NUM_WORKERS')


# ---------------------------------------------------------------------------
# Environments.


def _gpu_env(plan: DevicePlan, host: Host, gpus: Sequence[int],
             fraction: float | None) -> dict[str, str]:
    names = [host.gpu_uuids[g] if host.gpu_uuids else str(g) for g in gpus]
    env = {'JAX_PLATFORMS': 'cuda,cpu', 'CUDA_DEVICE_ORDER': 'PCI_BUS_ID',
           'CUDA_VISIBLE_DEVICES': ','.join(names)}
    if plan.share_gpus:
        env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
        env[host.mem_fraction_var] = f'{fraction:g}'
    return env


def _tpu_env(plan: DevicePlan, chips: Sequence[int], process: int) -> dict[str, str]:
    bounds = TPU_CHIP_BOUNDS[len(chips)]
    port = plan.tpu_base_port + 2 * process
    mesh_port = port + 1
    visible = ','.join(str(c) for c in chips)
    return {
        'JAX_PLATFORMS': 'tpu,cpu',
        'TPU_VISIBLE_CHIPS': visible,
        'TPU_VISIBLE_DEVICES': visible,           # Older runtimes.
        'TPU_CHIPS_PER_PROCESS_BOUNDS': bounds,
        'TPU_PROCESS_BOUNDS': '1,1,1',            # A standalone process.
        'TPU_CHIPS_PER_HOST_BOUNDS': bounds,      # Older names of the two.
        'TPU_HOST_BOUNDS': '1,1,1',
        'TPU_PROCESS_PORT': str(port),
        'TPU_PROCESS_ADDRESSES': f'localhost:{port}',
        'CLOUD_TPU_TASK_ID': '0',
        'TPU_MESH_CONTROLLER_ADDRESS': f'localhost:{mesh_port}',
        'TPU_MESH_CONTROLLER_PORT': str(mesh_port),
        # libtpu's /tmp/libtpu_lockfile otherwise refuses a second process
        # (the OS sandbox gives each worker its own /tmp; the process-level
        # fallback does not).
        'ALLOW_MULTIPLE_LIBTPU_LOAD': '1',
    }


def _cpu_env(host: Host, count: int | None) -> dict[str, str]:
    env = {'JAX_PLATFORMS': 'cpu'}
    if count is not None:
        env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={count}'
        # Takes precedence over the XLA flag in JAX >= 0.4.32, so a
        # JAX_NUM_CPU_DEVICES inherited from the parent cannot override it.
        env['JAX_NUM_CPU_DEVICES'] = str(count)
    if host.gpu_count:
        env['CUDA_VISIBLE_DEVICES'] = ''
    return env


def _gpu_nodes(host: Host, gpus: Sequence[int]) -> tuple[str, ...]:
    nodes = []
    for g in gpus:
        minor = host.gpu_minors[g] if host.gpu_minors else g
        node = f'/dev/nvidia{minor}'
        if node not in host.device_nodes:
            raise PlanError(f'GPU {g}: its device file {node} does not exist')
        nodes.append(node)
    return tuple(nodes) + tuple(n for n in _NVIDIA_SHARED_NODES
                                if n in host.device_nodes)


def _tpu_chip_nodes(host: Host) -> list[str]:
    accel = [n for n in host.device_nodes if re.fullmatch(r'/dev/accel\d+', n)]
    if accel:
        return sorted(accel, key=_natural_key)
    return sorted((n for n in host.device_nodes
                   if re.fullmatch(r'/dev/vfio/\d+', n)), key=_natural_key)


def _tpu_nodes(host: Host, chips: Sequence[int]) -> tuple[str, ...]:
    per_chip = _tpu_chip_nodes(host)
    if len(per_chip) != host.tpu_chip_count:
        raise PlanError(
            f'found {len(per_chip)} TPU device files (/dev/accel*, '
            f'/dev/vfio/<n>) for {host.tpu_chip_count} chips: cannot tell '
            'which file is which chip')
    nodes = tuple(per_chip[c] for c in chips)
    if nodes[0].startswith('/dev/vfio/') and _VFIO_CONTAINER in host.device_nodes:
        nodes += (_VFIO_CONTAINER,)
    return nodes


def plan_workers(plan: DevicePlan, host: Host) -> tuple[WorkerDevices, ...]:
    """One `WorkerDevices` per worker: its environment and device files.

    Raises:
      PlanError: the plan does not fit `host`.
    """
    assignment = _assign(plan, host)
    workers = []
    for i, devices in enumerate(assignment.workers):
        if plan.worker_platform == 'cpu':
            k = plan.devices_per_worker
            env = _cpu_env(host, k)
            nodes: tuple[str, ...] = ()
            text = f'cpu, {k} host device{"s" * (k > 1)}'
        elif plan.worker_platform == 'gpu':
            env = _gpu_env(plan, host, devices, plan.worker_memory_fraction)
            nodes = _gpu_nodes(host, devices)
            text = f'{_unit("gpu", len(devices))} {_join(devices)}'
            if plan.share_gpus:
                text += f' (shared; {plan.worker_memory_fraction:g} of its memory)'
        else:
            env = _tpu_env(plan, devices, process=i + 1)
            nodes = _tpu_nodes(host, devices)
            text = f'{_unit("tpu", len(devices))} {_join(devices)}'
        workers.append(WorkerDevices(env=tuple(env.items()), device_nodes=nodes,
                                     description=text))
    return tuple(workers)


def lm_env(plan: DevicePlan, host: Host) -> dict[str, str]:
    """The environment of the LM's process, to apply before JAX starts there.

    Raises:
      PlanError: the plan does not fit `host`.
    """
    assignment = _assign(plan, host)
    if plan.lm_platform == 'gpu':
        return _gpu_env(plan, host, assignment.lm, plan.lm_memory_fraction)
    if plan.lm_platform == 'tpu':
        return _tpu_env(plan, assignment.lm, process=0)
    return _cpu_env(host, None)


def apply_lm_env(plan: DevicePlan, host: Host,
                 environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Sets `lm_env(plan, host)` in `environ` (default os.environ).

    Call it before JAX initialises its backends (first thing in `main`):
    the accelerator runtimes read these variables when they start. Returns
    what was set.

    Raises:
      PlanError: the plan does not fit `host`, or JAX's backends are
        already initialised in this process.
    """
    env = lm_env(plan, host)
    bridge = sys.modules.get('jax._src.xla_bridge')
    if environ is None and bridge is not None and getattr(bridge, '_backends', None):
        raise PlanError('JAX has already started its backends in this process: '
                        'apply the device plan before any JAX computation')
    target = os.environ if environ is None else environ
    target.update(env)
    return env


def worker_devices(plan: DevicePlan) -> tuple[WorkerDevices, ...]:
    """`plan_workers` on this machine; for gin:
    `evaluator.Sandbox.workers = @devices.worker_devices()`."""
    return plan_workers(plan, detect_host())


# ---------------------------------------------------------------------------
# Reports.


def _lm_text(plan: DevicePlan, assignment: _Assignment) -> str:
    if plan.lm_platform == 'cpu':
        return "cpu (host devices: main's --cpu_devices)"
    text = (f'{_unit(plan.lm_platform, len(assignment.lm))} '
            f'{_join(assignment.lm)}')
    if plan.share_gpus and plan.lm_platform == 'gpu':
        text += f' (shared; {plan.lm_memory_fraction:g} of its memory)'
    return text


def _host_text(host: Host) -> str:
    parts = [f'{host.cpu_count} CPU cores']
    if host.gpu_count:
        parts.append(f'{host.gpu_count} GPU{"s" * (host.gpu_count > 1)}')
    if host.tpu_chip_count:
        version = f' {host.tpu_version}' if host.tpu_version else ''
        parts.append(f'{host.tpu_chip_count} TPU{version} '
                     f'chip{"s" * (host.tpu_chip_count > 1)}')
    return ', '.join(parts)


def _notes(plan: DevicePlan, host: Host) -> list[str]:
    notes = []
    if plan.accelerator == 'cpu' and (host.gpu_count or host.tpu_chip_count):
        kind = 'GPUs' if host.gpu_count else 'TPU chips'
        notes.append(f'this host has {kind} and the plan uses none (layer '
                     f'gin/devices/{"gpu" if host.gpu_count else "tpu"}.gin '
                     'after the run file to use them)')
    if plan.accelerator == 'tpu':
        if plan.lm_platform == 'tpu' and plan.worker_platform == 'tpu':
            notes.append(
                'the LM and each worker are separate libtpu processes on '
                'disjoint chips (TPU_VISIBLE_CHIPS, own bounds and ports), '
                'as public multi-process TPU recipes do; not yet run on a '
                "TPU here. If libtpu refuses, run the LM on the CPU "
                "(lm_platform='cpu') or the workers on the CPU "
                "(worker_platform='cpu')")
        if host.tpu_chip_count == 1:
            notes.append(
                'one TPU chip: it serves one process, either the LM (workers '
                "on the CPU) or one worker (the LM on the CPU)")
        if host.tpu_version in _TWO_DEVICES_PER_CHIP:
            notes.append(f'TPU {host.tpu_version}: each chip is 2 JAX devices')
    return notes


def describe(plan: DevicePlan, host: Host) -> str:
    """A few lines for start-up: who gets which device.

    Raises:
      PlanError: the plan does not fit `host`.
    """
    assignment = _assign(plan, host)
    lines = [f'Device plan on this host ({_host_text(host)}):',
             f'  LM: {_lm_text(plan, assignment)}']
    workers = plan_workers(plan, host)
    for i, worker in enumerate(workers):
        lines.append(f'  worker {i}: {worker.description}')
    lines += [f'  note: {n}' for n in _notes(plan, host)]
    return '\n'.join(lines)


def plan_to_json(plan: DevicePlan, host: Host) -> dict:
    """The plan, the host and what each process gets, JSON-serialisable
    (for run_metadata.json).

    Raises:
      PlanError: the plan does not fit `host`.
    """
    assignment = _assign(plan, host)
    return {
        'plan': _lists(dataclasses.asdict(plan)),
        'host': _lists(dataclasses.asdict(host)),
        'lm': {'platform': plan.lm_platform, 'devices': list(assignment.lm),
               'env': lm_env(plan, host)},
        'workers': [{'description': w.description, 'env': dict(w.env),
                     'device_nodes': list(w.device_nodes)}
                    for w in plan_workers(plan, host)],
        'notes': _notes(plan, host),
    }


def _lists(record: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}
