"""clrs_tasks.task: the Task protocol for CLRS-30."""

import numpy as np
import pytest

from clrs_tasks import data
from clrs_tasks import task as task_lib
from clrs_tasks import train
from evoprompting.sandbox import judge as judge_lib
from evoprompting.tasks import base


def _task(tmp_path):
    return task_lib.ClrsTask(
        data=data.DataConfig(algorithm='bfs', train_count=8, val_count=4,
                             test_count=4, test_size=8,
                             cache_dir=str(tmp_path)),
        train=train.TrainConfig(num_steps=2, eval_every=1, batch_size=4,
                                hidden_dim=8))


def test_spec_round_trip_and_protocol(tmp_path):
    task = _task(tmp_path)
    assert base.task_from_spec(base.task_to_spec(task)) == task
    assert [s.name for s in task.seed_programs()][0] == 'v1_standard'
    assert len(task.seed_programs()) == 9
    assert 'get_triplet_msgs(z, edge_fts, graph_fts' in task.contract
    assert task.objectives[0] == 'val_score'


def _namespace(task, source):
    namespace = {}
    exec(task.preamble + source, namespace)  # pylint: disable=exec-used
    return namespace


def _evaluate(task, source):
    """The worker's and the judge's halves in this (trusted) process."""
    task.prepare()
    judge = judge_lib.judge_for(task)
    trained = task.run_program(_namespace(task, source), 0,
                               task.worker_inputs(), judge)
    return judge.verdict(trained)


def test_workers_get_no_answers_and_need_none(tmp_path):
    task = _task(tmp_path)
    task.prepare()
    inputs = task.worker_inputs()
    train_pools, val, test = data.load_splits(task.data)
    for prefix, full in (('val/', val), ('test/', test)):
        seen = data.from_arrays(inputs, prefix)
        assert all(not v.any() for v in seen.outputs.values())
        assert all(not v[1:].any() for v in seen.hints.values())
        assert any(v.any() for v in full.outputs.values())
    assert data.from_arrays(inputs, 'train0/').outputs.keys() == (
        train_pools[0].outputs.keys())
    # The answers never change what the model predicts.
    fn = task.seed_programs()[0].source
    runs = []
    for splits in (train.Splits(train_pools, val, test),
                   train.Splits(train_pools, data.redacted(val),
                                data.redacted(test))):
        reports = []
        trained = train.train_and_predict(
            _namespace(task, fn)['get_triplet_msgs'], splits, task.train,
            lambda step, p: reports.append(p) or True, max_params=10**6,
            seed=0)
        runs.append((reports, trained.test_predictions))
    for (reports, test_preds), (redacted_reports, redacted_test) in [runs]:
        for a, b in zip(reports + [test_preds],
                        redacted_reports + [redacted_test]):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize('source,message', [
    ('x = 1\n', 'defines no `get_triplet_msgs`'),
    ('get_triplet_msgs = 3\n', 'must be a function'),
    ('def get_triplet_msgs(z, e, g, k, out):\n    return z @ z\n',
     'failed: TypeError'),
    ('def get_triplet_msgs(z, e, g, k, out):\n    return nn.Dense(out)(z)\n',
     'edge messages of shape'),
])
def test_broken_programs_are_build_errors(tmp_path, source, message):
    task = _task(tmp_path)
    task.prepare()
    for attempt in (lambda: _evaluate(task, source),
                    lambda: task.build_program(_namespace(task, source),
                                               task.worker_inputs())):
        with pytest.raises(base.ProgramFailure, match=message) as info:
            attempt()
        assert info.value.status == base.Status.BUILD_ERROR


def test_a_build_counts_what_training_trains(tmp_path):
    task = _task(tmp_path)
    task.prepare()
    for seed in task.seed_programs()[:2]:
        shapes = task.build_program(_namespace(task, seed.source),
                                    task.worker_inputs())
        params = sum(int(np.prod(s)) for s in shapes)
        assert params == _evaluate(task, seed.source).params, seed.name


def test_too_large_before_training(tmp_path):
    task = _task(tmp_path)
    task = task_lib.ClrsTask(data=task.data, train=task.train, max_params=10)
    task.prepare()
    source = task.seed_programs()[0].source
    for attempt in (lambda: _evaluate(task, source),
                    lambda: task.build_program(_namespace(task, source),
                                               task.worker_inputs())):
        with pytest.raises(base.ProgramFailure, match='exceed the cap') as info:
            attempt()
        assert info.value.status == base.Status.TOO_LARGE


# Finite on training batches (4 graphs), non-finite on evaluation batches
# (eval_batch_size 32 graphs), of every size or only of the test size (8
# nodes; validation graphs have 16).
_NAN_AT_EVALUATION = '''
def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    msgs = nn.Dense(out_size)(edge_fts)
    if z.shape[0] == 4 or z.shape[1] not in {sizes}:
        return msgs
    return msgs / 0.0
'''


@pytest.mark.parametrize('sizes, message', [
    ((8, 16), r'^non-finite output predictions at step 1 on the validation '
     r'inputs$'),
    # The test split is scored with the parameters of the best step.
    ((8,), r'^non-finite output predictions at step [12] on the test inputs$'),
])
def test_non_finite_predictions_at_evaluation_are_nan(tmp_path, sizes,
                                                      message):
    """The training loss stays finite; argmax would still score the NaN."""
    task = _task(tmp_path)
    source = _NAN_AT_EVALUATION.format(sizes=set(sizes))
    with pytest.raises(base.ProgramFailure, match=message) as info:
        _evaluate(task, source)
    assert info.value.status == base.Status.NAN
