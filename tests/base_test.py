"""EvalResult and task specs survive their JSON boundaries."""

import json

import pytest

from evoprompting.tasks import base, mnist1d


def test_eval_result_round_trips_through_json():
    result = base.EvalResult(
        base.Status.OK, 'fine', base.source_sha256('x = 1'), params=12,
        metrics={'val_accuracy': 0.5, 'best_step': 8}, compile_s=1.5,
        train_s=2.0, output='hi')
    text = base.dumps(result.to_json())
    assert base.EvalResult.from_json(json.loads(text)) == result
    assert json.loads(text)['status'] == 'ok'


def test_eval_result_rejects_unknown_fields_and_statuses():
    good = base.EvalResult(base.Status.CRASH, 'x', 'abc').to_json()
    with pytest.raises(ValueError, match='unknown EvalResult fields'):
        base.EvalResult.from_json({**good, 'surprise': 1})
    with pytest.raises(ValueError):
        base.EvalResult.from_json({**good, 'status': 'fine'})


def test_task_spec_round_trip():
    task = mnist1d.Mnist1dTask(
        data=mnist1d.DataConfig(cache_dir='/tmp/x', validation_seed=3),
        train=mnist1d.TrainConfig(num_steps=400, eval_every=100),
        max_params=1234)
    spec = json.loads(base.dumps(base.task_to_spec(task)))
    assert base.task_from_spec(spec) == task


def test_task_spec_refuses_foreign_classes():
    with pytest.raises(ValueError, match='refusing'):
        base.task_from_spec({'class': 'os:system', 'fields': {}})
