"""launch.tpu_vm: the commands it prints (--dry_run), its errors, and its
restart loop driven against a fake `gcloud` (Google's CLI cannot be reached
here): a script first on PATH that logs its arguments and plays a TPU VM
whose states a JSON file scripts."""

import json
import os
import shlex
import subprocess
import sys
import textwrap

import pytest

from launch import tpu_vm

REPO = tpu_vm.REPO_ROOT
VM = ['--name=evo', '--zone=us-central2-b']
RUN = [*VM, '--bucket=gs://bkt/evo/', '--run_name=quick',
       '--gin_file=gin/mnist1d/quick.gin', '--gin_file=gin/devices/tpu.gin']
BINDINGS = ['NUM_WORKERS = 7', "devices.DevicePlan.lm_platform = 'cpu'",
            'search.SearchConfig.note = "two words"']

FAKE_GCLOUD = textwrap.dedent('''\
    #!{python}
    """A fake gcloud: logs its argv; plays the VM scripted in state.json."""
    import json, os, sys
    folder = os.environ['FAKE_GCLOUD']
    argv = sys.argv[1:]
    with open(os.path.join(folder, 'calls.jsonl'), 'a') as f:
        f.write(json.dumps(argv) + '\\n')
    with open(os.path.join(folder, 'state.json')) as f:
        vm = json.load(f)
    status = 0
    group, verb = argv[2:4] if argv[:2] == ['compute', 'tpus'] else argv[:2]
    key = 'queued' if group == 'queued-resources' else 'node'
    if verb == 'describe':
        if vm[key] is None:
            sys.exit('ERROR: (gcloud.compute.tpus.%s.describe) NOT_FOUND: '
                     'Resource was not found' % group)
        print(vm[key])
    elif verb == 'create':
        vm['node'] = 'READY'
        if key == 'queued':
            vm['queued'] = 'ACTIVE'
    elif verb == 'delete':
        vm['node'] = vm[key] = None
    elif verb == 'ssh' and ' -m evoprompting.main ' in ' '.join(argv):
        outcome = vm['starts'].pop(0)
        if outcome == 'preempt':  # The VM is preempted; ssh loses it.
            vm['node'] = vm['preempted_node']
            if vm['queued']:
                vm['queued'] = 'SUSPENDED'
            status = 255
        elif outcome == 'lost':  # The connection drops; the VM is fine.
            status = 255
        else:
            status = outcome
    with open(os.path.join(folder, 'state.json'), 'w') as f:
        json.dump(vm, f)
    sys.exit(status)
''')


@pytest.fixture
def gcloud(tmp_path):
    """A folder with the fake gcloud; returns run(args, vm) -> (process,
    calls) running launch.tpu_vm with it first on PATH."""
    folder = tmp_path / 'fake'
    folder.mkdir()
    script = folder / 'gcloud'
    script.write_text(FAKE_GCLOUD.format(python=sys.executable))
    script.chmod(0o755)

    def run(args, **vm):
        state = {'node': None, 'queued': None, 'starts': [0],
                 'preempted_node': 'PREEMPTED', **vm}
        (folder / 'state.json').write_text(json.dumps(state))
        (folder / 'calls.jsonl').write_text('')
        env = {**os.environ, 'FAKE_GCLOUD': str(folder), 'TMPDIR': str(tmp_path),
               'PATH': f'{folder}{os.pathsep}{os.environ["PATH"]}'}
        out = subprocess.run([sys.executable, '-m', 'launch.tpu_vm', *args],
                             cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=60)
        calls = [json.loads(line) for line in
                 (folder / 'calls.jsonl').read_text().splitlines()]
        return out, calls

    return run


def dry_run(gcloud, *args):
    """The printed commands; asserts that nothing ran."""
    out, calls = gcloud([*args, '--dry_run'])
    assert out.returncode == 0, out.stderr
    assert calls == []
    return out.stdout.splitlines()


def label(argv):
    """A call of the fake gcloud, in short: 'create', 'q-delete', 'start'."""
    if argv[:2] == ['compute', 'tpus']:
        group, verb = argv[2:4]
        if verb == 'ssh':
            script = script_of(argv)
            if ' -m evoprompting.main ' in script:
                return 'start'
            for word, name in (('pip install', 'setup'), ('nohup', 'watchdog'),
                               ('rsync', 'restore'), ('tail', 'logs')):
                if word in script:
                    return name
            return 'stop-watchdog'
        return ('q-' if group == 'queued-resources' else '') + verb
    return ' '.join(argv[:2])


