"""The device plan: CPU, GPU and TPU plans on faked hosts, every invalid plan's
error, host detection on a fake filesystem, and the shipped gin/devices files."""

import dataclasses
import glob
import json
import os

import gin
import pytest

from evoprompting import devices, gin_utils

DevicePlan, Host, PlanError = devices.DevicePlan, devices.Host, devices.PlanError
NVIDIA_SHARED = ('/dev/nvidiactl', '/dev/nvidia-uvm', '/dev/nvidia-uvm-tools')


def gpu_host(n, *, cpus=64, uuids=True, minors=None, shared=NVIDIA_SHARED):
    minors = tuple(range(n)) if minors is None else minors
    return Host(cpu_count=cpus, gpu_count=n,
                device_nodes=tuple(f'/dev/nvidia{m}' for m in minors) + shared,
                gpu_minors=minors,
                gpu_uuids=tuple(f'GPU-{i:04d}' for i in range(n)) if uuids else ())


def tpu_host(n, *, cpus=96, version='v4', vfio=False):
    nodes = (tuple(f'/dev/vfio/{i}' for i in range(n)) + ('/dev/vfio/vfio',)
             if vfio else tuple(f'/dev/accel{i}' for i in range(n)))
    return Host(cpu_count=cpus, tpu_chip_count=n, device_nodes=nodes,
                tpu_version=version)


def envs(workers):
    return [dict(w.env) for w in workers]


# ---------------------------------------------------------------------------
# CPU.


@pytest.mark.parametrize('num_workers, per_worker', [(1, 1), (4, 1), (3, 2)])
def test_cpu_workers_get_forced_host_devices(num_workers, per_worker):
    plan = DevicePlan(num_workers=num_workers, devices_per_worker=per_worker)
    workers = devices.plan_workers(plan, Host(cpu_count=8))
    assert len(workers) == num_workers
    for worker in workers:
        env = dict(worker.env)
        assert env['JAX_PLATFORMS'] == 'cpu'
        assert env['XLA_FLAGS'] == (
            f'--xla_force_host_platform_device_count={per_worker}')
        assert env['JAX_NUM_CPU_DEVICES'] == str(per_worker)
        assert 'CUDA_VISIBLE_DEVICES' not in env
        assert worker.device_nodes == ()
    assert workers[0].description == (
        'cpu, 1 host device' if per_worker == 1 else f'cpu, {per_worker} host devices')
    assert devices.lm_env(plan, Host(cpu_count=8)) == {'JAX_PLATFORMS': 'cpu'}


def test_one_cpu_worker_matches_the_default_worker():
    (worker,) = devices.plan_workers(DevicePlan(), Host(cpu_count=1))
    assert worker.description == devices.CPU_WORKER.description
    assert set(devices.CPU_WORKER.env) <= set(worker.env)


def test_cpu_roles_on_an_accelerator_host_hide_the_gpus():
    plan = DevicePlan(num_workers=2)
    host = gpu_host(2)
    for env in envs(devices.plan_workers(plan, host)) + [devices.lm_env(plan, host)]:
        assert env['JAX_PLATFORMS'] == 'cpu'
        assert env['CUDA_VISIBLE_DEVICES'] == ''
    assert 'uses none' in devices.describe(plan, host)


# ---------------------------------------------------------------------------
# GPU.


