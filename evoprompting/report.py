r"""The report of one or more searches: Markdown and PNG figures.

Usage:

  python -m evoprompting.report --workdir=RUN1 [--workdir=RUN2 ...] --out=OUT
  python -m evoprompting.report --out=OUT RUN1 RUN2 ...   # the same

Reads each workdir's `candidates.jsonl` (read-only; a run in progress may be
reported) and `search_config.json` (written by the search at start: `method`,
`task`, `alpha`, `hypervolume_reference`, `num_rounds`, `objectives`: the
task's validation and test metrics, MNIST-1D's when absent), and writes
`OUT/report.md` with these PNGs beside it:

  fig2a_error_vs_size.png   the paper's Figure 2a: test error vs parameters of
                            each run's top 20 by fitness, with the seeds.
  fig2b_max_fitness.png     Figure 2b: best fitness vs children generated,
                            100 bootstrap samples of size 20 at each x; a
                            second panel zooms on the second half's plateau.
  fig4_round_means.png      Figure 4: each round's mean size and test error.
  hypervolume.png           hypervolume of the front so far, per round.
  status.png                what became of the sampled children, per run.

Runs with the same `method` (e.g. several search seeds) are one curve: their
values are pooled (Figure 2b, Figure 4) or averaged with min-max bands
(hypervolume). All workdirs must hold runs of the same task.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Sequence

from absl import app, flags, logging
import numpy as np

from evoprompting import plots, store, summaries
from evoprompting.tasks import base
import seeds as seeds_lib

REPORT_FILE = 'report.md'
FIGURES = {
    'fig2a': 'fig2a_error_vs_size.png',
    'fig2b': 'fig2b_max_fitness.png',
    'fig4': 'fig4_round_means.png',
    'hypervolume': 'hypervolume.png',
    'status': 'status.png',
}


class ReportError(Exception):
    """A workdir cannot be reported; the message says why."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One search as the report sees it."""

    workdir: str
    method: str
    task: str
    alpha: float
    reference: tuple[float, float]
    num_rounds: int | None
    objectives: tuple[str, str]  # (validation metric, test metric).
    candidates: tuple[store.Candidate, ...]
    stats: tuple[summaries.RoundStats, ...]
    completed_rounds: int = 0  # state.json's: rounds the search finished.

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.workdir)) or self.workdir

    @property
    def seeds(self) -> list[store.Candidate]:
        return [c for c in self.candidates if c.round < 0]

    @property
    def children(self) -> list[store.Candidate]:
        """The sampled children in generation order: by (round, proposal),
        not by id (ids follow evaluation completion)."""
        return sorted((c for c in self.candidates if c.round >= 0),
                      key=lambda c: (c.round, c.id if c.proposal is None
                                     else c.proposal, c.id))