def script_of(argv):
    """The --command= script of an ssh argv."""
    [script] = [a[len('--command='):] for a in argv
                if a.startswith('--command=')]
    return script


def labels(lines):
    """The printed commands, in short: gcloud's as `label`s, others by name."""
    return [label(argv[1:]) if argv[0] == 'gcloud' else argv[0]
            for argv in map(shlex.split, lines)]


def command(lines, prefix):
    """The one printed command that starts with `prefix`, as argv."""
    found = [shlex.split(line) for line in lines if line.startswith(prefix)]
    assert len(found) == 1, (prefix, lines)
    return found[0]


def remote(lines, what):
    """The --command= script of the printed ssh command `label`s `what`."""
    found = [shlex.split(line) for line in lines if ' ssh ' in line]
    found = [argv for argv in found if label(argv[1:]) == what]
    assert len(found) == 1, (what, lines)
    return script_of(found[0])


# --dry_run: the exact commands.

def test_dry_run_of_run_prints_one_fresh_pass(gcloud, tmp_path):
    lines = dry_run(gcloud, 'run', *RUN, '--project=my-proj',
                    *(f'--gin_bindings={b}' for b in BINDINGS))
    tarball = tmp_path / 'evoprompting-evo.tar.gz'
    zone, project = '--zone=us-central2-b', '--project=my-proj'
    describe = ('gcloud compute tpus tpu-vm describe evo --zone=us-central2-b '
                "'--format=value(state)' --project=my-proj")

    def ssh(what):
        return shlex.join(['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'evo',
                           zone, '--worker=all', f'--command={what}', project])

    search = tpu_vm.Search('quick', 'gs://bkt/evo/', (
        'gin/mnist1d/quick.gin', 'gin/devices/tpu.gin'), tuple(BINDINGS))
    tpu = tpu_vm.Tpu('evo', 'us-central2-b', 'my-proj')
    assert lines == [
        describe,
        'gcloud compute tpus tpu-vm create evo --zone=us-central2-b '
        '--version=tpu-ubuntu2204-base --accelerator-type=v4-8 '
        '--scopes=https://www.googleapis.com/auth/cloud-platform '
        '--project=my-proj',
        describe,
        f'git -C {REPO} archive --format=tar.gz --output={tarball} HEAD',
        f'gcloud compute tpus tpu-vm scp {tarball} evo:evoprompting.tar.gz '
        '--zone=us-central2-b --worker=all --project=my-proj',
        ssh(tpu_vm.setup_script()),
        ssh(tpu_vm.watchdog_script(tpu, 60)),
        ssh(tpu_vm.restore_script(search)),
        ssh(tpu_vm.start_script(search)),
        'gcloud compute tpus tpu-vm delete evo --zone=us-central2-b --quiet '
        '--project=my-proj',
    ]


def test_remote_scripts_say_what_they_install_and_restore(gcloud):
    lines = dry_run(gcloud, 'run', *RUN)
    setup = remote(lines, 'setup')
    for step in ('apt-get -o DPkg::Lock::Timeout=600 install -y -qq bubblewrap '
                 'python3.11 python3.11-venv',
                 'tar -xzf "$HOME"/evoprompting.tar.gz -C "$HOME"/evoprompting',
                 "pip install -q -e '.[clrs,tpu]'",
                 'pip install -q --no-deps dm-clrs==2.0.3'):
        assert step in setup
    restore = remote(lines, 'restore')
    assert ('gcloud storage rsync --recursive gs://bkt/evo/quick '
            '"$HOME"/runs/quick' in restore)
    assert 'if [ ! -d "$HOME"/runs/quick ]' in restore  # A new VM only.
    assert restore.index('pkill') < restore.index('rsync')
    watchdog = remote(lines, 'watchdog')
    assert "pgrep -f '" in shlex.split(watchdog.split('nohup bash -c ')[1])[0]
    assert ('gcloud compute tpus tpu-vm delete evo --zone=us-central2-b '
            '--quiet' in watchdog)
    for script in (setup, restore, watchdog, remote(lines, 'start')):
        check = subprocess.run(['bash', '-n', '-c', script], capture_output=True,
                               text=True)
        assert check.returncode == 0, (script, check.stderr)