def test_gpu_workers_get_disjoint_gpus_and_their_device_files():
    plan = DevicePlan(num_workers=3, worker_platform='gpu', devices_per_worker=2,
                      lm_platform='gpu', lm_devices=(0,))
    host = gpu_host(8)
    workers = devices.plan_workers(plan, host)
    lm = devices.lm_env(plan, host)
    assert lm['CUDA_VISIBLE_DEVICES'] == 'GPU-0000'
    visible = [e['CUDA_VISIBLE_DEVICES'] for e in envs(workers)]
    assert visible == ['GPU-0001,GPU-0002', 'GPU-0003,GPU-0004',
                       'GPU-0005,GPU-0006']
    used = [g for v in visible + [lm['CUDA_VISIBLE_DEVICES']] for g in v.split(',')]
    assert len(used) == len(set(used))
    for env in envs(workers) + [lm]:
        assert env['JAX_PLATFORMS'] == 'cuda,cpu'
        assert env['CUDA_DEVICE_ORDER'] == 'PCI_BUS_ID'
        assert 'XLA_PYTHON_CLIENT_MEM_FRACTION' not in env
        assert 'XLA_PYTHON_CLIENT_PREALLOCATE' not in env
    assert workers[1].device_nodes == ('/dev/nvidia3', '/dev/nvidia4') + NVIDIA_SHARED
    assert workers[1].description == 'GPUs 3,4'


def test_gpu_indices_without_uuids_minor_numbers_and_missing_uvm_tools():
    host = gpu_host(2, uuids=False, minors=(4, 7),
                    shared=('/dev/nvidiactl', '/dev/nvidia-uvm'))
    plan = DevicePlan(worker_platform='gpu', lm_platform='gpu', lm_devices=(0,))
    (worker,) = devices.plan_workers(plan, host)
    assert dict(worker.env)['CUDA_VISIBLE_DEVICES'] == '1'
    assert worker.device_nodes == ('/dev/nvidia7', '/dev/nvidiactl',
                                   '/dev/nvidia-uvm')


def test_gpu_workers_with_the_lm_on_the_cpu_take_every_gpu():
    plan = DevicePlan(num_workers=4, worker_platform='gpu')
    host = gpu_host(4, uuids=False)
    assert [e['CUDA_VISIBLE_DEVICES'] for e in envs(
        devices.plan_workers(plan, host))] == ['0', '1', '2', '3']
    assert devices.lm_env(plan, host) == {'JAX_PLATFORMS': 'cpu',
                                          'CUDA_VISIBLE_DEVICES': ''}