def load_run(workdir: str) -> Run:
    """Reads one workdir (without changing it) and computes its round stats.

    Raises:
      ReportError: the folder, its candidate log or its search config is
        missing, empty or malformed.
    """
    if not os.path.isdir(workdir):
        raise ReportError(f'workdir {workdir!r} does not exist')
    config_path = os.path.join(workdir, store.SEARCH_CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise ReportError(f'{workdir!r} is not a search workdir: it has no '
                          f'{store.SEARCH_CONFIG_FILE}')
    try:
        with open(config_path, encoding='utf-8') as f:
            config = json.load(f)
        method, task = str(config['method']), str(config['task'])
        alpha = float(config['alpha'])
        reference = tuple(float(v) for v in config['hypervolume_reference'])
        num_rounds = config.get('num_rounds')
        objectives = tuple(str(k) for k in config.get(
            'objectives', summaries.DEFAULT_OBJECTIVES))
    except (ValueError, KeyError, TypeError) as e:
        raise ReportError(f'{config_path}: unreadable search config ({e!r}); '
                          'it needs method, task, alpha and '
                          'hypervolume_reference') from None
    if len(reference) != 2:
        raise ReportError(f'{config_path}: hypervolume_reference must be '
                          f'[error, log10_params], got {reference}')
    if len(objectives) != 2:
        raise ReportError(f'{config_path}: objectives must be '
                          f'[validation metric, test metric], got {objectives}')
    try:
        candidates = store.read_candidates(workdir)
    except FileNotFoundError as e:
        raise ReportError(str(e)) from None
    except store.StoreCorrupted as e:
        raise ReportError(f'{workdir!r}: {e}') from None
    if not candidates:
        raise ReportError(f'{workdir!r} has an empty candidate log: the search '
                          'has not evaluated anything yet')
    stats = summaries.all_round_stats(candidates, alpha=alpha, reference=reference,
                                      objectives=objectives)
    state = store.read_state(workdir) or {}
    return Run(workdir=workdir, method=method, task=task, alpha=alpha,
               reference=reference, num_rounds=num_rounds, objectives=objectives,
               candidates=tuple(candidates), stats=tuple(stats),
               completed_rounds=int(state.get('completed_rounds', 0)))


def _group_by_method(runs: Sequence[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = collections.OrderedDict()
    for run in runs:
        groups.setdefault(run.method, []).append(run)
    return groups


def _method_label(method: str, runs: Sequence[Run]) -> str:
    return method if len(runs) == 1 else f'{method} ({len(runs)} runs)'


def _fmt(value, spec: str = '.4g') -> str:
    return 'n/a' if value is None else format(value, spec)


def mean_std(values: Sequence[float | None], spec: str) -> str:
    """'mean ± sample standard deviation (n=k)' of the values present."""
    present = [v for v in values if v is not None]
    if not present:
        return 'n/a'
    if len(present) == 1:
        return f'{format(present[0], spec)} (n=1)'
    return (f'{format(np.mean(present), spec)} ± '
            f'{format(np.std(present, ddof=1), spec)} (n={len(present)})')


def _seed_groups(runs: Sequence[Run]) -> list[store.Candidate]:
    """The seeds of all runs, each program once (by source hash)."""
    seen, seeds = set(), []
    for run in runs:
        for c in run.seeds:
            if c.result.source_sha256 not in seen:
                seen.add(c.result.source_sha256)
                seeds.append(c)
    return seeds


def _seed_names(runs: Sequence[Run]) -> dict[str, str]:
    """Seed program names (seeds/<task>/<name>.py) by source hash, for the
    seeds of `runs`' tasks."""
    names = {}
    for task in {run.task for run in runs}:
        try:
            task_seeds = seeds_lib.read_seeds(task)
        except FileNotFoundError:  # A task of the user's, seeds elsewhere.
            continue
        for name, source in task_seeds:
            names[base.source_sha256(source)] = name
    return names


def _point_group(candidates: Sequence[store.Candidate], test_key: str,
                 **kwargs) -> plots.PointGroup:
    pairs = [(c, p) for c in candidates
             if (p := summaries.error_size_point(c, test_key)) is not None]
    return plots.PointGroup(params=[c.result.params for c, _ in pairs],
                            errors=[p[0] for _, p in pairs], **kwargs)


def figure_2a(groups: dict[str, list[Run]], top_k: int) -> plots.Figure:
    point_groups = []
    test_key = next(iter(groups.values()))[0].objectives[1]  # One task.
    for i, (method, runs) in enumerate(groups.items()):
        top = [c for run in runs
               for c in summaries.best_candidates(run.children, top_k,
                                                  alpha=run.alpha,
                                                  objectives=run.objectives)]
        point_groups.append(_point_group(
            top, test_key, label=_method_label(method, runs),
            color=plots.color(i)))
    all_runs = [r for runs in groups.values() for r in runs]
    seeds = [c for c in _seed_groups(all_runs)
             if summaries.error_size_point(c, test_key) is not None]
    names = _seed_names(all_runs)
    point_groups.append(_point_group(
        seeds, test_key, label='seeds', color='black', marker='*', front=False,
        names=[names.get(c.result.source_sha256, f'seed {c.proposal}')
               for c in seeds]))
    return plots.error_vs_size(point_groups, title=(
        f'Top {top_k} children of each run by fitness (lines: Pareto fronts)'))


def bootstrap_curves(groups: dict[str, list[Run]], *, rng: np.random.Generator,
                     num_samples: int, sample_size: int,
                     max_points: int = 200) -> list[plots.Curve]:
    """Figure 2b's curves: per method, bootstrap maxima pooled over its runs
    up to the shortest run's number of children; mean and 10-90% band."""
    curves = []
    for i, (method, runs) in enumerate(groups.items()):
        length = min(len(run.children) for run in runs)
        if length == 0:
            continue
        xs = np.unique(np.linspace(1, length, min(length, max_points)).round()
                       ).astype(int)
        samples = np.concatenate([
            summaries.bootstrap_max_fitness(
                [summaries.candidate_fitness(c, alpha=run.alpha,
                                             objectives=run.objectives)
                 for c in run.children], xs, rng=rng,
                num_samples=num_samples, sample_size=sample_size)
            for run in runs], axis=1)
        keep = ~np.isnan(samples).any(axis=1)
        if not keep.any():
            continue
        kept = samples[keep]
        curves.append(plots.Curve(
            label=_method_label(method, runs), x=xs[keep], mean=kept.mean(axis=1),
            low=np.percentile(kept, 10, axis=1),
            high=np.percentile(kept, 90, axis=1), color=plots.color(i)))
    return curves


def fig2b_zoom_from(curves: Sequence[plots.Curve]) -> float | None:
    """Where Figure 2b's zoomed panel starts: half way along the longest
    curve, where the curves have mostly reached their plateau (the early
    samples, maxima of a few children, set the full panel's y range)."""
    last = max((c.x[-1] for c in curves if len(c.x)), default=None)
    return None if last is None or last < 4 else float(np.ceil(last / 2))


def figure_4(groups: dict[str, list[Run]]) -> plots.Figure:
    trajectories = []
    for i, (method, runs) in enumerate(groups.items()):
        by_round = collections.defaultdict(list)
        for run in runs:
            for c in run.children:
                if (p := summaries.error_size_point(
                        c, run.objectives[1])) is not None:
                    by_round[c.round].append((c.result.params, p[0]))
        rounds = sorted(by_round)
        trajectories.append(plots.Trajectory(
            label=_method_label(method, runs), rounds=rounds,
            mean_params=[np.mean([p for p, _ in by_round[r]]) for r in rounds],
            mean_errors=[np.mean([e for _, e in by_round[r]]) for r in rounds],
            color=plots.color(i)))
    return plots.round_trajectories(trajectories, title=(
        "Mean size and test error of each round's ok children"),
        empty_note='no ok child')


def figure_hypervolume(groups: dict[str, list[Run]]) -> plots.Figure:
    curves = []
    for i, (method, runs) in enumerate(groups.items()):
        rounds = sorted(set.intersection(*({s.round for s in run.stats}
                                           for run in runs)))
        values = np.array([[next(s.hypervolume_test for s in run.stats
                                 if s.round == r) for r in rounds]
                           for run in runs])
        curves.append(plots.Curve(
            label=_method_label(method, runs), x=rounds, mean=values.mean(axis=0),
            low=values.min(axis=0), high=values.max(axis=0), color=plots.color(i)))
    references = {run.reference for runs in groups.values() for run in runs}
    return plots.curves(
        curves, xlabel='round (-1: seeds)', integer_x=True,
        ylabel='hypervolume (test error × log10 params)',
        title=('Hypervolume of the Pareto front so far\n(reference '
               + ', '.join(str(list(r)) for r in sorted(references))
               + ('' if all(len(r) == 1 for r in groups.values())
                  else '; mean and min-max band over runs') + ')'))


def figure_status(runs: Sequence[Run]) -> plots.Figure:
    fractions = []
    for run in runs:
        counts = collections.Counter(summaries.status_key(c) for c in run.children)
        fractions.append([counts[k] / max(len(run.children), 1)
                          for k in summaries.STATUS_KEYS])
    return plots.stacked_bars([run.name if run.method in run.name
                               else f'{run.method} / {run.name}' for run in runs],
                              fractions, summaries.STATUS_KEYS,
                              title='What became of the sampled children')


def _runs_table(runs: Sequence[Run]) -> list[str]:
    lines = ['| run | method | task | rounds done | children | seeds | alpha '
             '| HV reference |', '|---|---|---|---:|---:|---:|---:|---|']
    for run in runs:
        done = run.completed_rounds
        planned = f' of {run.num_rounds}' if run.num_rounds is not None else ''
        lines.append(f'| `{run.workdir}` | {run.method} | {run.task} '
                     f'| {done}{planned} | {len(run.children)} '
                     f'| {len(run.seeds)} | {run.alpha:g} | {list(run.reference)} |')
    return lines


def best_child(run: Run) -> store.Candidate | None:
    """The run's best child by fitness; None when no child was scored."""
    best = summaries.best_candidates(run.children, 1, alpha=run.alpha,
                                     objectives=run.objectives)
    return best[0] if best else None


def dominated_seeds(run: Run) -> list[store.Candidate]:
    """The seeds that the run's best child by fitness Pareto-dominates in
    (test error, parameters): no worse in both and better in one. Empty when
    no child was scored."""
    best = best_child(run)
    test_key = run.objectives[1]
    if best is None or (b := summaries.error_size_point(best, test_key)) is None:
        return []
    dominated = []
    for seed in run.seeds:
        s = summaries.error_size_point(seed, test_key)
        if s is not None and b[0] <= s[0] and b[1] <= s[1] and b != s:
            dominated.append(seed)
    return dominated


def _summary_table(groups: dict[str, list[Run]]) -> list[str]:
    lines = ['| method | runs | children per run | best fitness | '
             'final hypervolume (test) | final hypervolume (val) | '
             'seeds dominated by the best child |',
             '|---|---:|---:|---:|---:|---:|---|']
    for method, runs in groups.items():
        finals = [run.stats[-1] for run in runs]
        dominated = ', '.join(f'{len(dominated_seeds(run))}/{len(run.seeds)}'
                              for run in runs)
        lines.append(
            f'| {method} | {len(runs)} '
            f"| {', '.join(str(len(run.children)) for run in runs)} "
            f"| {mean_std([s.best_fitness for s in finals], ',.1f')} "
            f"| {mean_std([s.hypervolume_test for s in finals], '.4f')} "
            f"| {mean_std([s.hypervolume_val for s in finals], '.4f')} "
            f'| {dominated} |')
    return lines


def _status_table(runs: Sequence[Run]) -> list[str]:
    keys = [k for k in summaries.STATUS_KEYS
            if any(summaries.status_key(c) == k for run in runs
                   for c in run.children)]
    lines = ['| run | method | children | ' + ' | '.join(keys) + ' |',
             '|---|---|---:|' + '---:|' * len(keys)]
    for run in runs:
        counts = collections.Counter(summaries.status_key(c) for c in run.children)
        n = max(len(run.children), 1)
        cells = ' | '.join(f'{counts[k]} ({100 * counts[k] / n:.0f}%)' for k in keys)
        lines.append(f'| {run.name} | {run.method} | {len(run.children)} | {cells} |')
    return lines


def _rounds_table(run: Run) -> list[str]:
    lines = ['| round | children | ok | duplicates | scored | best fitness so far '
             '| hypervolume (test) | front size | mean params | mean test error |',
             '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for s in run.stats:
        lines.append(
            f"| {'seeds' if s.round < 0 else s.round} | {s.num_children} "
            f"| {s.status_counts['ok']} | {s.status_counts[summaries.DUPLICATE]} "
            f'| {s.num_scored} | {_fmt(s.best_fitness, ",.1f")} '
            f'| {s.hypervolume_test:.4f} | {s.front_size} '
            f'| {_fmt(s.mean_params, ",.0f")} | {_fmt(s.mean_test_error, ".4f")} |')
    return lines


def _lineage(run: Run, candidate: store.Candidate, max_listed: int = 6) -> str:
    """The ancestry of a candidate back to the seeds, one generation a line
    (each ancestor once, at its nearest generation)."""
    by_id = {c.id: c for c in run.candidates}
    lines, seen = [], set()
    generation = sorted(set(candidate.parents))
    while generation:
        described = []
        for pid in generation[:max_listed]:
            parent = by_id.get(pid)
            if parent is None:
                described.append(f'#{pid} (not in the log)')
                continue
            fit = summaries.candidate_fitness(parent, alpha=run.alpha,
                                              objectives=run.objectives)
            origin = 'seed' if parent.round < 0 else f'round {parent.round}'
            described.append(f'#{pid} ({origin}, params '
                             f'{_fmt(parent.result.params, ",")}, fitness {_fmt(fit, ",.1f")})')
        more = len(generation) - max_listed
        lines.append('- ' + '; '.join(described) + (f'; and {more} more' if more > 0 else ''))
        seen.update(generation)
        generation = sorted({p for pid in generation if pid in by_id
                             for p in by_id[pid].parents} - seen)
    return '\n'.join(lines) if lines else '- none'


def write_report(runs: Sequence[Run], out: str, *, rng: np.random.Generator,
                 top_k: int = 20, num_best: int = 3, bootstrap_samples: int = 100,
                 bootstrap_size: int = 20) -> str:
    """Writes `out/report.md` and the figures; returns the report's path.

    Raises:
      ReportError: no runs, or runs of different tasks.
    """
    if not runs:
        raise ReportError('no workdir given')
    tasks = sorted({run.task for run in runs})
    if len(tasks) > 1:
        raise ReportError(f'runs of different tasks cannot share a report: {tasks}')
    os.makedirs(out, exist_ok=True)
    groups = _group_by_method(runs)

    plots.save_png(figure_2a(groups, top_k), os.path.join(out, FIGURES['fig2a']))
    best_seed = max((f for run in runs for c in run.seeds
                     if (f := summaries.candidate_fitness(
                         c, alpha=run.alpha, objectives=run.objectives))
                     is not None), default=None)
    fitness_curves = bootstrap_curves(groups, rng=rng,
                                      num_samples=bootstrap_samples,
                                      sample_size=bootstrap_size)
    zoom_from = fig2b_zoom_from(fitness_curves)
    plots.save_png(plots.curves(
        fitness_curves,
        title=(f'Max fitness in {bootstrap_samples} bootstrap samples of '
               f'{bootstrap_size} (mean, 10-90% band)'),
        xlabel='children generated', ylabel='max fitness  −(params × val error)',
        integer_x=True, reference=None if best_seed is None else ('best seed', best_seed),
        zoom_from=zoom_from, empty_note='no scored child'),
        os.path.join(out, FIGURES['fig2b']))
    plots.save_png(figure_4(groups), os.path.join(out, FIGURES['fig4']))
    plots.save_png(figure_hypervolume(groups), os.path.join(out, FIGURES['hypervolume']))
    plots.save_png(figure_status(runs), os.path.join(out, FIGURES['status']))

    md = [f'# EvoPrompting search report: {tasks[0]}', '',
          'Fitness is −(params × validation error), higher is better; children '
          'whose validation error is not below alpha are not scored. '
          'Hypervolume is measured in (test error, log10 params) space up to '
          'the reference point. Duplicates are counted as sampled children but '
          'not scored again.', '',
          '## Runs', '', *_runs_table(runs), '',
          '## Summary per method', '', *_summary_table(groups), '',
          '## Figure 2a: test error vs model size', '',
          f"Each run's top {top_k} children by fitness, with the seeds; lines "
          'are each method\'s Pareto front (closer to the origin is better).', '',
          f"![Figure 2a]({FIGURES['fig2a']})", '',
          '## Figure 2b: max fitness vs children generated', '',
          f'At each x, {bootstrap_samples} samples of {bootstrap_size} drawn with '
          'replacement from the scored children among the first x; runs of one '
          "method are pooled up to the shortest run's length."
          + ('' if zoom_from is None else
             " The right panel shows the second half's means with the y axis "
             'framed by them, where the early maxima of a few children do '
             'not squeeze the plateau into a line.'), '',
          f"![Figure 2b]({FIGURES['fig2b']})", '',
          "## Figure 4: each round's mean size and test error", '',
          f"![Figure 4]({FIGURES['fig4']})", '',
          '## Hypervolume per round', '',
          f"![Hypervolume]({FIGURES['hypervolume']})", '',
          '## Status breakdown', '', *_status_table(runs), '',
          f"![Status]({FIGURES['status']})", '',
          '## Rounds of each run', '']
    for run in runs:
        md += [f'### {run.method}: `{run.workdir}`', '', *_rounds_table(run), '']
    md += ['## Best programs', '']
    for run in runs:
        md += [f'### {run.method}: `{run.workdir}`', '']
        best = summaries.best_candidates(run.children, num_best, alpha=run.alpha,
                                         objectives=run.objectives)
        if not best:
            md += ['No child was scored.', '']
        for c in best:
            md += [summaries.program_markdown(c, alpha=run.alpha, heading='####',
                                              objectives=run.objectives),
                   'Ancestry (parents, then their parents):', '',
                   _lineage(run, c), '']
    path = os.path.join(out, REPORT_FILE)
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(md))
    return path


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The binary's flags; defined only when it runs, so the programs that
    import this module (sweeps, benchmarks) do not get them."""
    flags.DEFINE_multi_string('workdir', [], 'A search workdir to report (repeat '
                              'the flag, or list workdirs as positional arguments).')
    flags.DEFINE_string('out', None, 'Output folder for report.md and the PNGs '
                        '(required).')
    flags.DEFINE_integer('top_k', 20, "Figure 2a: each run's top-k children by fitness.",
                         lower_bound=1)
    flags.DEFINE_integer('num_best', 3, 'Best programs listed per run.', lower_bound=1)
    flags.DEFINE_integer('bootstrap_samples', 100, 'Figure 2b: samples at each x.',
                         lower_bound=1)
    flags.DEFINE_integer('bootstrap_size', 20, 'Figure 2b: size of each sample.',
                         lower_bound=1)
    flags.DEFINE_integer('seed', 0, 'Seed of the bootstrap random generator.')


def main(argv: Sequence[str]) -> None:
    workdirs = list(FLAGS.workdir) + list(argv[1:])
    if not FLAGS.out:
        raise app.UsageError('--out is required: the folder for report.md and '
                             'the PNGs')
    if not workdirs:
        raise app.UsageError('give at least one workdir (--workdir=DIR or DIR)')
    try:
        runs = [load_run(w) for w in workdirs]
        path = write_report(runs, FLAGS.out, rng=np.random.default_rng(FLAGS.seed),
                            top_k=FLAGS.top_k, num_best=FLAGS.num_best,
                            bootstrap_samples=FLAGS.bootstrap_samples,
                            bootstrap_size=FLAGS.bootstrap_size)
    except ReportError as e:
        raise SystemExit(f'report: {e}') from None
    logging.info('wrote %s', path)
    print(path)


if __name__ == '__main__':
    define_flags()
    app.run(main)
