"""Soft-prompt tuning: only the prompt changes, and the target loss falls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import checkpoints, prompt_tuning, testing

CONFIG = testing.tiny_config()
PAD = 0


def toy_examples(n=24):
    rng = np.random.default_rng(0)
    return [prompt_tuning.Example(prompt=tuple(rng.integers(3, 100, 5)),
                                  target=(7, 8, 9, 7, 8, 9))
            for _ in range(n)]


def test_make_batch_weights_cover_targets_only():
    batch = prompt_tuning.make_batch(
        [prompt_tuning.Example((5, 6, 7), (8, 9))], batch_size=2,
        buckets=(4, 8), pad_id=PAD)
    assert batch['tokens'].shape == (2, 8)
    np.testing.assert_array_equal(batch['tokens'][0], [5, 6, 7, 8, 9, 0, 0, 0])
    # logits at t predict token t+1: positions 2 and 3 predict 8 and 9.
    np.testing.assert_array_equal(batch['weights'][0], [0, 0, 1, 1, 0, 0, 0, 0])
    assert batch['weights'][1].sum() == 0 and batch['segment_ids'][1].sum() == 0
    with pytest.raises(ValueError, match='largest bucket'):
        prompt_tuning.make_batch([prompt_tuning.Example((1,) * 9, (2,))], 1,
                                 (4, 8), PAD)


def test_initialisers():
    embedding = jnp.arange(40.0).reshape(10, 4)
    key = jax.random.key(0)
    assert prompt_tuning.init_uniform(key, 3, 4).shape == (3, 4)
    rows = prompt_tuning.init_from_vocab(key, embedding, 5)
    assert len({tuple(r) for r in np.asarray(rows)}) == 5
    text = prompt_tuning.init_from_text(embedding, [2, 3], 5)
    np.testing.assert_array_equal(text[:, 0], [8, 12, 8, 12, 8])


def test_tuning_changes_only_the_prompt_and_lowers_the_loss(tmp_path):
    params = testing.random_params(CONFIG, seed=0)
    before = jax.tree.map(np.array, params)
    prompt = prompt_tuning.init_uniform(jax.random.key(1), 4, CONFIG.embed_dim)
    prompt_before = np.array(prompt)
    config = prompt_tuning.TuningConfig(num_epochs=6, batch_size=8,
                                        learning_rate=0.1, buckets=(16,))
    tuned, metrics = prompt_tuning.tune(
        prompt, params, toy_examples(), model_config=CONFIG, config=config,
        pad_id=PAD, rng=jax.random.key(2))
    assert metrics['steps'] == 6 * 3
    assert metrics['epoch_loss'][-1] < 0.7 * metrics['epoch_loss'][0], metrics
    # The model is bitwise unchanged; the caller's prompt array too.
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, np.asarray(b))
    np.testing.assert_array_equal(prompt_before, np.asarray(prompt))
    assert not np.allclose(prompt_before, np.asarray(tuned))
    # The tuned prompt is a checkpoint like any other.
    with checkpoints.CheckpointManager(str(tmp_path / 'prompt')) as saved:
        saved.save(0, {'prompt': tuned})
        restored = saved.restore(0, {'prompt': jax.ShapeDtypeStruct(
            tuned.shape, tuned.dtype)})
    np.testing.assert_array_equal(np.asarray(restored['prompt']), np.asarray(tuned))


def test_tuning_is_deterministic_and_compiles_once_per_bucket():
    params = testing.random_params(CONFIG, seed=0)
    prompt = prompt_tuning.init_uniform(jax.random.key(1), 4, CONFIG.embed_dim)
    config = prompt_tuning.TuningConfig(num_epochs=1, batch_size=8, buckets=(16,))
    run = lambda: prompt_tuning.tune(prompt, params, toy_examples(20),
                                     model_config=CONFIG, config=config,
                                     pad_id=PAD, rng=jax.random.key(3))
    first, _ = run()
    compiled = prompt_tuning.train_step._cache_size()  # pylint: disable=protected-access
    again, _ = run()
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert prompt_tuning.train_step._cache_size() == compiled  # pylint: disable=protected-access