def test_start_script_passes_bindings_with_spaces_and_quotes(gcloud, tmp_path):
    """The printed ssh line, split as a shell splits a pasted line; its
    script run by bash as the worker's shell would, with a python that
    records its arguments."""
    lines = dry_run(gcloud, 'run', *RUN,
                    *(f'--gin_bindings={b}' for b in BINDINGS))
    home = tmp_path / 'home'
    (home / 'evoprompting').mkdir(parents=True)
    python = home / 'evoprompting-venv' / 'bin' / 'python'
    python.parent.mkdir(parents=True)
    python.write_text(f'#!{sys.executable}\nimport json, os, sys\n'
                      'print(json.dumps([os.getcwd(), *sys.argv[1:]]))\n')
    python.chmod(0o755)
    out = subprocess.run(['bash', '-c', remote(lines, 'start')],
                         env={**os.environ, 'HOME': str(home)}, timeout=30)
    assert out.returncode == 0
    log = (home / 'runs' / 'quick' / 'main.log').read_text().splitlines()
    assert log[0].startswith('== launch.tpu_vm: start ')
    assert json.loads(log[1]) == [
        str(home / 'evoprompting'), '-m', 'evoprompting.main',
        '--gin_file=gin/mnist1d/quick.gin', '--gin_file=gin/devices/tpu.gin',
        *(f'--gin_bindings={b}' for b in BINDINGS),
        f'--workdir={home}/runs/quick', '--num_processes=0',
        '--mirror_to=gs://bkt/evo/quick']


def test_dry_run_spot_and_queued_variants(gcloud):
    spot = dry_run(gcloud, 'create', *VM, '--spot')
    assert spot[0] == ('gcloud compute tpus tpu-vm create evo '
                       '--zone=us-central2-b --version=tpu-ubuntu2204-base '
                       '--accelerator-type=v4-8 --scopes=https://www.googleapis'
                       '.com/auth/cloud-platform --spot')
    queued = dry_run(gcloud, 'create', *VM, '--accelerator_type=v5litepod-8',
                     '--queued', '--spot', '--timeout_minutes=90',
                     '--project=p1')
    assert queued[:3] == [
        'gcloud compute tpus queued-resources create evo --zone=us-central2-b '
        '--node-id=evo --runtime-version=v2-alpha-tpuv5-lite '
        '--accelerator-type=v5litepod-8 --scopes=https://www.googleapis.com/'
        'auth/cloud-platform --spot --valid-until-duration=90m --project=p1',
        'gcloud compute tpus queued-resources describe evo --zone=us-central2-b '
        "'--format=value(state.state)' --project=p1",
        'gcloud compute tpus tpu-vm describe evo --zone=us-central2-b '
        "'--format=value(state)' --project=p1"]
    watchdog = remote(queued, 'watchdog')
    assert ('gcloud compute tpus queued-resources delete evo '
            '--zone=us-central2-b --quiet --force --project=p1' in watchdog)
    assert len(queued) == 4
    run = dry_run(gcloud, 'run', *RUN, '--accelerator_type=v6e-8', '--queued')
    assert labels(run) == [
        'describe', 'q-describe', 'q-create', 'q-describe', 'describe',
        'git', 'scp', 'setup', 'watchdog', 'restore', 'start', 'q-delete']
    assert '--runtime-version=v2-alpha-tpuv6e' in run[2]


