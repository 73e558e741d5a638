"""The judge: the trusted side of an evaluation, which alone holds the labels.

A sandbox worker (`evoprompting.sandbox.runner`) trains a program and reports
predictions (`base.ReportValidation`, `base.Trained`); a `Judge` in the
parent process scores them with the task's `score_predictions` and gives the
EvalResult. Nothing a worker says is taken on trust: evidence that does not
fit the data is a ValueError, which the pool turns into a `crash`.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from evoprompting.tasks import base
from evoprompting.tasks.base import EvalResult, Status, Trained

# score_predictions(split, predictions) -> the objective's score on 'val' or
# 'test' (`Task.score_predictions`).
ScorePredictions = Callable[[str, Mapping[str, np.ndarray]], float]


class Judge:
    """The trusted side of an evaluation: it alone holds the labels.

    `judge(step, predictions)` scores validation predictions as they arrive
    and says whether they are the first best so far, i.e. which parameters
    the worker keeps; `verdict` scores the test predictions of the kept
    point and gives the EvalResult (without `source_sha256`). Both raise
    ValueError for evidence that does not fit (a malformed or forged reply).
    """

    def __init__(self, score_predictions: ScorePredictions,
                 objectives: Sequence[str], max_params: int,
                 steps: Sequence[int]):
        """`steps`: the evaluation points of the training schedule; reports
        at other steps are refused, so a worker gets at most one answer per
        point (no label oracle)."""
        self.score_predictions = score_predictions
        self.objectives = tuple(objectives)
        self.max_params = max_params
        self.steps = frozenset(steps)
        self.best_score = -math.inf
        self.best_step: int | None = None
        self.last_step = -math.inf

    def __call__(self, step: int, predictions: Mapping[str, np.ndarray]) -> bool:
        if step not in self.steps:
            raise ValueError(f'step {step} is not an evaluation point')
        if not step > self.last_step:
            raise ValueError(f'evaluation steps must increase: {step} after '
                             f'{self.last_step}')
        self.last_step = step
        score = float(self.score_predictions('val', predictions))
        if not math.isfinite(score):
            raise ValueError(f'non-finite validation score {score}')
        if score > self.best_score:
            self.best_score, self.best_step = score, step
            return True
        return False

    def _size(self, params: int) -> EvalResult | None:
        """The verdict of a model of `params` parameters that is too large,
        else None. ValueError for none (zero-size arrays, or forged)."""
        if params <= 0:
            raise ValueError(f'a model with {params} parameters')
        if params > self.max_params:  # The worker should have refused.
            return EvalResult(
                Status.TOO_LARGE, f'{params:,} parameters exceed the cap of '
                f'{self.max_params:,}', '', params=params)
        return None

    def built_verdict(self, param_shapes: Sequence[Sequence[int]]) -> EvalResult:
        """The verdict on a build-only request: `ok` with the exact
        parameter count, or `too_large`; no metrics. ValueError for shapes
        that are not shapes."""
        params = base.num_params(base.param_shapes_from_json(param_shapes))
        return self._size(params) or EvalResult(
            Status.OK, f'builds: {params:,} parameters', '', params=params)

    def verdict(self, trained: Trained) -> EvalResult:
        params = trained.params
        if too_large := self._size(params):
            return too_large
        if self.best_step is None or trained.best_step != self.best_step:
            raise ValueError(f'test predictions for step {trained.best_step}, '
                             f'but the best validation step is {self.best_step}')
        test = float(self.score_predictions('test', trained.test_predictions))
        if not math.isfinite(test):
            raise ValueError(f'non-finite test score {test}')
        val_name, test_name = self.objectives
        metrics = {val_name: self.best_score, test_name: test,
                   'best_step': self.best_step}
        if math.isfinite(trained.final_train_loss):  # Records are strict JSON.
            metrics['final_train_loss'] = trained.final_train_loss
        return EvalResult(
            status=Status.OK,
            message=(f'best {val_name} {self.best_score:.4f} at step '
                     f'{self.best_step} ({test_name} {test:.4f})'),
            source_sha256='', params=params, metrics=metrics,
            compile_s=trained.compile_s, train_s=trained.train_s)


def judge_for(task: base.Task) -> Judge:
    """A fresh judge of one program of `task`."""
    return Judge(task.score_predictions, task.objectives, task.max_params,
                 task.evaluation_steps)
