"""Per-round statistics of a search, and its TensorBoard summaries.

Pure functions turn the candidate log (`store.Candidate`s) into `RoundStats`
records; `TensorBoardWriter` writes one round's record, a Pareto-front image
and the best programs under `<workdir>/tensorboard/<run>` (tensorboardX, no
TensorFlow), the run named after the workdir's folder. The report (`evoprompting.report`) uses the same functions, so
what TensorBoard shows during a run and what the report shows afterwards are
computed once.

Conventions (the paper is silent on them):
  * Seeds have round -1; their `RoundStats` is the starting point.
  * A candidate with `duplicate_of` set counts as status `duplicate`
    whatever its recorded result, and is left out of fronts, fitness,
    means and best-program lists (its program was scored already).
  * "So far" quantities (best fitness, hypervolume, front) cover every
    candidate of rounds <= the round, seeds included.
  * A round's means cover its `ok` children with a parameter count and a
    test score, whether or not they pass the alpha filter.
  * `objectives` is the task's (validation metric, test metric) pair
    (`Task.objectives`); errors are 1 - score. It defaults to MNIST-1D's.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import numpy as np
import tensorboardX

from evoprompting import plots, selection, store
from evoprompting.tasks import base

Objectives = Sequence[str]  # (validation metric, test metric).
DEFAULT_OBJECTIVES = selection.DEFAULT_OBJECTIVES
DUPLICATE = 'duplicate'
# Every category a child can fall in, in display order.
STATUS_KEYS: tuple[str, ...] = tuple(s.value for s in base.Status) + (DUPLICATE,)
TENSORBOARD_DIR = 'tensorboard'
# The Pareto image: TensorBoard fits an image to its card whatever its
# pixels (Time Series tab: 215 px tall, at most the card's 326+ px wide;
# Images tab: about 350 px wide), so its text is legible only when the
# figure is small in inches: 3 inches tall make 10 pt 10 px. The dpi keeps
# it sharp when the card is widened or shown at its actual size.
PARETO_SIZE = (4.5, 3.0)
PARETO_DPI = 160


@dataclasses.dataclass(frozen=True)
class RoundStats:
    """What one round of a search produced, and where the search stands.

    Attributes:
      round: the round (-1 for the seeds).
      num_children: candidates sampled in this round (all statuses).
      children_so_far: candidates sampled in rounds 0..round (seeds excluded).
      status_counts: candidates of this round per `STATUS_KEYS` entry (all
        keys present).
      num_scored: this round's candidates with a fitness (pass alpha).
      round_best_fitness: best fitness among this round's candidates.
      best_fitness: best fitness so far (seeds included); None if none scored.
      best_id: id of the candidate with `best_fitness`.
      hypervolume_test: hypervolume of everything so far in (test error,
        log10 params) space, bounded by the reference point.
      hypervolume_val: the same with the validation error.
      front_size: number of points on the test-error Pareto front so far.
      mean_params: mean parameter count of this round's ok children.
      mean_test_error: mean test error of this round's ok children.
    """

    round: int
    num_children: int
    children_so_far: int
    status_counts: Mapping[str, int]
    num_scored: int
    round_best_fitness: float | None
    best_fitness: float | None
    best_id: int | None
    hypervolume_test: float
    hypervolume_val: float
    front_size: int
    mean_params: float | None
    mean_test_error: float | None

    @property
    def status_fractions(self) -> dict[str, float]:
        """Fraction of this round's candidates per `STATUS_KEYS` entry."""
        n = max(self.num_children, 1)
        return {k: self.status_counts[k] / n for k in STATUS_KEYS}


def status_key(candidate: store.Candidate) -> str:
    """The candidate's `STATUS_KEYS` category."""
    if candidate.duplicate_of is not None:
        return DUPLICATE
    return candidate.result.status.value


def candidate_fitness(candidate: store.Candidate, *, alpha: float,
                      objectives: Objectives = DEFAULT_OBJECTIVES
                      ) -> float | None:
    """`selection.fitness` of a candidate; None for duplicates."""
    if candidate.duplicate_of is not None:
        return None
    return selection.fitness(candidate.result, alpha=alpha,
                             accuracy_key=objectives[0])


