r"""Where a round's wall time goes, with one process and with two (issue 18).

  python benchmarks/round_split.py [--root=DIR] [--rounds=2] [--prompts=2]
      [--samples=4] [--num_steps=200] [--workers=1] [--gin_bindings=B ...]

Runs the same search (gin/mnist1d/quick.gin with the embedded LM, the
published MNIST-1D, the sizes given) twice from scratch, side by side in one
run of this script: once as one process, once as two local processes
(`--num_processes=2`, jax.distributed on CPU, each with --workers sandbox
workers), and reads each round's split from the search's
WORKDIR/timings.jsonl: sampling the LM, evaluating the children, tuning the
soft prompt (all on process 0), the rest of the round (summaries, records),
and evaluations per minute of evaluation time. On one machine the two
processes share its cores, so this measures the machinery's overhead and the
split, not a pod's speed-up. Ends with one SUMMARY line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from evoprompting.search import TIMINGS_FILE
import machine  # pylint: disable=g-import-not-at-top  (benchmarks/machine.py)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--root', default=os.path.join(tempfile.gettempdir(),
                                                       'round_split'),
                        help='Workdirs go to ROOT/one and ROOT/two (replaced).')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--prompts', type=int, default=2)
    parser.add_argument('--samples', type=int, default=4)
    parser.add_argument('--num_steps', type=int, default=200)
    parser.add_argument('--workers', type=int, default=1,
                        help='Sandbox workers per process.')
    parser.add_argument('--gin_bindings', action='append', default=[])
    return parser.parse_args()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def search_args(args: argparse.Namespace, workdir: str) -> list[str]:
    bindings = [f'ROUNDS = {args.rounds}', f'PROMPTS = {args.prompts}',
                f'SAMPLES = {args.samples}', f'NUM_WORKERS = {args.workers}',
                f'mnist1d.TrainConfig.num_steps = {args.num_steps}',
                'mnist1d.TrainConfig.eval_every = '
                f'{max(1, args.num_steps // 2)}', *args.gin_bindings]
    return ['--gin_file=gin/mnist1d/quick.gin',
            '--gin_file=gin/mnist1d/standard_data.gin',
            *(f'--gin_bindings={b}' for b in bindings), f'--workdir={workdir}']


def run(args: argparse.Namespace, workdir: str, processes: int) -> float:
    """Runs the search from scratch with `processes` local processes; its
    wall time in seconds."""
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    base = [sys.executable, '-m', 'evoprompting.main',
            *search_args(args, workdir)]
    port = _free_port()
    commands = [base] if processes == 1 else [
        [*base, f'--coordinator_address=127.0.0.1:{port}',
         f'--num_processes={processes}', f'--process_id={i}']
        for i in range(processes)]
    start = time.monotonic()
    procs = []
    for i, command in enumerate(commands):
        log = open(os.path.join(os.path.dirname(workdir),
                                f'{os.path.basename(workdir)}.p{i}.log'), 'w')
        procs.append((subprocess.Popen(command, cwd=REPO_ROOT, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    codes = []
    for proc, log in procs:
        codes.append(proc.wait())
        log.close()
    if any(codes):
        sys.exit(f'{processes} processes: exit codes {codes}; see the logs '
                 f'next to {workdir}')
    return time.monotonic() - start


def split(workdir: str) -> dict[str, float]:
    """Totals over the rounds of TIMINGS_FILE."""
    with open(os.path.join(workdir, TIMINGS_FILE), encoding='utf-8') as f:
        rounds = [json.loads(line) for line in f]
    totals = {k: sum(r[k] for r in rounds)
              for k in ('propose_s', 'evaluate_s', 'learn_s', 'evaluations')}
    totals['rounds'] = len(rounds)
    totals['evals_per_min'] = (60 * totals['evaluations']
                               / max(totals['evaluate_s'], 1e-9))
    return totals


def main() -> None:
    args = parse_args()
    root = os.path.abspath(args.root)
    print(f'machine: {machine.describe()}', flush=True)
    results = {}
    for name, processes in (('one', 1), ('two', 2)):
        wall = run(args, os.path.join(root, name), processes)
        results[processes] = (wall, split(os.path.join(root, name)))
        print(f'{processes} process(es): {wall:.0f} s', flush=True)
    print('\nprocesses | rounds | LM sampling s | evaluation s | prompt tuning '
          's | evaluations | evaluations/min (of evaluation time) | search '
          'wall s (seeds included)')
    for processes, (wall, t) in results.items():
        print(f'{processes} | {t["rounds"]} | {t["propose_s"]:.1f} | '
              f'{t["evaluate_s"]:.1f} | {t["learn_s"]:.1f} | '
              f'{t["evaluations"]} | {t["evals_per_min"]:.1f} | {wall:.0f}')
    one, two = results[1][1], results[2][1]
    print(f'SUMMARY round_split ({args.rounds} rounds x '
          f'{args.prompts * args.samples} children, {args.workers} worker(s) '
          f'per process, {args.num_steps} steps): evaluations/min two '
          f'processes / one = {two["evals_per_min"] / one["evals_per_min"]:.2f}'
          f'x; one process: LM sampling {one["propose_s"]:.0f} s, evaluation '
          f'{one["evaluate_s"]:.0f} s, tuning {one["learn_s"]:.0f} s')


if __name__ == '__main__':
    main()
