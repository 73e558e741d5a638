r"""Sweeps: one search per point of a grid of gin bindings, and their table.

  python -m launch.sweep --gin_file=gin/mnist1d/quick.gin \
      --grid='search.SearchConfig.alpha=[0.3, 0.5]' \
      --grid='SEARCH_SEED=[0, 1, 2]' [--zip] [--gin_bindings=B ...] \
      --root=DIR [--parallel=N] [--report] [--dry_run] \
      [--tpu_vm=NAME --zone=ZONE --bucket=gs://... [--tpu_vm_flag=...] [--keep]]

Each `--grid='BINDING=[V1, V2, ...]'` names a gin binding (a parameter
`configurable.name` or a macro `NAME`) and its values, written as in a gin
file (numbers, 'strings', @references, %MACROS, lists). The runs are the
product of the grids (or, with --zip, their values taken side by side: every
grid the same length). Each run is

  python -m evoprompting.main --gin_file=... [--gin_bindings=B ...] \
      --gin_bindings='BINDING = V' ... --workdir=DIR/<name>

with <name> made from its grid bindings (`alpha_0.3-SEARCH_SEED_1`), its
output appended to DIR/<name>/sweep.log. Every run's configuration is parsed
before any run starts: a malformed grid, an unknown parameter or a macro
nothing reads stops the sweep before it trains anything.

Resumable: a run whose workdir holds a finished search started by the same
command is skipped; any other is started, and `evoprompting.main` resumes
what it had recorded (or refuses a workdir of another configuration). With
--parallel=N, N runs at once (each with its own sandbox workers: size the
device plan so N fit the machine). SIGTERM (e.g. a batch scheduler's) stops
the sweep with its running runs and starts none after it; the same command
resumes them.

With --tpu_vm, each run goes to a Cloud TPU VM instead (`launch.tpu_vm run`,
the VM kept between runs, its workdir mirrored to <bucket>/<name>), and its
workdir is then copied back into DIR/<name> (`launch.tpu_vm copy`), where the
table reads it; --parallel=N uses N VMs (NAME, NAME-1, ...), all deleted at
the end unless --keep.

At the end, DIR/sweep.md holds a table of every run: its grid bindings, final
hypervolume, best fitness, share of ok children (duplicates excluded) and wall
time, read from the stores; --report also writes `evoprompting.report`'s
report of all runs to DIR/report. Exits non-zero when a run failed.

Other tools build their runs with `Run` and call `run_all` (see
benchmarks/search_mnist1d.py).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Callable, Sequence

from absl import app, flags
import gin

from evoprompting import gin_utils, report, store

RUN_FILE = 'sweep_run.json'  # The command of the run and its wall time.
LOG_FILE = 'sweep.log'
TABLE_FILE = 'sweep.md'

_GRID = re.compile(r'^\s*([A-Za-z_][\w.]*(?:/[\w.]+)?)\s*=\s*\[(.*)\]\s*$',
                   re.DOTALL)


class SweepError(ValueError):
    """A sweep that cannot start; the message says what to fix."""


def parse_grid(text: str) -> tuple[str, tuple[str, ...]]:
    """'KEY=[V1, V2]' -> ('KEY', ('V1', 'V2')). Values are split at top-level
    commas (not inside brackets, parentheses or quotes) and kept as gin
    text; gin parses them when the runs are checked."""
    match = _GRID.match(text)
    if not match:
        raise SweepError(f'--grid={text!r}: expected BINDING=[V1, V2, ...], '
                         "e.g. --grid='search.SearchConfig.alpha=[0.3, 0.5]'")
    key, body = match.groups()
    values, depth, quote, current = [], 0, '', ''
    for ch in body:
        if quote:
            quote = '' if ch == quote else quote
        elif ch in '\'"':
            quote = ch
        elif ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        elif ch == ',' and depth == 0:
            values.append(current.strip())
            current = ''
            continue
        current += ch
    if current.strip():
        values.append(current.strip())
    if quote or depth:
        raise SweepError(f'--grid={text!r}: unbalanced quotes or brackets')
    if not values or not all(values):
        raise SweepError(f'--grid={text!r}: give at least one value, and no '
                         'empty ones')
    if len(set(values)) != len(values):
        raise SweepError(f'--grid={text!r}: a value is repeated')
    return key, tuple(values)


def expand(grids: Sequence[tuple[str, Sequence[str]]], zip_grids: bool = False
           ) -> list[tuple[tuple[str, str], ...]]:
    """The runs' grid bindings: ((key, value), ...) per run, in order (the
    last grid varies fastest)."""
    keys = [key for key, _ in grids]
    if len(set(keys)) != len(keys):
        raise SweepError(f'a binding has two grids: {keys}')
    if zip_grids:
        lengths = {len(values) for _, values in grids}
        if len(lengths) > 1:
            raise SweepError('--zip needs grids of one length, got '
                             + ', '.join(f'{k}: {len(v)}' for k, v in grids))
        points = zip(*(values for _, values in grids))
    else:
        points = itertools.product(*(values for _, values in grids))
    return [tuple(zip(keys, point)) for point in points]


def _short_key(key: str, keys: Sequence[str]) -> str:
    """The binding's last name, unless another grid's last name is the same."""
    last = key.rsplit('.', 1)[-1].rsplit('/', 1)[-1]
    others = [k.rsplit('.', 1)[-1].rsplit('/', 1)[-1] for k in keys if k != key]
    return key if last in others else last


def run_name(assignment: Sequence[tuple[str, str]]) -> str:
    """A folder name from grid bindings: 'alpha_0.3-SEARCH_SEED_1'. Characters
    unsafe in a file name become '_'; a long name is cut and made unique with
    a hash of the bindings."""
    keys = [k for k, _ in assignment]
    name = '-'.join(f'{_short_key(k, keys)}_{v}' for k, v in assignment)
    name = re.sub(r'[^A-Za-z0-9._-]+', '_', name)
    name = re.sub(r'_{2,}', '_', name).strip('._') or 'run'
    if len(name) > 100:
        digest = hashlib.sha256(repr(assignment).encode()).hexdigest()[:10]
        name = f'{name[:89]}-{digest}'
    return name


@dataclasses.dataclass(frozen=True)
class Run:
    """One search of a sweep.

    Attributes:
      name: its folder under the sweep's root (may contain '/').
      gin_files: the gin files, in order.
      bindings: every gin binding, in order (the sweep's, then the run's).
      varied: the bindings that tell this run apart, for the table.
      config_digest: a hash of the whole parsed gin configuration (gin
        files' contents included), so an edited gin file is a new run.
    """

    name: str
    gin_files: tuple[str, ...]
    bindings: tuple[str, ...]
    varied: tuple[tuple[str, str], ...] = ()
    config_digest: str = ''  # Of the parsed configuration (`check`).

    def command(self, workdir: str) -> list[str]:
        """The `evoprompting.main` command of this run."""
        return [sys.executable, '-m', 'evoprompting.main',
                *(f'--gin_file={f}' for f in self.gin_files),
                *(f'--gin_bindings={b}' for b in self.bindings),
                f'--workdir={workdir}']


def plan(gin_files: Sequence[str], bindings: Sequence[str],
         grids: Sequence[str], zip_grids: bool = False) -> list[Run]:
    """The runs of a sweep, from the command line's flags."""
    assignments = expand([parse_grid(g) for g in grids], zip_grids)
    runs = [Run(run_name(a), tuple(gin_files),
                (*bindings, *(f'{k} = {v}' for k, v in a)), a)
            for a in assignments]
    # Values that differ only in characters a name drops: those runs (only
    # those, so other runs keep their folders) get a hash of their bindings.
    names = collections.Counter(r.name for r in runs)
    return [r if names[r.name] == 1 else dataclasses.replace(
        r, name=f'{r.name}-{hashlib.sha256(repr(r.varied).encode()).hexdigest()[:6]}')
            for r in runs]


def check(runs: Sequence[Run]) -> list[Run]:
    """Parses every run's gin configuration (as `evoprompting.main` does),
    without running anything; returns the runs with their config digests.

    Raises:
      SweepError: naming the run and what gin could not use.
    """
    checked = []
    for run in runs:
        try:
            gin_utils.parse(run.gin_files, run.bindings)
        except gin_utils.GinConfigError as e:
            raise SweepError(f'run {run.name}: {e}') from None
        digest = hashlib.sha256(gin.config_str().encode()).hexdigest()
        checked.append(dataclasses.replace(run, config_digest=digest))
    return checked


def _started_by(workdir: str, argv: Sequence[str], run: Run) -> dict | None:
    """The run record in `workdir` if `argv` with `run`'s configuration made
    it, else None."""
    try:
        with open(os.path.join(workdir, RUN_FILE), encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    same = (record.get('argv') == list(argv[1:])
            and record.get('config_digest') == run.config_digest)
    return record if same else None


def is_finished(workdir: str, argv: Sequence[str], run: Run) -> bool:
    """Whether `workdir` holds a finished search started by `argv` with the
    gin configuration `run` has now (an edited gin file is not finished)."""
    return (_started_by(workdir, argv, run) is not None
            and store.is_finished(workdir))


def _record(workdir: str, argv: Sequence[str], run: Run, seconds: float,
            ok: bool) -> None:
    """Adds `seconds` to the run's wall time, under its command and
    configuration. A failed attempt with another command or configuration
    (e.g. refused by a workdir of other settings) leaves the record of the
    search the workdir holds as it was."""
    previous = _started_by(workdir, argv, run)
    if previous is None and not ok and os.path.exists(
            os.path.join(workdir, RUN_FILE)):
        return
    wall_s = previous['wall_s'] if previous else 0
    store.write_json_atomic(os.path.join(workdir, RUN_FILE), {
        'argv': list(argv[1:]), 'config_digest': run.config_digest,
        'wall_s': wall_s + seconds})


@dataclasses.dataclass(frozen=True)
class TpuVm:
    """Runs on Cloud TPU VMs through `launch.tpu_vm`: each run is `run` on a
    VM (kept between runs) and then `copy` of its workdir from the bucket
    into the sweep's root, where the table reads it. With --parallel=N the
    runs use N VMs: `name`, `name-1`, ... `name-(N-1)`.

    Attributes:
      name, zone, bucket: as launch.tpu_vm's --name, --zone, --bucket.
      flags: more launch.tpu_vm flags for `run`, e.g. '--accelerator_type=v4-32'.
    """

    name: str
    zone: str
    bucket: str
    flags: tuple[str, ...] = ()

    def vm(self, slot: int) -> list[str]:
        return [f'--name={self.name if slot == 0 else f"{self.name}-{slot}"}',
                f'--zone={self.zone}']

    def commands(self, run: Run, workdir: str, slot: int) -> list[list[str]]:
        base = [sys.executable, '-m', 'launch.tpu_vm']
        where = [f'--bucket={self.bucket}',
                 f'--run_name={run.name.replace(os.sep, "-")}']
        return [[*base, 'run', *self.vm(slot), *self.flags, *where, '--keep',
                 *(f'--gin_file={f}' for f in run.gin_files),
                 *(f'--gin_bindings={b}' for b in run.bindings)],
                [*base, 'copy', *where, f'--to={workdir}']]

    def delete_commands(self, slots: int) -> list[list[str]]:
        """Deletes the sweep's VMs."""
        return [[sys.executable, '-m', 'launch.tpu_vm', 'delete',
                 *self.vm(slot), *self.flags] for slot in range(slots)]


# How a run is carried out: (run, its workdir, the slot running it) -> the
# commands to run one after the other.
Commands = Callable[[Run, str, int], list[list[str]]]


def local_commands(run: Run, workdir: str, slot: int) -> list[list[str]]:
    """`evoprompting.main` on this machine."""
    del slot
    return [run.command(workdir)]


class Children:
    """The sweep's running commands, and whether it is stopping.

    `stop` (from a SIGTERM handler) passes the signal on to every running
    command (`evoprompting.main` keeps what it recorded: its store is
    written as it goes) and starts no new one, so killing the sweep leaves
    no run behind it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopping = threading.Event()

    def run(self, step: Sequence[str], log: IO[str]) -> int:
        """Runs `step` (output to `log`); its exit code, or STOPPED if the
        sweep is stopping."""
        with self._lock:
            if self.stopping.is_set():
                return STOPPED
            process = subprocess.Popen(step, cwd=gin_utils.REPO_ROOT, stdout=log,
                                       stderr=subprocess.STDOUT)
            self._running.add(process)
        try:
            return process.wait()
        finally:
            with self._lock:
                self._running.discard(process)

    def stop(self, signum: int) -> None:
        with self._lock:
            self.stopping.set()
            for process in self._running:
                process.send_signal(signum)


# The exit code recorded for a command the stopping sweep did not start.
STOPPED = -1


def run_one(run: Run, root: str, say: Callable[[str], None] = print,
            commands: Commands = local_commands, slot: int = 0,
            children: Children | None = None) -> bool:
    """Runs, resumes or skips one run; whether it finished."""
    children = children or Children()
    workdir = os.path.join(root, run.name)
    steps = commands(run, workdir, slot)
    argv = steps[0]
    if is_finished(workdir, argv, run):
        say(f'{run.name}: finished, skipped')
        return True
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, LOG_FILE)
    say(f'{run.name}: running, log {log_path}')
    start = time.monotonic()
    code = 0
    with open(log_path, 'a', encoding='utf-8') as log:
        for step in steps:
            log.write(f'\n$ {shlex.join(step)}\n')
            log.flush()
            code = children.run(step, log)
            if code:
                break
    seconds = time.monotonic() - start
    _record(workdir, argv, run, seconds, ok=code == 0)
    if code != 0:
        say(f'{run.name}: FAILED (exit {code}) after {seconds / 60:.1f} min; '
            f'see {log_path}')
        return False
    say(f'{run.name}: done in {seconds / 60:.1f} min')
    return True


def run_all(runs: Sequence[Run], root: str, parallel: int = 1,
            say: Callable[[str], None] = print,
            commands: Commands = local_commands,
            children: Children | None = None) -> list[Run]:
    """Runs every run (`parallel` at once, each on a slot 0..parallel-1 of
    its own); returns those that failed (or were stopped: `children`)."""
    children = children or Children()
    lock = threading.Lock()
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(parallel):
        slots.put(slot)

    def locked_say(text: str) -> None:
        with lock:
            say(text)

    def one(run: Run) -> bool:
        if children.stopping.is_set():
            return False
        slot = slots.get()
        try:
            return run_one(run, root, locked_say, commands, slot, children)
        finally:
            slots.put(slot)

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        finished = list(pool.map(one, runs))
    return [r for r, ok in zip(runs, finished) if not ok]


def table(runs: Sequence[Run], root: str) -> list[str]:
    """The markdown table of DIR/sweep.md: one row per run, from its store."""
    keys = list(dict.fromkeys(k for r in runs for k, _ in r.varied))
    lines = ['| run | ' + ' | '.join(f'`{k}`' for k in keys)
             + ' | rounds | final hypervolume | best fitness | children ok '
             '| wall time |',
             '|---|' + '---|' * len(keys) + '---:|---:|---:|---:|---:|']
    for r in runs:
        workdir = os.path.join(root, r.name)
        values = dict(r.varied)
        cells = [values.get(k, '') for k in keys]
        try:
            loaded = report.load_run(workdir)
        except report.ReportError:
            lines.append(f'| {r.name} | ' + ' | '.join(cells)
                         + ' | not started | | | | |')
            continue
        final = loaded.stats[-1]
        children = loaded.children
        ok = sum(c.result.ok and c.duplicate_of is None for c in children)
        try:
            with open(os.path.join(workdir, RUN_FILE), encoding='utf-8') as f:
                wall = f'{json.load(f)["wall_s"] / 60:.1f} min'
        except (OSError, ValueError, KeyError):
            wall = '?'
        best = ('n/a' if final.best_fitness is None
                else f'{final.best_fitness:,.1f}')
        lines.append(
            f'| {r.name} | ' + ' | '.join(cells)
            + f' | {loaded.completed_rounds}/{loaded.num_rounds} '
            f'| {final.hypervolume_test:.3f} | {best} '
            f'| {ok}/{len(children)} | {wall} |')
    return lines


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The binary's flags; defined only when it runs, so the programs that
    import this module (benchmarks, launch.tpu_vm's tests) do not get them."""
    flags.DEFINE_multi_string('gin_file', None, 'Gin files of every run, in '
                              'order (e.g. gin/mnist1d/quick.gin).')
    flags.DEFINE_multi_string('gin_bindings', [], 'Gin bindings of every run, '
                              'before the grid\'s.')
    flags.DEFINE_multi_string('grid', [], "A binding and its values: "
                              "--grid='search.SearchConfig.alpha=[0.3, 0.5]'. "
                              'Repeatable: the runs are the product of the grids.')
    flags.DEFINE_bool('zip', False, 'Take the grids\' values side by side '
                      '(every grid the same length) instead of their product.')
    flags.DEFINE_string('root', None, 'Folder of the runs (DIR/<name>) and of '
                        'DIR/sweep.md.')
    flags.DEFINE_integer('parallel', 1, 'Runs at once.', lower_bound=1)
    flags.DEFINE_bool('report', False, 'Also write evoprompting.report\'s report '
                      'of every run to DIR/report.')
    flags.DEFINE_string('tpu_vm', None, 'Run on Cloud TPU VMs of this name '
                        '(launch.tpu_vm; NAME-1, NAME-2, ... with --parallel), '
                        'deleted at the end unless --keep; needs --zone and '
                        '--bucket. Workdirs are copied back into --root.')
    flags.DEFINE_string('zone', None, '--tpu_vm: the zone.')
    flags.DEFINE_string('bucket', None, '--tpu_vm: the gs:// URL under which '
                        'each run keeps its workdir.')
    flags.DEFINE_multi_string('tpu_vm_flag', [], "--tpu_vm: more "
                              "launch.tpu_vm flags, e.g. "
                              "--tpu_vm_flag=--accelerator_type=v4-32.")
    flags.DEFINE_bool('keep', False, '--tpu_vm: keep the VMs at the end.')
    flags.DEFINE_bool('dry_run', False, 'Check the runs\' configurations, print '
                      'their commands, and run nothing.')
    flags.mark_flags_as_required(['gin_file', 'root'])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if not FLAGS.grid:
        raise app.UsageError('give at least one --grid')
    tpu = None
    if FLAGS.tpu_vm:
        if not FLAGS.zone or not FLAGS.bucket:
            raise app.UsageError('--tpu_vm needs --zone and --bucket')
        tpu = TpuVm(FLAGS.tpu_vm, FLAGS.zone, FLAGS.bucket,
                    tuple(FLAGS.tpu_vm_flag))
    commands = tpu.commands if tpu else local_commands
    root = os.path.abspath(FLAGS.root)
    if os.path.exists(root) and not os.path.isdir(root):
        raise app.UsageError(f'--root={FLAGS.root} is not a folder')
    try:
        runs = check(plan(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.grid,
                          FLAGS.zip))
    except SweepError as e:
        sys.exit(f'error: {e}')
    if FLAGS.dry_run:
        for i, r in enumerate(runs):
            for step in commands(r, os.path.join(root, r.name),
                                 i % FLAGS.parallel):
                print(shlex.join(step))
        if tpu and not FLAGS.keep:
            for step in tpu.delete_commands(FLAGS.parallel):
                print(shlex.join(step))
        return
    print(f'{len(runs)} runs in {root}, {FLAGS.parallel} at a time', flush=True)
    children = Children()
    signal.signal(signal.SIGTERM, lambda signum, frame: children.stop(signum))
    failed = run_all(runs, root, FLAGS.parallel,
                     say=lambda text: print(text, flush=True),
                     commands=commands, children=children)
    if tpu and not FLAGS.keep:
        for step in tpu.delete_commands(FLAGS.parallel):
            subprocess.run(step, cwd=gin_utils.REPO_ROOT, check=False)
    if children.stopping.is_set():
        sys.exit('Stopped (SIGTERM): the running runs were stopped with it; '
                 'run the same command to resume them.')
    lines = table(runs, root)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, TABLE_FILE), 'w', encoding='utf-8') as f:
        f.write(f'Sweep `{shlex.join(sys.argv[1:])}`\n\n' + '\n'.join(lines)
                + '\n')
    print('\n'.join(lines))
    print(f'Table: {os.path.join(root, TABLE_FILE)}')
    started = [os.path.join(root, r.name) for r in runs
               if os.path.isfile(os.path.join(root, r.name,
                                              store.SEARCH_CONFIG_FILE))]
    made = 0
    if FLAGS.report and started:
        made = subprocess.run(
            [sys.executable, '-m', 'evoprompting.report',
             f'--out={os.path.join(root, "report")}', *started],
            cwd=gin_utils.REPO_ROOT, check=False).returncode
    if failed or made:
        sys.exit(f'{len(failed)} of {len(runs)} runs failed: '
                 + ', '.join(r.name for r in failed) if failed
                 else 'the report failed')


if __name__ == '__main__':
    define_flags()
    app.run(main)