def error_size_point(candidate: store.Candidate,
                     error_key: str = DEFAULT_OBJECTIVES[1]
                     ) -> tuple[float, float] | None:
    """(error, log10 params) of an ok, non-duplicate candidate, else None."""
    if candidate.duplicate_of is not None:
        return None
    points = selection.error_size_points([candidate.result], error_key)
    return points[0] if points else None


def round_stats(candidates: Sequence[store.Candidate], round_index: int, *,
                alpha: float, reference: tuple[float, float],
                objectives: Objectives = DEFAULT_OBJECTIVES) -> RoundStats:
    """Statistics of round `round_index` of the log `candidates`.

    Args:
      candidates: the whole log (later rounds are ignored).
      round_index: the round, -1 for the seeds.
      alpha: the search's error threshold (`selection.fitness`).
      reference: the hypervolume reference point (error, log10 params).
      objectives: the task's (validation metric, test metric).
    """
    val_key, test_key = objectives
    history = [c for c in candidates if c.round <= round_index]
    children = [c for c in history if c.round == round_index]
    counts = {k: 0 for k in STATUS_KEYS}
    for c in children:
        counts[status_key(c)] += 1

    def best(pool):
        scored = [(f, c.id) for c in pool
                  if (f := candidate_fitness(c, alpha=alpha,
                                             objectives=objectives)) is not None]
        return max(scored, key=lambda fi: (fi[0], -fi[1])) if scored else (None, None)

    best_fitness, best_id = best(history)
    round_best, _ = best(children)
    test_points = [p for c in history
                   if (p := error_size_point(c, test_key)) is not None]
    val_points = [p for c in history
                  if (p := error_size_point(c, val_key)) is not None]
    ok_children = [(c.result.params, p[0]) for c in children
                   if (p := error_size_point(c, test_key)) is not None]
    return RoundStats(
        round=round_index,
        num_children=len(children),
        children_so_far=sum(1 for c in history if c.round >= 0),
        status_counts=counts,
        num_scored=sum(candidate_fitness(c, alpha=alpha, objectives=objectives)
                       is not None for c in children),
        round_best_fitness=round_best,
        best_fitness=best_fitness,
        best_id=best_id,
        hypervolume_test=selection.hypervolume(test_points, reference),
        hypervolume_val=selection.hypervolume(val_points, reference),
        front_size=len(selection.pareto_front(test_points)),
        mean_params=(float(np.mean([p for p, _ in ok_children]))
                     if ok_children else None),
        mean_test_error=(float(np.mean([e for _, e in ok_children]))
                         if ok_children else None),
    )


def all_round_stats(candidates: Sequence[store.Candidate], *, alpha: float,
                    reference: tuple[float, float],
                    objectives: Objectives = DEFAULT_OBJECTIVES
                    ) -> list[RoundStats]:
    """`round_stats` of every round present in the log, in round order."""
    return [round_stats(candidates, r, alpha=alpha, reference=reference,
                        objectives=objectives)
            for r in sorted({c.round for c in candidates})]


def best_candidates(candidates: Sequence[store.Candidate], k: int, *,
                    alpha: float, objectives: Objectives = DEFAULT_OBJECTIVES
                    ) -> list[store.Candidate]:
    """The `k` scored candidates of highest fitness, best first (ties: lower id)."""
    fitnesses = [candidate_fitness(c, alpha=alpha, objectives=objectives)
                 for c in candidates]
    return [candidates[i] for i in selection.get_top(fitnesses, k)]


