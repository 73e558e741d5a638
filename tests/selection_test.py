"""Fitness, GETTOP with retirement, Pareto front and hypervolume."""

import pytest

from evoprompting import selection
from evoprompting.tasks import base


def result(params, val_acc, status=base.Status.OK, test_acc=None):
    metrics = {'val_accuracy': val_acc}
    if test_acc is not None:
        metrics['test_accuracy'] = test_acc
    return base.EvalResult(status, '', 'sha', params=params, metrics=metrics)


def test_fitness_is_the_papers_product():
    # Figure 1's examples: error 0.09 with 6,000 params, 0.20 with 5,000.
    assert selection.fitness(result(6000, 0.91), alpha=0.5) == pytest.approx(-540)
    assert selection.fitness(result(5000, 0.80), alpha=0.5) == pytest.approx(-1000)


def test_fitness_filters_by_alpha_and_status():
    assert selection.fitness(result(10, 0.4), alpha=0.5) is None  # error 0.6
    assert selection.fitness(result(10, 0.5), alpha=0.5) is None  # not below
    assert selection.fitness(result(10, 0.9, base.Status.NAN), alpha=0.5) is None
    assert selection.fitness(
        base.EvalResult(base.Status.OK, '', 'sha', params=10), alpha=0.5) is None


def test_get_top_breaks_ties_by_order_and_skips_unscored():
    f = [-5.0, None, -1.0, -3.0, -1.0, -2.0]
    assert selection.get_top(f, 3) == [2, 4, 5]
    assert selection.get_top(f, 10) == [2, 4, 5, 3, 0]  # Unscored left out.


def test_pareto_front():
    points = [(0.1, 5.0), (0.2, 3.0), (0.15, 6.0), (0.3, 3.0), (0.05, 7.0),
              (0.1, 5.0)]
    assert selection.pareto_front(points) == [4, 0, 1]


def test_hypervolume():
    ref = (1.0, 10.0)
    assert selection.hypervolume([], ref) == 0.0
    assert selection.hypervolume([(0.5, 5.0)], ref) == pytest.approx(2.5)
    # Two steps: (1-0.2)*(10-6) + (1-0.5)*(6-2).
    assert selection.hypervolume([(0.2, 6.0), (0.5, 2.0), (0.6, 7.0)],
                                 ref) == pytest.approx(3.2 + 2.0)
    assert selection.hypervolume([(1.5, 1.0)], ref) == 0.0  # Outside the box.


def test_error_size_points_skip_failures():
    points = selection.error_size_points([
        result(1000, 0.9, test_acc=0.8), result(10, 0.9, base.Status.NAN),
        result(100, 0.9)])
    assert points == [(pytest.approx(0.2), 3.0)]
