"""Fitness, survivor selection and the Pareto view (EvoPrompting section 3.3).

Fitness is the negative product of parameter count and validation error,
`-(params * val_error)`, higher is better; a child whose validation error is
not below the threshold alpha is not scored (Algorithm 3), because tiny
useless models would otherwise win. GETTOP takes the top-p scored candidates
of the whole history that have not served as parents yet (selected parents
are retired: "permanently removed from the population").

Results are judged on the Pareto front of (test error, parameter count), both
minimised. The paper defines no scalar for the front; we report the
hypervolume of the front in (error, log10 params) space, bounded by a fixed
reference point, so runs with models of very different sizes compare sensibly.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from evoprompting.tasks import base

# (validation metric, test metric) of MNIST-1D, the default wherever a task's
# `objectives` are not given (e.g. workdirs written before they were recorded).
DEFAULT_OBJECTIVES = ('val_accuracy', 'test_accuracy')


def fitness(result: base.EvalResult, *, alpha: float,
            accuracy_key: str = DEFAULT_OBJECTIVES[0]) -> float | None:
    """-(params * val_error), val_error = 1 - metrics[accuracy_key], or None
    when the result is not scored."""
    if not result.ok or result.params is None or accuracy_key not in result.metrics:
        return None
    error = 1.0 - float(result.metrics[accuracy_key])
    if not error < alpha:
        return None
    return -(result.params * error)


def get_top(fitnesses: Sequence[float | None], p: int) -> list[int]:
    """Indices of the `p` best scored entries, best first.

    Ties keep the earlier index first, so selection is deterministic.
    """
    scored = [(f, i) for i, f in enumerate(fitnesses) if f is not None]
    scored.sort(key=lambda fi: (-fi[0], fi[1]))
    return [i for _, i in scored[:p]]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, both coordinates minimised,
    sorted by the first coordinate. Of identical points the first is kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    front, best_second = [], math.inf
    for i in order:
        if points[i][1] < best_second:
            front.append(i)
            best_second = points[i][1]
    return front


def hypervolume(points: Sequence[tuple[float, float]],
                reference: tuple[float, float]) -> float:
    """Area dominated by `points` inside the box below `reference` (2-D,
    both coordinates minimised). Points outside the box add nothing."""
    inside = [pt for pt in points if pt[0] < reference[0] and pt[1] < reference[1]]
    front = [inside[i] for i in pareto_front(inside)]
    area, ceiling = 0.0, reference[1]
    for x, y in front:  # Increasing x, decreasing y.
        area += (reference[0] - x) * (ceiling - y)
        ceiling = y
    return area


def error_size_points(results: Sequence[base.EvalResult],
                      error_key: str = DEFAULT_OBJECTIVES[1]
                      ) -> list[tuple[float, float]]:
    """(error, log10 params) of the `ok` results, for fronts and hypervolume."""
    return [(1.0 - float(r.metrics[error_key]), float(np.log10(r.params)))
            for r in results
            if r.ok and r.params and error_key in r.metrics]
