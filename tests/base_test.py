"""EvalResult and task specs survive their JSON boundaries."""

import base64
import io
import json
import zipfile

import numpy as np
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


def _zip(members, compression=zipfile.ZIP_STORED) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return base64.b64encode(buffer.getvalue()).decode('ascii')


def _npy(array, claimed_shape=None) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    data = buffer.getvalue()
    if claimed_shape is not None:
        header = repr(array.shape).encode()
        data = data.replace(header, repr(claimed_shape).encode().ljust(
            len(header)), 1)
    return data


def test_arrays_round_trip_through_json():
    arrays = {'class': np.arange(7, dtype=np.int8),
              'logits': np.ones((2, 3), np.float32).T}
    back = base.arrays_from_json(base.arrays_to_json(arrays))
    assert sorted(back) == ['class', 'logits']
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].dtype == array.dtype


@pytest.mark.parametrize('text, words', [
    # 64 MB of zeros deflated to ~64 KB: never inflated.
    (_zip({'class.npy': _npy(np.zeros(64 << 20, np.int8))},
          zipfile.ZIP_DEFLATED), 'compressed'),
    # A header that claims 10^12 elements over 3 bytes: never allocated.
    (_zip({'class.npy': _npy(np.zeros(3, np.int8), (10**12,))}), 'not fit'),
    (_zip({'class.npy': _npy(np.zeros(3, np.complex64))}), 'not numbers'),
    (_zip({'class.npy': _npy(np.array(['a'], object))}), 'not numbers'),
    (_zip({'class.npy': b'not an npy file'}), 'malformed'),
    ('not base64 !', 'malformed'),
    (base64.b64encode(b'PK not a zip').decode(), 'malformed'),
])
def test_arrays_from_json_refuses_what_would_inflate_or_mislead(text, words):
    with pytest.raises(ValueError, match=words):
        base.arrays_from_json(text)