def test_shared_gpu_sets_memory_fractions_and_no_preallocation():
    plan = DevicePlan(num_workers=2, worker_platform='gpu', lm_platform='gpu',
                      lm_devices=(0,), share_gpus=True, lm_memory_fraction=0.45,
                      worker_memory_fraction=0.2)
    host = gpu_host(1)
    lm = devices.lm_env(plan, host)
    workers = devices.plan_workers(plan, host)
    assert lm['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.45'
    for env in envs(workers):
        assert env['CUDA_VISIBLE_DEVICES'] == 'GPU-0000'
        assert env['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'
        assert env['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.2'
    assert lm['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'
    assert workers[0].device_nodes == ('/dev/nvidia0',) + NVIDIA_SHARED
    assert 'shared; 0.2 of its memory' in workers[0].description


def test_shared_gpus_go_round_the_pool():
    plan = DevicePlan(num_workers=4, worker_platform='gpu', lm_platform='gpu',
                      lm_devices=(0,), worker_pool=(1, 2), share_gpus=True,
                      lm_memory_fraction=0.9, worker_memory_fraction=0.5)
    workers = devices.plan_workers(plan, gpu_host(3, uuids=False))
    assert [e['CUDA_VISIBLE_DEVICES'] for e in envs(workers)] == ['1', '2', '1', '2']


def test_shared_gpu_uses_the_memory_fraction_name_the_parent_uses():
    host = gpu_host(1)
    host = dataclasses.replace(host, mem_fraction_var='XLA_CLIENT_MEM_FRACTION')
    plan = DevicePlan(worker_platform='gpu', share_gpus=True,
                      worker_memory_fraction=0.5)
    env = envs(devices.plan_workers(plan, host))[0]
    assert env['XLA_CLIENT_MEM_FRACTION'] == '0.5'
    assert 'XLA_PYTHON_CLIENT_MEM_FRACTION' not in env


# ---------------------------------------------------------------------------
# TPU.


def test_tpu_processes_get_disjoint_chips_unique_ports_and_bounds():
    plan = DevicePlan(num_workers=3, worker_platform='tpu', lm_platform='tpu',
                      lm_devices=(0,))
    host = tpu_host(4)
    lm = devices.lm_env(plan, host)
    workers = devices.plan_workers(plan, host)
    everyone = [lm] + envs(workers)
    assert [e['TPU_VISIBLE_CHIPS'] for e in everyone] == ['0', '1', '2', '3']
    ports = [int(e[k]) for e in everyone
             for k in ('TPU_PROCESS_PORT', 'TPU_MESH_CONTROLLER_PORT')]
    assert len(ports) == len(set(ports)) == 8
    for env in everyone:
        assert env['JAX_PLATFORMS'] == 'tpu,cpu'
        assert env['TPU_VISIBLE_DEVICES'] == env['TPU_VISIBLE_CHIPS']
        assert env['TPU_CHIPS_PER_PROCESS_BOUNDS'] == '1,1,1'
        assert env['TPU_PROCESS_BOUNDS'] == '1,1,1'
        assert env['TPU_MESH_CONTROLLER_ADDRESS'] == (
            f'localhost:{env["TPU_MESH_CONTROLLER_PORT"]}')
        assert env['TPU_PROCESS_ADDRESSES'] == f'localhost:{env["TPU_PROCESS_PORT"]}'
        assert env['ALLOW_MULTIPLE_LIBTPU_LOAD'] == '1'
    assert [w.device_nodes for w in workers] == [
        ('/dev/accel1',), ('/dev/accel2',), ('/dev/accel3',)]
    assert 'separate libtpu processes' in devices.describe(plan, host)


@pytest.mark.parametrize('per_process, bounds', [(2, '1,2,1'), (4, '2,2,1')])
def test_tpu_multi_chip_processes(per_process, bounds):
    lm = tuple(range(per_process))
    plan = DevicePlan(num_workers=8 // per_process - 1, worker_platform='tpu',
                      devices_per_worker=per_process, lm_platform='tpu',
                      lm_devices=lm)
    host = tpu_host(8, version='v6e')
    everyone = [devices.lm_env(plan, host)] + envs(devices.plan_workers(plan, host))
    chips = [e['TPU_VISIBLE_CHIPS'] for e in everyone]
    assert chips == [','.join(str(c) for c in range(i, i + per_process))
                     for i in range(0, 8, per_process)]
    assert {e['TPU_CHIPS_PER_PROCESS_BOUNDS'] for e in everyone} == {bounds}
    assert {e['TPU_CHIPS_PER_HOST_BOUNDS'] for e in everyone} == {bounds}


def test_tpu_chips_on_vfio_hosts():
    plan = DevicePlan(num_workers=2, worker_platform='tpu')
    workers = devices.plan_workers(plan, tpu_host(2, vfio=True, version='v5e'))
    assert [w.device_nodes for w in workers] == [
        ('/dev/vfio/0', '/dev/vfio/vfio'), ('/dev/vfio/1', '/dev/vfio/vfio')]


def test_two_devices_per_chip_is_noted_on_v3():
    plan = DevicePlan(num_workers=3, worker_platform='tpu', lm_platform='tpu',
                      lm_devices=(0,))
    assert 'each chip is 2 JAX devices' in devices.describe(
        plan, tpu_host(4, version='v3'))


def test_one_chip_tpu_host():
    host = tpu_host(1, version='v5e')
    both = DevicePlan(worker_platform='tpu', lm_platform='tpu', lm_devices=(0,))
    with pytest.raises(PlanError, match='one TPU chip') as e:
        devices.plan_workers(both, host)
    assert "lm_platform='cpu'" in str(e.value)
    assert "worker_platform='cpu'" in str(e.value)
    # The two arrangements that work.
    lm_on_cpu = DevicePlan(worker_platform='tpu')
    (worker,) = devices.plan_workers(lm_on_cpu, host)
    assert dict(worker.env)['TPU_VISIBLE_CHIPS'] == '0'
    assert devices.lm_env(lm_on_cpu, host) == {'JAX_PLATFORMS': 'cpu'}
    workers_on_cpu = DevicePlan(num_workers=4, lm_platform='tpu', lm_devices=(0,))
    assert devices.lm_env(workers_on_cpu, host)['TPU_VISIBLE_CHIPS'] == '0'
    assert {dict(w.env)['JAX_PLATFORMS'] for w in devices.plan_workers(
        workers_on_cpu, host)} == {'cpu'}
    for plan in (lm_on_cpu, workers_on_cpu):
        assert 'one TPU chip: it serves one process' in devices.describe(plan, host)
    with pytest.raises(PlanError, match='one TPU chip'):
        devices.plan_workers(DevicePlan(num_workers=2, worker_platform='tpu'), host)


# ---------------------------------------------------------------------------
# Invalid plans.


@pytest.mark.parametrize('kwargs, words', [
    (dict(worker_platform='xpu'), "unknown platform 'xpu' for worker_platform"),
    (dict(lm_platform='metal', lm_devices=(0,)), "unknown platform 'metal'"),
    (dict(num_workers=0), 'num_workers must be at least 1'),
    (dict(num_workers=-2), 'num_workers must be at least 1'),
    (dict(devices_per_worker=0), 'devices_per_worker must be at least 1'),
    (dict(worker_platform='tpu', devices_per_worker=3), '1, 2, 4 or 8'),
    (dict(lm_platform='gpu'), 'the LM on gpu needs at least one GPU'),
    (dict(lm_platform='tpu', lm_devices=()), 'needs at least one TPU chip'),
    (dict(lm_devices=(0,)), "the LM runs on the CPU"),
    (dict(lm_platform='gpu', lm_devices=(1, 1)), 'lists GPU 1 more than once'),
    (dict(lm_platform='tpu', lm_devices=(0, 1, 2)), '1, 2, 4 or 8 chips'),
    (dict(worker_pool=(1,)), 'the workers run on the CPU'),
    (dict(lm_platform='gpu', lm_devices=(0,), worker_platform='tpu'),
     'one kind of accelerator'),
    (dict(worker_platform='gpu', lm_memory_fraction=0.5),
     'without share_gpus=True'),
    (dict(worker_platform='gpu', share_gpus=True), 'needs worker_memory_fraction'),
    (dict(worker_platform='gpu', lm_platform='gpu', lm_devices=(0,),
          share_gpus=True, worker_memory_fraction=0.3), 'needs lm_memory_fraction'),
    (dict(worker_platform='gpu', share_gpus=True, worker_memory_fraction=0.0),
     r'worker_memory_fraction must be in \(0, 1\]'),
    (dict(worker_platform='gpu', share_gpus=True, worker_memory_fraction=-0.1),
     r'must be in \(0, 1\]'),
    (dict(worker_platform='gpu', share_gpus=True, worker_memory_fraction=1.5),
     r'must be in \(0, 1\]'),
    (dict(worker_platform='gpu', share_gpus=True, worker_memory_fraction=0.5,
          lm_memory_fraction=0.5), 'the LM is not on a GPU'),
    (dict(worker_platform='tpu', share_gpus=True, worker_memory_fraction=0.5),
     'a TPU chip belongs to one process'),
    (dict(share_gpus='yes'), 'share_gpus must be True or False'),
    (dict(tpu_base_port=80), 'tpu_base_port=80'),
])
def test_invalid_plans_are_refused_when_made(kwargs, words):
    with pytest.raises(PlanError, match=words):
        DevicePlan(**kwargs)


SHARED = dict(worker_platform='gpu', lm_platform='gpu', lm_devices=(0,),
              share_gpus=True)


@pytest.mark.parametrize('kwargs, host, words', [
    # More devices than exist.
    (dict(num_workers=4, worker_platform='gpu', lm_platform='gpu',
          lm_devices=(0,)), gpu_host(4),
     r'4 workers x 1 GPU = 4 GPUs, but only 3 are free.*NUM_WORKERS = 3 fits'),
    (dict(num_workers=2, worker_platform='gpu', devices_per_worker=4),
     gpu_host(4), 'only 4 are free'),
    (dict(worker_platform='gpu', lm_platform='gpu', lm_devices=(0, 8)),
     gpu_host(8), 'GPU 8 not on this host'),
    (dict(worker_platform='gpu', worker_pool=(2,)), gpu_host(2),
     'worker_pool: GPU 2 not on this host'),
    (dict(worker_platform='gpu'), Host(cpu_count=8), 'this host has no GPUs'),
    (dict(worker_platform='tpu'), Host(cpu_count=8), 'this host has no TPU chips'),
    (dict(num_workers=5, worker_platform='tpu', lm_platform='tpu',
          lm_devices=(0,)), tpu_host(4), 'NUM_WORKERS = 3 fits'),
    (dict(num_workers=9), Host(cpu_count=8), 'more than the 8 CPU cores'),
    (dict(num_workers=3, devices_per_worker=4), Host(cpu_count=8),
     '3 CPU workers x 4 host devices = 12'),
    # A device in two processes.
    (dict(worker_platform='gpu', lm_platform='gpu', lm_devices=(0,),
          worker_pool=(0, 1)), gpu_host(2),
     'GPU 0 would be in two processes.*share_gpus=True'),
    (dict(worker_platform='tpu', lm_platform='tpu', lm_devices=(0,),
          worker_pool=(0,)), tpu_host(4),
     'TPU chip 0 would be in two processes.*a TPU chip belongs to one process'),
    # Memory fractions above 1 in total on a GPU.
    (dict(num_workers=3, lm_memory_fraction=0.5, worker_memory_fraction=0.2,
          **SHARED), gpu_host(1),
     r'GPU 0 is shared by the LM 0.5 \+ worker 0 0.2 \+ worker 1 0.2 \+ '
     r'worker 2 0.2 = 1.1'),
    (dict(num_workers=2, devices_per_worker=2, lm_memory_fraction=0.5,
          worker_memory_fraction=0.5, **SHARED), gpu_host(1),
     'the workers share only 1 GPUs'),
    # Chips that no libtpu process shape covers.
    (dict(num_workers=1, worker_platform='tpu', devices_per_worker=2,
          lm_platform='tpu', lm_devices=(0,), worker_pool=(1, 2)), tpu_host(4),
     'worker 0 would get TPU chips 1,2: a process needs an aligned block'),
    (dict(num_workers=1, worker_platform='tpu', devices_per_worker=2,
          lm_platform='tpu', lm_devices=(1,)), tpu_host(4),
     'worker 0 would get TPU chips 0,2'),
    (dict(lm_platform='tpu', lm_devices=(1, 2)), tpu_host(4),
     'the LM would get TPU chips 1,2'),
])
def test_plans_that_do_not_fit_the_host(kwargs, host, words):
    plan = DevicePlan(**kwargs)
    for apply in (devices.plan_workers, devices.lm_env, devices.describe,
                  devices.plan_to_json):
        with pytest.raises(PlanError, match=words):
            apply(plan, host)


def test_a_gpu_without_its_device_file_is_an_error():
    host = Host(cpu_count=8, gpu_count=2, device_nodes=('/dev/nvidia0',))
    with pytest.raises(PlanError, match='/dev/nvidia1 does not exist'):
        devices.plan_workers(DevicePlan(num_workers=2, worker_platform='gpu'), host)


def test_plan_errors_are_value_errors():
    assert issubclass(PlanError, ValueError)


# ---------------------------------------------------------------------------
# Reports and the LM's environment.


def test_describe_says_who_gets_what():
    plan = DevicePlan(num_workers=2, worker_platform='gpu', lm_platform='gpu',
                      lm_devices=(0,))
    text = devices.describe(plan, gpu_host(3, cpus=16))
    assert text.splitlines() == [
        'Device plan on this host (16 CPU cores, 3 GPUs):',
        '  LM: GPU 0', '  worker 0: GPU 1', '  worker 1: GPU 2']


def test_plan_to_json_round_trips():
    plan = DevicePlan(num_workers=3, worker_platform='tpu', lm_platform='tpu',
                      lm_devices=(0,))
    record = devices.plan_to_json(plan, tpu_host(4))
    assert json.loads(json.dumps(record)) == record
    assert record['plan']['lm_devices'] == [0]
    assert record['lm']['devices'] == [0]
    assert record['lm']['env']['TPU_VISIBLE_CHIPS'] == '0'
    assert [w['env']['TPU_VISIBLE_CHIPS'] for w in record['workers']] == ['1', '2', '3']
    assert record['workers'][0]['device_nodes'] == ['/dev/accel1']
    assert record['host']['tpu_chip_count'] == 4
    assert DevicePlan(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in record['plan'].items()}) == plan


def test_apply_lm_env_sets_the_variables():
    plan = DevicePlan(worker_platform='gpu', lm_platform='gpu', lm_devices=(0,))
    environ = {'PATH': '/bin'}
    set_ = devices.apply_lm_env(plan, gpu_host(2, uuids=False), environ)
    assert environ == {'PATH': '/bin', **set_}
    assert environ['CUDA_VISIBLE_DEVICES'] == '0'


def test_lists_from_gin_become_tuples():
    plan = DevicePlan(worker_platform='gpu', lm_platform='gpu', lm_devices=[0],
                      worker_pool=[1])
    assert plan.lm_devices == (0,) and plan.worker_pool == (1,)


def test_worker_devices_plans_on_the_detected_host(monkeypatch):
    monkeypatch.setattr(devices, 'detect_host', lambda: gpu_host(4, uuids=False))
    workers = devices.worker_devices(DevicePlan(num_workers=3, worker_platform='gpu',
                                                lm_platform='gpu', lm_devices=(0,)))
    assert [e['CUDA_VISIBLE_DEVICES'] for e in envs(workers)] == ['1', '2', '3']


# ---------------------------------------------------------------------------
# Host detection.


def _write(path, text=''):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def test_detect_host_reads_gpus_from_the_driver(tmp_path):
    for node in ('nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm'):
        _write(str(tmp_path / 'dev' / node))
    os.makedirs(tmp_path / 'dev' / 'nvidia-caps')
    gpus = tmp_path / 'proc' / 'driver' / 'nvidia' / 'gpus'
    # PCI order: the GPU at bus 0x17 is GPU 0 although its minor number is 1.
    _write(str(gpus / '0000:17:00.0' / 'information'),
           'Model: \t\t NVIDIA H100\nGPU UUID: \t GPU-aaaa\nDevice Minor: \t 1\n')
    _write(str(gpus / '0000:2a:00.0' / 'information'),
           'Model: \t\t NVIDIA H100\nGPU UUID: \t GPU-bbbb\nDevice Minor: \t 0\n')
    host = devices.detect_host(root=str(tmp_path), nvidia_smi=None, environ={})
    assert host.gpu_count == 2
    assert host.gpu_minors == (1, 0)
    assert host.gpu_uuids == ('GPU-aaaa', 'GPU-bbbb')
    assert set(host.device_nodes) == {'/dev/nvidia0', '/dev/nvidia1',
                                      '/dev/nvidiactl', '/dev/nvidia-uvm'}
    assert host.tpu_chip_count == 0
    assert host.mem_fraction_var == 'XLA_PYTHON_CLIENT_MEM_FRACTION'
    (worker,) = devices.plan_workers(DevicePlan(worker_platform='gpu',
                                                lm_platform='gpu',
                                                lm_devices=(0,)), host)
    assert dict(worker.env)['CUDA_VISIBLE_DEVICES'] == 'GPU-bbbb'
    assert worker.device_nodes[0] == '/dev/nvidia0'


def test_detect_host_counts_gpu_device_files_without_the_driver(tmp_path):
    for node in ('nvidia0', 'nvidia1', 'nvidia2', 'nvidiactl'):
        _write(str(tmp_path / 'dev' / node))
    host = devices.detect_host(root=str(tmp_path), nvidia_smi=None,
                               environ={'XLA_CLIENT_MEM_FRACTION': '.5'})
    assert (host.gpu_count, host.gpu_minors, host.gpu_uuids) == (3, (0, 1, 2), ())
    assert host.mem_fraction_var == 'XLA_CLIENT_MEM_FRACTION'


@pytest.mark.parametrize('nodes, expected', [
    (('accel0', 'accel1', 'accel2', 'accel3'), 4),
    (('vfio/0', 'vfio/1', 'vfio/vfio'), 2),
    ((), 2),  # From PCI alone.
])
def test_detect_host_finds_tpu_chips(tmp_path, nodes, expected):
    for node in nodes:
        _write(str(tmp_path / 'dev' / node))
    for i in range(2):
        pci = tmp_path / 'sys' / 'bus' / 'pci' / 'devices' / f'0000:00:0{i}.0'
        _write(str(pci / 'vendor'), '0x1ae0\n')
        _write(str(pci / 'device'), '0x005e\n')
    other = tmp_path / 'sys' / 'bus' / 'pci' / 'devices' / '0000:00:09.0'
    _write(str(other / 'vendor'), '0x8086\n')
    _write(str(other / 'device'), '0x005e\n')
    host = devices.detect_host(root=str(tmp_path), nvidia_smi=None, environ={})
    assert host.tpu_chip_count == expected
    assert host.tpu_version == 'v4'
    assert host.gpu_count == 0


def test_detect_host_on_this_machine():
    host = devices.detect_host()
    assert host.cpu_count >= 1
    assert all(n.startswith('/dev/') for n in host.device_nodes)


# ---------------------------------------------------------------------------
# The shipped gin/devices files.

DEVICE_FILES = sorted(os.path.relpath(p, gin_utils.REPO_ROOT) for p in glob.glob(
    os.path.join(gin_utils.REPO_ROOT, 'gin', 'devices', '*.gin')))
# A host each file's plan fits as shipped.
HOSTS = {'gin/devices/cpu.gin': Host(cpu_count=2),
         'gin/devices/gpu.gin': gpu_host(2),
         'gin/devices/gpu_shared.gin': gpu_host(1),
         'gin/devices/tpu.gin': tpu_host(4)}
PROBE = '''
from __gin__ import dynamic_registration
import devices_test
devices_test.probe:
  plan = %DEVICE_PLAN
  num_workers = %NUM_WORKERS
'''


def probe(*, plan, num_workers):
    return plan, num_workers


def test_every_device_file_has_a_host():
    assert set(DEVICE_FILES) == set(HOSTS)


@pytest.mark.parametrize('path', DEVICE_FILES)
def test_device_files_build_a_plan(path, monkeypatch):
    gin_utils.parse([path], [], entry_config=PROBE)
    plan, num_workers = gin.get_configurable(probe)()
    assert isinstance(plan, DevicePlan)
    assert plan.num_workers == num_workers
    host = HOSTS[path]
    workers = devices.plan_workers(plan, host)
    assert len(workers) == num_workers
    devices.describe(plan, host)
    json.dumps(devices.plan_to_json(plan, host))
    # worker_devices is bound to the same plan.
    monkeypatch.setattr(devices, 'detect_host', lambda: host)
    assert gin.get_configurable(devices.worker_devices)() == workers
    # NUM_WORKERS sets the plan's workers.
    gin_utils.parse([path], ['NUM_WORKERS = 1'], entry_config=PROBE)
    assert gin.get_configurable(probe)()[0].num_workers == 1


@pytest.mark.parametrize('path', [p for p in DEVICE_FILES if 'cpu' not in p])
def test_accelerator_files_replace_the_cpu_plan_after_a_run_file(path):
    gin_utils.parse(['gin/devices/cpu.gin', path], [], entry_config=PROBE)
    plan, _ = gin.get_configurable(probe)()
    assert plan.accelerator == os.path.basename(path)[:3]
    devices.plan_workers(plan, HOSTS[path])
