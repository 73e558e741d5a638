"""orbax checkpoints: round trip, placement, structure checks, safe overwrite."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import checkpoints


def tree():
    return {'embed': jnp.arange(12, dtype=jnp.float32).reshape(3, 4),
            'layers': {'w': jnp.ones((4, 2), jnp.bfloat16)}}


def abstract(t):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), t)


def test_round_trip_is_exact(tmp_path):
    path = str(tmp_path / 'ckpt')
    checkpoints.save(path, tree())
    restored = checkpoints.restore(path, abstract(tree()))
    for a, b in zip(jax.tree.leaves(tree()), jax.tree.leaves(restored)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float32),
                                      np.asarray(b, np.float32))


def test_mismatched_trees_are_refused(tmp_path):
    path = str(tmp_path / 'ckpt')
    checkpoints.save(path, tree())
    wrong_shape = tree()
    wrong_shape['embed'] = jnp.zeros((3, 5))
    with pytest.raises(ValueError, match=r"\['embed'\] has shape \(3, 4\)"):
        checkpoints.restore(path, abstract(wrong_shape))
    missing = {'embed': tree()['embed']}
    with pytest.raises(ValueError, match='unexpected'):
        checkpoints.restore(path, abstract(missing))
    with pytest.raises(FileNotFoundError):
        checkpoints.restore(str(tmp_path / 'none'))


def test_overwrite_is_explicit_and_swaps(tmp_path):
    path = str(tmp_path / 'ckpt')
    checkpoints.save(path, tree())
    with pytest.raises(FileExistsError):
        checkpoints.save(path, tree())
    newer = jax.tree.map(lambda x: x + 1, tree())
    checkpoints.save(path, newer, overwrite=True)
    restored = checkpoints.restore(path, abstract(tree()))
    assert float(restored['embed'][0, 0]) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt']