@pytest.mark.parametrize('args, expected', [
    (['create', *VM, '--accelerator_type=v5p-8', '--version=my-runtime',
      '--keep'],
     ['gcloud compute tpus tpu-vm create evo --zone=us-central2-b '
      '--version=my-runtime --accelerator-type=v5p-8 '
      '--scopes=https://www.googleapis.com/auth/cloud-platform',
      "gcloud compute tpus tpu-vm describe evo --zone=us-central2-b "
      "'--format=value(state)'",
      "gcloud compute tpus tpu-vm ssh evo --zone=us-central2-b --worker=all "
      "'--command=if [ -f \"$HOME\"/evoprompting-watchdog.pid ]; then kill "
      "\"$(cat \"$HOME\"/evoprompting-watchdog.pid)\" 2> /dev/null || true; fi'"]),
    (['logs', *VM, '--run_name=quick', '--project=p1'],
     ['gcloud compute tpus tpu-vm ssh evo --zone=us-central2-b --worker=0 '
      "'--command=tail -n 100 -F \"$HOME\"/runs/quick/main.log' --project=p1"]),
    (['tensorboard', '--bucket=gs://bkt/evo', '--run_name=quick'],
     ['tensorboard --logdir=gs://bkt/evo/quick/tensorboard']),
    (['copy', '--bucket=gs://bkt/evo', '--run_name=quick', '--to=out dir'],
     ["gcloud storage rsync --recursive gs://bkt/evo/quick 'out dir'"]),
    (['copy', '--bucket=gs://bkt/evo', '--run_name=quick',
      '--to=gs://other/quick', '--project=p1'],
     ['gcloud storage rsync --recursive gs://bkt/evo/quick gs://other/quick '
      '--project=p1']),
    (['delete', *VM],
     ['gcloud compute tpus tpu-vm delete evo --zone=us-central2-b --quiet']),
    (['delete', *VM, '--queued', '--project=p1'],
     ['gcloud compute tpus queued-resources delete evo --zone=us-central2-b '
      '--quiet --force --project=p1']),
    (['list', '--zone=europe-west4-a', '--project=p1'],
     ['gcloud compute tpus tpu-vm list --zone=europe-west4-a --project=p1',
      'gcloud compute tpus queued-resources list --zone=europe-west4-a '
      '--project=p1']),
])
def test_dry_run_of_each_action(gcloud, args, expected):
    assert dry_run(gcloud, *args) == expected


def test_dry_run_of_setup(gcloud, tmp_path):
    lines = dry_run(gcloud, 'setup', *VM, '--idle_minutes=15')
    assert labels(lines) == ['git', 'scp', 'setup', 'watchdog']
    assert all('--worker=all' in line for line in lines[1:])
    assert '-ge 15 ]' in remote(lines, 'watchdog')


# Bad input: a non-zero exit and a message that names the flag.

@pytest.mark.parametrize('args, message', [
    (['explode', *VM], "unknown action 'explode': expected one of create,"),
    (VM, 'expected one action, one of create, setup'),
    (['create', '--zone=us-central2-b'], 'create needs --name'),
    (['delete', '--name=evo'], 'delete needs --zone'),
    (['run', *VM, '--run_name=quick', '--gin_file=gin/mnist1d/quick.gin'],
     'run needs --bucket'),
    (['run', *VM, '--bucket=gs://b', '--gin_file=gin/mnist1d/quick.gin'],
     'run needs --run_name'),
    (['run', *VM, '--bucket=gs://b', '--run_name=quick'],
     'run needs --gin_file'),
    (['copy', '--bucket=gs://b', '--run_name=quick'], 'copy needs --to'),
    (['run', *RUN, '--bucket=s3://bkt'],
     'flag --bucket=s3://bkt: --bucket must be a gs:// URL'),
    (['create', *VM, '--accelerator_type=v4_8'],
     'flag --accelerator_type=v4_8: --accelerator_type must be '
     'GENERATION-SIZE'),
    (['create', *VM, '--accelerator_type=v9x-8'],
     '--accelerator_type=v9x-8: no default runtime version for v9x'),
    (['run', *RUN, '--run_name=a/../b'],
     'flag --run_name=a/../b: --run_name may hold only letters'),
    (['run', *RUN, '--run_name=two words'],
     'flag --run_name=two words: --run_name may hold only letters'),
    (['create', '--name=My_TPU', '--zone=us-central2-b'],
     'flag --name=My_TPU: --name must start with a lowercase letter'),
    (['list', '--zone=central'], 'flag --zone=central: --zone must be a zone'),
    (['run', *RUN, '--gin_file=gin/no/such.gin'],
     '--gin_file=gin/no/such.gin: no such file in the repository'),
    (['run', *RUN, '--gin_file=/etc/hosts'],
     '--gin_file must be a path inside the repository'),
    (['run', *RUN, '--max_restarts=-1'], 'flag --max_restarts=-1'),
])
def test_bad_input_fails_naming_the_flag(gcloud, args, message):
    out, calls = gcloud([*args, '--dry_run'])
    assert out.returncode != 0
    assert message in out.stderr
    assert calls == []


