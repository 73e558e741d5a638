"""The trainers' shared helpers: batch orders and parameter counts."""

import numpy as np
import pytest

from evoprompting.tasks import training


def test_batch_order_is_epoch_wise_and_seeded():
    order = training.batch_order(10, 3, 7, seed=0)
    assert order.shape == (7, 3) and order.dtype == np.int32
    epoch = order[:3].ravel()  # 3 batches of 3 = one epoch (one example dropped).
    assert len(set(epoch)) == 9
    np.testing.assert_array_equal(order,
                                  training.batch_order(10, 3, 7, 0))
    assert not np.array_equal(order, training.batch_order(10, 3, 7, 1))
    with pytest.raises(ValueError):
        training.batch_order(2, 3, 1, 0)


def test_count_params_counts_only_params_collection():
    variables = {'params': {'a': np.zeros((3, 4)), 'b': np.zeros(5)},
                 'batch_stats': {'m': np.zeros(100)}}
    assert training.count_params(variables) == 17


def test_complex_parameters_count_both_parts():
    # A complex parameter holds two real numbers: counted once, a program
    # could halve its reported size.
    variables = {'params': {'w': np.zeros((3, 4), np.complex64),
                            'b': np.zeros(5, np.float32)}}
    assert training.param_shapes(variables) == ((5,), (3, 4, 2))
    assert training.count_params(variables) == 29