def bootstrap_max_fitness(fitnesses: Sequence[float | None], xs: Sequence[int], *,
                          rng: np.random.Generator, num_samples: int = 100,
                          sample_size: int = 20) -> np.ndarray:
    """Bootstrap estimate of the best fitness after x children (Figure 2b).

    For each x, draws `num_samples` samples of `sample_size` (with
    replacement) from the scored children among the first x, and takes each
    sample's maximum. Unscored children (failures, duplicates, alpha-filtered)
    are not drawn; with none scored yet the row is NaN.

    Args:
      fitnesses: each child's fitness in generation order (None: unscored).
      xs: numbers of children generated, each in [1, len(fitnesses)].
      rng: the explicit random generator.
      num_samples: bootstrap samples per x (the paper: 100).
      sample_size: size of each sample (the paper: 20).

    Returns:
      [len(xs), num_samples] sample maxima.
    """
    values = np.array([np.nan if f is None else f for f in fitnesses], dtype=float)
    out = np.full((len(xs), num_samples), np.nan)
    for row, x in enumerate(xs):
        if not 1 <= x <= len(values):
            raise ValueError(f'x={x} is outside 1..{len(values)} children')
        pool = values[:x][~np.isnan(values[:x])]
        if pool.size:
            out[row] = rng.choice(pool, size=(num_samples, sample_size)).max(axis=1)
    return out


def _format_metric(value: float | int | None, spec: str) -> str:
    return 'n/a' if value is None else format(value, spec)


def program_markdown(candidate: store.Candidate, *, alpha: float,
                     heading: str = '###',
                     objectives: Objectives = DEFAULT_OBJECTIVES) -> str:
    """A candidate as Markdown: metrics, lineage, then its source."""
    r = candidate.result
    fit = candidate_fitness(candidate, alpha=alpha, objectives=objectives)
    origin = 'seed' if candidate.round < 0 else f'round {candidate.round}'
    val_key, test_key = objectives
    lines = [
        f'{heading} #{candidate.id} ({origin})',
        '',
        f'| params | {val_key} | {test_key} | fitness | best step |',
        '|---:|---:|---:|---:|---:|',
        f"| {_format_metric(r.params, ',d')} "
        f"| {_format_metric(r.metrics.get(val_key), '.4f')} "
        f"| {_format_metric(r.metrics.get(test_key), '.4f')} "
        f"| {_format_metric(fit, ',.1f')} "
        f"| {_format_metric(r.metrics.get('best_step'), '.0f')} |",
        '',
        f"Lineage: parents {', '.join(f'#{p}' for p in candidate.parents) or 'none'}"
        f"; prompt {_format_metric(candidate.prompt_id, 'd')}"
        f"; temperature {_format_metric(candidate.temperature, 'g')}.",
        '',
        '```python',
        candidate.source.rstrip('\n'),
        '```',
        '',
    ]
    return '\n'.join(lines)


def tensorboard_run_dir(workdir: str) -> str:
    """`<workdir>/tensorboard/<run>`: `tensorboard --logdir
    <workdir>/tensorboard` shows the run under the workdir's name, and one
    --logdir above several workdirs tells their runs apart."""
    workdir = os.path.abspath(workdir)
    return os.path.join(workdir, TENSORBOARD_DIR, os.path.basename(workdir))


