r"""EvoPrompting against its baselines and ablations on MNIST-1D (issue 5, section 6).

  python benchmarks/search_mnist1d.py [--budget_gin=gin/mnist1d/quick.gin]
      [--seeds=0,1,2] [--methods=evoprompting,no_prompt_tuning,...]
      [--workdir_root=DIR] [--gin_file=MORE.gin ...] [--gin_bindings=...]
      [--table_out=FILE] [--dry_run]

Every method runs once per search seed, as the runs of a sweep
(`launch.sweep.run_all`), each a subprocess

  python -m evoprompting.main --gin_file=BUDGET [--gin_file=gin/search/M.gin]
      --gin_file=gin/mnist1d/standard_data.gin [--gin_file=MORE.gin ...] \
      [--gin_bindings=...] \
      --gin_bindings='SEARCH_SEED = S' --workdir=DIR/M/seed_S

one at a time, its output appended to DIR/M/seed_S/sweep.log. Methods:
`evoprompting` (the budget file's default method) and the method files
gin/search/{no_prompt_tuning, random_parents, naive_few_shot,
regularized_evolution, random_search}.gin. Every run uses the published
MNIST-1D (gin/mnist1d/standard_data.gin), so its figures are the same on
any machine; a search's default is a private draw. Every one spends the budget file's
sample budget (ROUNDS x CHILDREN_PER_ROUND children); the table shows the
children each run sampled, so a mismatch is visible.

Resumable as a sweep is: a run whose workdir records every round complete,
started by the same command, is skipped; any other is (re)started with the
same command, and `evoprompting.main` resumes it, or refuses a workdir of
another configuration. Every run's configuration is checked before any
starts.

Then, from the workdirs (`evoprompting.report.load_run`, the round statistics
of `evoprompting.summaries`), it prints per method the mean +- std over seeds
of the final hypervolume (of the Pareto front of everything the run
evaluated, seeds included, in test error x log10 params up to the budget's
reference point) and of the best fitness, and in how many runs the
best child by fitness Pareto-dominates the Greydanus CNN seed (lower or equal
test error and parameters, one of them lower). It writes the combined report
with `python -m evoprompting.report` to DIR/report, and ends with one SUMMARY
line. Exits non-zero when a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from typing import Sequence

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from evoprompting import report, summaries  # pylint: disable=g-import-not-at-top,wrong-import-position
from launch import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position
import machine  # pylint: disable=g-import-not-at-top,wrong-import-position
import seeds  # pylint: disable=g-import-not-at-top,wrong-import-position

# Method -> the gin files it adds after the budget file.
METHODS = {
    'evoprompting': (),
    'no_prompt_tuning': ('gin/search/no_prompt_tuning.gin',),
    'random_parents': ('gin/search/random_parents.gin',),
    'naive_few_shot': ('gin/search/naive_few_shot.gin',),
    'regularized_evolution': ('gin/search/regularized_evolution.gin',),
    'random_search': ('gin/search/random_search.gin',),
}
REFERENCE_SEED = 'greydanus_cnn'
# The published dataset, not this machine's private draw: same on any machine.
STANDARD_DATA = 'gin/mnist1d/standard_data.gin'



def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    # argparse, not absl: evoprompting.report, imported here, defines absl
    # flags of its own that this script's --help must not list.
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--budget_gin', default='gin/mnist1d/quick.gin',
                        help='The budget file every run starts from.')
    parser.add_argument('--seeds', default='0,1,2',
                        help='Comma-separated search seeds (SEARCH_SEED).')
    parser.add_argument('--methods', default=','.join(METHODS),
                        help='Comma-separated methods, of: ' + ', '.join(METHODS))
    parser.add_argument('--workdir_root',
                        default=os.path.join(tempfile.gettempdir(), 'search_mnist1d'),
                        help='Runs go to ROOT/<method>/seed_<s>, the report to '
                        'ROOT/report.')
    parser.add_argument('--gin_file', action='append', default=[],
                        help='More gin files for every run, after the method '
                        'file (e.g. gin/lm/tiny_random.gin); repeatable.')
    parser.add_argument('--gin_bindings', action='append', default=[],
                        help='Gin bindings for every run; repeatable.')
    parser.add_argument('--table_out', default='',
                        help='Also write the results as a markdown table, '
                        'with the commit, machine and command, to this file.')
    parser.add_argument('--dry_run', action='store_true',
                        help='Print the commands and exit.')
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(',') if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f'unknown methods {unknown}; known: {list(METHODS)}')
    try:
        args.seeds = [int(v) for v in args.seeds.split(',') if v]
    except ValueError:
        parser.error(f'--seeds must be comma-separated integers, got {args.seeds!r}')
    if not args.methods or not args.seeds:
        parser.error('give at least one method and one seed')
    return args


def plan(args: argparse.Namespace, root: str) -> list[sweep.Run]:
    """One `launch.sweep` run per method and seed, in ROOT/<method>/seed_<s>."""
    return [sweep.Run(
        name=os.path.join(m, f'seed_{s}'),
        gin_files=(args.budget_gin, *METHODS[m], STANDARD_DATA, *args.gin_file),
        bindings=(*args.gin_bindings, f'SEARCH_SEED = {s}'),
        varied=(('method', m), ('SEARCH_SEED', str(s))))
        for m in args.methods for s in args.seeds]


def dominates_reference(run: report.Run, reference_source: str) -> bool | None:
    """Whether the run's best child by fitness Pareto-dominates the seed with
    `reference_source` (`report.dominated_seeds`); None if that seed was not
    scored or no child was."""
    seed = next((c for c in run.seeds if c.source == reference_source), None)
    if (seed is None or report.best_child(run) is None
            or summaries.error_size_point(seed, run.objectives[1]) is None):
        return None
    return seed in report.dominated_seeds(run)


def table(groups: dict[str, list[report.Run]], reference_source: str) -> list[str]:
    lines = [f'{"method":<22} {"runs":>4} {"children":>10} '
             f'{"final hypervolume":>19} {"best fitness":>22} '
             f'{"best dominates " + REFERENCE_SEED:>29}']
    lines.append('-' * len(lines[0]))
    for method, runs in groups.items():
        finals = [run.stats[-1] for run in runs]
        children = sorted({len(run.children) for run in runs})
        verdicts = [dominates_reference(run, reference_source) for run in runs]
        dominated = (f'{sum(v is True for v in verdicts)}/{len(runs)} runs'
                     + (f' ({sum(v is None for v in verdicts)} n/a)'
                        if None in verdicts else ''))
        lines.append(
            f'{method:<22} {len(runs):>4} {",".join(map(str, children)):>10} '
            f'{report.mean_std([s.hypervolume_test for s in finals], ".4f"):>19} '
            f'{report.mean_std([s.best_fitness for s in finals], ",.1f"):>22} '
            f'{dominated:>29}')
    return lines


def markdown_table(groups: dict[str, list[report.Run]], reference_source: str,
                   argv: Sequence[str]) -> list[str]:
    """The results as the README shows them: a caption with the command,
    the commit(s) the runs recorded and this machine, then one row per method."""
    commits = sorted({_recorded_revision(run.workdir)[:10]
                      for runs in groups.values() for run in runs})
    lines = [f'`python benchmarks/search_mnist1d.py {shlex.join(argv)}`, at '
             f'commit {", ".join(commits)}'
             + (' (runs of DIFFERENT commits)' if len(commits) > 1 else '')
             + f', on {machine.describe()}; mean ± sample standard deviation '
             'over the runs (n):', '',
             '| method | runs | children per run | final hypervolume (test '
             'error x log10 params) | best fitness −(params × val error) | best '
             f'child dominates the {REFERENCE_SEED} seed | children ok |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for method, runs in groups.items():
        finals = [run.stats[-1] for run in runs]
        verdicts = [dominates_reference(run, reference_source) for run in runs]
        ok = [sum(c.result.ok and c.duplicate_of is None for c in run.children)
              / max(1, len(run.children)) for run in runs]
        lines.append(
            f'| {method} | {len(runs)} '
            f'| {", ".join(sorted({str(len(r.children)) for r in runs}))} '
            f'| {report.mean_std([s.hypervolume_test for s in finals], ".3f")} '
            f'| {report.mean_std([s.best_fitness for s in finals], ",.1f")} '
            f'| {sum(v is True for v in verdicts)}/{len(runs)} '
            f'| {min(ok):.0%}-{max(ok):.0%} |')
    return lines


def _recorded_revision(workdir: str) -> str:
    """The git revision a run recorded in its run_metadata.json."""
    try:
        with open(os.path.join(workdir, 'run_metadata.json'),
                  encoding='utf-8') as f:
            return json.load(f).get('git_revision') or 'unknown'
    except (OSError, ValueError):
        return 'unknown'


def summary_line(groups: dict[str, list[report.Run]], budget_gin: str,
                 failed: int) -> str:
    hv = {m: float(np.mean([r.stats[-1].hypervolume_test for r in runs]))
          for m, runs in groups.items()}
    parts = [f'{m} {v:.4f}' for m, v in sorted(hv.items(), key=lambda kv: -kv[1])]
    seeds_per = sorted({len(runs) for runs in groups.values()})
    children = sorted({len(r.children) for runs in groups.values() for r in runs})
    return (f'SUMMARY search_mnist1d {os.path.basename(budget_gin)}, '
            f'{"/".join(map(str, seeds_per))} seeds per method, '
            f'{"/".join(map(str, children))} children per run: mean final '
            f'hypervolume {", ".join(parts)}; best: {max(hv, key=hv.get)}'
            + (f'; {failed} runs FAILED' if failed else ''))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    root = os.path.abspath(args.workdir_root)
    runs = plan(args, root)
    try:
        runs = sweep.check(runs)
    except sweep.SweepError as e:
        sys.exit(f'error: {e}')
    if args.dry_run:
        for r in runs:
            print(shlex.join(r.command(os.path.join(root, r.name))))
        return

    failed = sweep.run_all(runs, root)
    done = [os.path.join(root, r.name) for r in runs if r not in failed]
    if not done:
        sys.exit(f'every run failed; see their {sweep.LOG_FILE}')
    loaded = [report.load_run(w) for w in done]
    groups: dict[str, list[report.Run]] = {}
    for run in loaded:
        groups.setdefault(run.method, []).append(run)
    reference_source = dict(seeds.read_seeds('mnist1d'))[REFERENCE_SEED]

    out = os.path.join(root, 'report')
    made = subprocess.run([sys.executable, '-m', 'evoprompting.report',
                           f'--out={out}', *done], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=False)
    print()
    print('\n'.join(table(groups, reference_source)))
    print(f'\nHypervolume: of the final Pareto front of (test error, log10 '
          f'params), reference {list(loaded[0].reference)}; best fitness: '
          '-(params x val error); mean ± std over seeds.')
    if made.returncode == 0:
        print(f'Report: {os.path.join(out, report.REPORT_FILE)}')
    else:
        print(f'The report failed: {made.stderr.strip()[-2000:]}')
    for r in failed:
        print(f'FAILED: {r.name}')
    if args.table_out:
        argv_shown = [a for a in (argv if argv is not None else sys.argv[1:])
                      if not a.startswith('--table_out')]
        with open(args.table_out, 'w', encoding='utf-8') as f:
            f.write('\n'.join(markdown_table(groups, reference_source,
                                             argv_shown)) + '\n')
        print(f'Table: {args.table_out}')
    print(summary_line(groups, args.budget_gin, len(failed)))
    if failed or made.returncode != 0:
        sys.exit(1)


if __name__ == '__main__':
    main()