def test_help_explains_every_flag():
    out = subprocess.run([sys.executable, '-m', 'launch.tpu_vm', '--help'],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    for flag in ('name', 'zone', 'project', 'accelerator_type', 'version',
                 'spot', 'queued', 'timeout_minutes', 'poll_seconds', 'bucket',
                 'run_name', 'gin_file', 'gin_bindings', 'max_restarts', 'keep',
                 'idle_minutes', 'to', 'dry_run'):
        assert f'--{flag}' in out.stdout, flag


# The restart loop against the fake gcloud.

FAST = ['--poll_seconds=0']
FRESH_PASS = ['describe', 'create', 'describe', 'scp', 'setup', 'watchdog',
              'restore', 'start']


def test_run_does_what_the_dry_run_printed(gcloud):
    printed = [shlex.split(line)[1:] for line in dry_run(gcloud, 'run', *RUN)
               if line.startswith('gcloud ')]
    out, calls = gcloud(['run', *RUN, *FAST])
    assert out.returncode == 0, out.stderr
    assert calls == printed


@pytest.mark.parametrize('preempted_node', ['PREEMPTED', None])
def test_preempted_vm_is_recreated_set_up_restored_and_restarted(
        gcloud, preempted_node):
    out, calls = gcloud(['run', *RUN, *FAST], starts=['preempt', 0],
                        preempted_node=preempted_node)
    assert out.returncode == 0, out.stderr
    recreate = ['delete', 'create'] if preempted_node else ['create']
    assert [label(c) for c in calls] == [
        *FRESH_PASS, 'describe', 'describe', *recreate, 'describe', 'scp',
        'setup', 'watchdog', 'restore', 'start', 'delete']
    assert f'evo is {preempted_node or "gone"}' in out.stderr
    assert 'restart 1 of 5' in out.stderr
    starts = [script_of(c) for c in calls if label(c) == 'start']
    assert len(starts) == 2 and starts[0] == starts[1]


def test_queued_vm_is_queued_again_after_preemption(gcloud):
    out, calls = gcloud(['run', *RUN, *FAST, '--queued'],
                        starts=['preempt', 0], preempted_node=None)
    assert out.returncode == 0, out.stderr
    queue = ['q-create', 'q-describe', 'describe', 'scp', 'setup', 'watchdog',
             'restore', 'start']
    assert [label(c) for c in calls] == [
        'describe', 'q-describe', *queue, 'describe', 'describe', 'q-describe',
        'q-delete', *queue, 'q-delete']
    assert all('--force' in c for c in calls if label(c) == 'q-delete')


def test_lost_connection_to_a_healthy_vm_restarts_without_setup(gcloud):
    out, calls = gcloud(['run', *RUN, *FAST], starts=['lost', 0])
    assert out.returncode == 0, out.stderr
    assert [label(c) for c in calls] == [
        *FRESH_PASS, 'describe', 'describe', 'restore', 'start', 'delete']


def test_failed_search_stops_without_restart_and_deletes_the_vm(gcloud):
    out, calls = gcloud(['run', *RUN, *FAST], starts=[1])
    assert out.returncode != 0
    assert 'failed on a healthy VM (the search exited with status 1); not ' \
        'restarted' in out.stderr
    assert 'gs://bkt/evo/quick/main.log' in out.stderr
    assert [label(c) for c in calls] == [*FRESH_PASS, 'describe', 'delete']


def test_keep_leaves_the_vm_and_installs_no_idle_guard(gcloud):
    out, calls = gcloud(['run', *RUN, *FAST, '--keep'], starts=[1])
    assert out.returncode != 0
    assert [label(c) for c in calls] == [
        'describe', 'create', 'describe', 'scp', 'setup', 'stop-watchdog',
        'restore', 'start', 'describe']
    assert 'evo is kept (--keep)' in out.stderr


def test_run_gives_up_after_max_restarts(gcloud):
    out, calls = gcloud(['run', *RUN, *FAST, '--max_restarts=1'],
                        starts=['preempt', 'preempt'])
    assert out.returncode != 0
    assert 'evo was lost 2 times (--max_restarts=1)' in out.stderr
    assert [label(c) for c in calls].count('start') == 2
    assert label(calls[-1]) == 'delete'


def test_run_on_a_ready_vm_sets_it_up_without_creating(gcloud):
    out, calls = gcloud(['run', *RUN, *FAST], node='READY')
    assert out.returncode == 0, out.stderr
    assert [label(c) for c in calls] == [
        'describe', 'scp', 'setup', 'watchdog', 'restore', 'start', 'delete']