class TensorBoardWriter:
    """Writes a search's per-round summaries (`tensorboard_run_dir`).

    Steps are round indices (seeds: -1). Each `write_round` writes scalars, a
    Pareto-front image and the best programs as text, then flushes.

    Scalar tags: `search/best_fitness`, `search/hypervolume_test`,
    `search/hypervolume_val`, `search/pareto_front_size`,
    `search/children_generated`, `round/num_children`, `round/num_scored`,
    `round/best_fitness`, `round/mean_params`, `round/mean_test_error`,
    `status/<key>` (fraction of the round's children, every `STATUS_KEYS`
    key), and the caller's `extra_scalars` under their own tags. Values that
    do not exist yet (no scored model) are not written.
    Image tag: `pareto_front`. Text tag: `best_programs`.
    """

    def __init__(self, workdir: str, *, alpha: float, num_best: int = 3,
                 purge_step: int | None = None,
                 objectives: Objectives = DEFAULT_OBJECTIVES):
        """Opens the writer.

        Args:
          workdir: the search's workdir; events go to
            `tensorboard_run_dir(workdir)`.
          alpha: the search's error threshold, to rank the best programs.
          num_best: how many best programs the text summary shows.
          purge_step: on resume, the first round about to be written again;
            TensorBoard then discards events of that step and later left
            by the interrupted run. None for a fresh run.
          objectives: the task's (validation metric, test metric).
        """
        if num_best < 1:
            raise ValueError(f'num_best must be >= 1, got {num_best}')
        self.logdir = tensorboard_run_dir(workdir)
        self.run = os.path.basename(self.logdir)
        self._alpha = alpha
        self._objectives = tuple(objectives)
        self._num_best = num_best
        self._writer = tensorboardX.SummaryWriter(self.logdir, purge_step=purge_step)

    def write_round(self, stats: RoundStats, *,
                    candidates: Sequence[store.Candidate],
                    extra_scalars: Mapping[str, float] | None = None) -> None:
        """Writes the summaries of `stats.round` and flushes.

        Args:
          stats: `round_stats(candidates, r, ...)` of the round just finished.
          candidates: the whole log so far (rounds after `stats.round` are
            ignored), for the image and the best programs.
          extra_scalars: loop measurements for this round, tag -> value, e.g.
            {'speed/evaluations_per_min': 12.5, 'prompt_tuning/loss': 0.8}.
        """
        step = stats.round
        scalars = {
            'search/best_fitness': stats.best_fitness,
            'search/hypervolume_test': stats.hypervolume_test,
            'search/hypervolume_val': stats.hypervolume_val,
            'search/pareto_front_size': stats.front_size,
            'search/children_generated': stats.children_so_far,
            'round/num_children': stats.num_children,
            'round/num_scored': stats.num_scored,
            'round/best_fitness': stats.round_best_fitness,
            'round/mean_params': stats.mean_params,
            'round/mean_test_error': stats.mean_test_error,
            **{f'status/{k}': v for k, v in stats.status_fractions.items()},
        }
        for tag, value in (extra_scalars or {}).items():
            if tag in scalars:
                raise ValueError(f'extra scalar {tag!r} clashes with a built-in tag')
            scalars[tag] = value
        for tag, value in scalars.items():
            if value is not None:
                self._writer.add_scalar(tag, float(value), step)
        history = [c for c in candidates if c.round <= stats.round]
        image = plots.to_rgb(pareto_figure(history, title=(
            f'{self.run}: after ' + ('the seeds' if step < 0 else f'round {step}')),
            test_key=self._objectives[1]), dpi=PARETO_DPI)
        self._writer.add_image('pareto_front', image, step, dataformats='HWC')
        best = best_candidates(history, self._num_best, alpha=self._alpha,
                               objectives=self._objectives)
        text = '\n'.join(program_markdown(c, alpha=self._alpha,
                                          objectives=self._objectives)
                         for c in best)
        self._writer.add_text('best_programs', text or 'No scored program yet.', step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pareto_figure(candidates: Sequence[store.Candidate], *, title: str,
                  test_key: str = DEFAULT_OBJECTIVES[1]) -> plots.Figure:
    """One run's ok models by round, the seeds as stars, and the front of
    all of them (test error: 1 - metrics[test_key]); `PARETO_SIZE`, so its
    text stays legible at the width TensorBoard shows it."""
    seeds, children = [], []
    for c in candidates:
        if (p := error_size_point(c, test_key)) is not None:
            (seeds if c.round < 0 else children).append((c, p))
    all_points = seeds + children
    front_ids = {all_points[i][0].id
                 for i in selection.pareto_front([p for _, p in all_points])}
    front = [(c, p) for c, p in all_points if c.id in front_ids]

    def group(pairs, **kwargs):
        return plots.PointGroup(params=[c.result.params for c, _ in pairs],
                                errors=[p[0] for _, p in pairs], **kwargs)

    groups = [
        group(children, label='children', rounds=[c.round for c, _ in children],
              front=False),
        group(seeds, label='seeds', color='black', marker='*', front=False),
        group(front, label='Pareto front', color='tab:red', marker='x'),
    ]
    return plots.error_vs_size(groups, title=title, size=PARETO_SIZE)
