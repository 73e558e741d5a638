"""lm.model and lm.partitioning: shapes, axis names, sharding, cache == full pass."""

import functools
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import model as model_lib
from lm import partitioning
from lm import testing

VARIANTS = {
    'gqa_bias_tied': testing.tiny_config(),
    'mha_untied': testing.tiny_config(num_kv_heads=4, qkv_bias=False,
                                      tie_embeddings=False),
    'mqa_bias_untied': testing.tiny_config(num_kv_heads=1, tie_embeddings=False),
}


@functools.lru_cache(maxsize=None)
def _params(config):
    return testing.random_params(config, seed=0)


@functools.lru_cache(maxsize=None)
def _forward(config):
    """Jitted full forward pass (eager flax is slow on CPU)."""
    return jax.jit(lambda params, tokens, **kw: model_lib.Transformer(config).apply(
        {'params': params}, tokens, **kw), compiler_options=testing.FAST_COMPILE)


@functools.lru_cache(maxsize=None)
def _decode(config):
    """Jitted cached decode."""
    return jax.jit(
        lambda params, tokens, **kw: model_lib.Transformer(config).apply(
            {'params': params}, tokens, method=model_lib.Transformer.decode, **kw),
        static_argnames=('last_only', 'prefill'),
        compiler_options=testing.FAST_COMPILE)


def _left_padded(rng, vocab_size, lengths, width):
    """Random prompts, left-padded with id 0; returns (tokens, segment_ids)."""
    tokens = np.zeros((len(lengths), width), np.int32)
    segment_ids = np.zeros((len(lengths), width), np.int32)
    for row, length in enumerate(lengths):
        tokens[row, width - length:] = rng.integers(2, vocab_size, length)
        segment_ids[row, width - length:] = 1
    return tokens, segment_ids


def _normal(seed, shape):
    # numpy, not jax.random: eager threefry compiles for a second on CPU.
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- Full-size shapes, no allocation. ---------------------------------------

def test_qwen2_0_5b_shapes_by_eval_shape():
    config = testing.qwen2_0_5b_config()
    abstract = model_lib.abstract_params(config)
    assert partitioning.count_params(abstract) == 494_032_768  # As Hugging Face.
    assert abstract['layers']['attn']['k_kernel'].value.shape == (24, 896, 2, 64)
    assert 'lm_head' not in abstract
    tokens = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    logits = jax.eval_shape(
        lambda p, t: model_lib.Transformer(config).apply({'params': p}, t),
        partitioning.strip_boxes(abstract), tokens)
    assert (logits.shape, logits.dtype) == ((2, 16, 151_936), jnp.float32)


def test_every_parameter_has_logical_axes():
    rule_names = {name for name, _ in partitioning.standard_logical_axis_rules()}
    for config in VARIANTS.values():
        abstract = model_lib.abstract_params(config)
        boxes = jax.tree_util.tree_leaves(
            abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
        assert boxes and all(isinstance(b, nn.LogicallyPartitioned) for b in boxes)
        for box in boxes:
            assert len(box.names) == box.value.ndim
            assert set(box.names) <= rule_names
        untied = 'lm_head' in abstract
        assert untied == (not config.tie_embeddings)
        assert ('q_bias' in abstract['layers']['attn']) == config.qkv_bias


def test_bf16_config_keeps_float32_logits():
    config = testing.tiny_config(dtype=jnp.bfloat16)
    logits = _forward(config)(_params(config), np.ones((1, 4), np.int32))
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()


def test_config_validation():
    with pytest.raises(ValueError, match='must divide'):
        testing.tiny_config(num_kv_heads=3)
    with pytest.raises(ValueError, match='even'):
        testing.tiny_config(head_dim=7)


# -- Rotary convention. -----------------------------------------------------

def test_rope_is_hugging_face_rotate_half():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 2, 8)).astype(np.float32)
    positions = np.array([[0, 5, 11]])
    inv_freq = 1.0 / (10_000.0 ** (np.arange(0, 8, 2) / 8))
    angles = np.concatenate([positions[..., None] * inv_freq] * 2, -1)[:, :, None]
    rotate_half = np.concatenate([-x[..., 4:], x[..., :4]], -1)
    expected = x * np.cos(angles) + rotate_half * np.sin(angles)
    got = model_lib.apply_rope(jnp.asarray(x), jnp.asarray(positions), 10_000.0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


# -- Masking invariants. ----------------------------------------------------

def test_left_padding_does_not_change_logits():
    config = VARIANTS['gqa_bias_tied']
    forward, params = _forward(config), _params(config)
    tokens, segment_ids = _left_padded(np.random.default_rng(1), config.vocab_size,
                                       [4, 7], width=7)
    batched = forward(params, tokens, segment_ids=segment_ids)
    alone = forward(params, tokens[:1, 3:])
    np.testing.assert_allclose(batched[0, 3:], alone[0], atol=1e-5)


def test_packed_segments_equal_separate_rows():
    config = VARIANTS['gqa_bias_tied']
    forward, params = _forward(config), _params(config)
    rows = np.array([[5, 6, 7], [8, 9, 10]])
    packed = forward(params, rows.reshape(1, 6),
                     segment_ids=np.array([[1, 1, 1, 2, 2, 2]]),
                     positions=np.array([[0, 1, 2, 0, 1, 2]]))
    np.testing.assert_allclose(packed.reshape(2, 3, -1), forward(params, rows),
                               atol=1e-5)


def test_prefix_changes_logits_but_not_their_shape():
    config = VARIANTS['gqa_bias_tied']
    forward, params = _forward(config), _params(config)
    tokens = np.array([[5, 6, 7], [8, 9, 10]])
    plain = forward(params, tokens)
    prefix = _normal(3, (2, config.embed_dim))
    prefixed = forward(params, tokens, prefix_embeddings=prefix)
    assert prefixed.shape == plain.shape
    assert np.abs(prefixed - plain).max() > 1e-3
    with pytest.raises(ValueError, match='prefix_embeddings'):
        forward(params, tokens, prefix_embeddings=np.zeros((3, 2, config.embed_dim)))


# -- Cached decoding equals the full forward pass (t5x models_test). ---------

@pytest.mark.parametrize('variant, prefix_length', [
    ('gqa_bias_tied', 3), ('mha_untied', 0), ('mqa_bias_untied', 2)])
def test_cached_decoding_equals_full_forward(variant, prefix_length):
    """Prefill 5 columns, then 4 single steps, on left-padded rows."""
    config = VARIANTS[variant]
    forward, decode, params = _forward(config), _decode(config), _params(config)
    width, prefill = 9, 5
    tokens, segment_ids = _left_padded(np.random.default_rng(2), config.vocab_size,
                                       [6, 9, 2], width)
    prefix = None
    if prefix_length:
        prefix = _normal(4, (1, prefix_length, config.embed_dim))
    positions = np.asarray(
        model_lib.default_positions(segment_ids, offset=prefix_length))
    full = forward(params, tokens, segment_ids=segment_ids, positions=positions,
                   prefix_embeddings=prefix)

    cache = model_lib.init_cache(config, 3, prefix_length + width + 2)
    logits, cache = decode(params, tokens[:, :prefill],
                           positions=positions[:, :prefill],
                           segment_ids=segment_ids[:, :prefill], cache=cache,
                           prefix_embeddings=prefix)
    chunks = [logits]
    for col in range(prefill, width):
        logits, cache = decode(params, tokens[:, col:col + 1],
                               positions=positions[:, col:col + 1],
                               segment_ids=segment_ids[:, col:col + 1], cache=cache)
        chunks.append(logits)
    cached = np.concatenate(chunks, axis=1)
    assert int(cache.index) == prefix_length + width
    real = np.asarray(segment_ids, bool)
    np.testing.assert_allclose(cached[real], np.asarray(full)[real],
                               atol=1e-5, rtol=0)

    if variant == 'gqa_bias_tied':
        # The sampler's prefill: last column only, attending within the chunk
        # (prefill=True) or over every slot of the cache: the same logits and
        # the same cache.
        caches = []
        for within_chunk in (False, True):
            last, filled = decode(
                params, tokens, positions=positions, segment_ids=segment_ids,
                cache=model_lib.init_cache(config, 3, prefix_length + width + 4),
                prefix_embeddings=prefix, last_only=True, prefill=within_chunk)
            np.testing.assert_allclose(last[:, 0], full[:, -1], atol=1e-5, rtol=0)
            caches.append(filled)
        for a, b in zip(jax.tree.leaves(caches[0]), jax.tree.leaves(caches[1])):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_causal_blocks_equal_one_product():
    """Within a chunk, attention by query blocks (upper triangle skipped)
    equals the full masked product, values and gradients, for a length that
    is not a multiple of the block, with padding, a prefix and two packed
    segments."""
    # pylint: disable=protected-access
    full, blocked = model_lib._attend, model_lib._attend_causal_blocks
    length = 2 * model_lib._QUERY_BLOCK + 22
    rng = np.random.default_rng(0)
    segment_ids = np.ones((2, length), np.int32)
    segment_ids[0, :5] = model_lib.PREFIX_SEGMENT
    segment_ids[0, 70:] = 2
    segment_ids[1, :40] = model_lib.PAD_SEGMENT
    slots = jnp.arange(length)
    bias = model_lib.attention_bias(
        model_lib.attention_mask(segment_ids, segment_ids, slots, slots))
    q = _normal(1, (2, 2, 2, length, 8))  # [B, K, G, L, D]
    k = _normal(2, (2, 2, 8, length))
    v = _normal(3, (2, 2, length, 8))
    # Padding queries see no key; their outputs are unused (and differ: the
    # mean of all values in reach), so they carry no gradient and are not
    # compared.
    real = (segment_ids != model_lib.PAD_SEGMENT)[:, None, None, :, None]
    cotangent = jnp.asarray(rng.normal(size=q.shape) * real, jnp.float32)

    def loss(attend, q, k, v):
        return jnp.sum(attend(q, k, v, bias) * cotangent)

    out = blocked(q, k, v, bias)
    assert out.shape == q.shape
    np.testing.assert_allclose(out * real, full(q, k, v, bias) * real,
                               atol=1e-5, rtol=0)
    grads = [jax.grad(functools.partial(loss, attend), argnums=(0, 1, 2))(q, k, v)
             for attend in (full, blocked)]
    for want, got in zip(*grads):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


# -- Partitioning. ----------------------------------------------------------

def test_sharded_init_on_one_device_mesh():
    config = VARIANTS['gqa_bias_tied']
    mesh = partitioning.make_mesh(1)
    rules = partitioning.standard_logical_axis_rules()
    init = functools.partial(model_lib.init_params, config)
    params = partitioning.create_sharded(init, jax.random.key(0), mesh=mesh,
                                         rules=rules,
                                         compiler_options=testing.FAST_COMPILE)
    for leaf in jax.tree_util.tree_leaves(params):
        assert isinstance(leaf.sharding, jax.sharding.NamedSharding)
        assert leaf.sharding.mesh.axis_names == ('data', 'model')
    assert tuple(params['embedding'].sharding.spec) == ('model', None)
    assert partitioning.count_params(params) == partitioning.count_params(
        model_lib.abstract_params(config))
    # The initialiser's scale: 0.02 normal matrices, unit norm scales.
    assert 0.015 < float(jnp.std(params['embedding'])) < 0.025
    np.testing.assert_array_equal(params['final_norm']['scale'], 1.0)
    # (Sharded forward passes and sampling: the four-device test below.)


def test_make_mesh_errors():
    with pytest.raises(ValueError, match='must divide'):
        partitioning.make_mesh(1, model_parallelism=2)
    with pytest.raises(ValueError, match='available'):
        partitioning.make_mesh(len(jax.devices()) + 1)


def test_additional_rules_take_precedence():
    rules = partitioning.standard_logical_axis_rules([('embed', 'model'),
                                                      ('prompt', None)])
    assert rules[:2] == (('embed', 'model'), ('prompt', None))
    assert ('embed', None) in rules


_FOUR_DEVICES = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np
    from lm import model as model_lib, partitioning, sampler, testing
    assert len(jax.devices()) == 4, jax.devices()
    config = testing.tiny_config(tie_embeddings=False)
    mesh = partitioning.make_mesh(4, model_parallelism=2)
    rules = partitioning.standard_logical_axis_rules()
    # (create_sharded is covered on one device; here the rule table's layout.)
    shardings = partitioning.logical_shardings(
        model_lib.abstract_params(config), mesh, rules)
    params = jax.device_put(testing.random_params(config, seed=0), shardings)
    assert tuple(params['embedding'].sharding.spec) == ('model', None)
    assert tuple(params['layers']['mlp']['up_kernel'].sharding.spec) == (
        None, None, 'model')
    assert len(params['lm_head'].addressable_shards) == 4
    model = model_lib.Transformer(config)
    reference = jax.device_get(params)
    tokens = jnp.arange(16, dtype=jnp.int32).reshape(4, 4) + 2
    forward = jax.jit(model.apply, compiler_options=testing.FAST_COMPILE)
    with partitioning.activate(mesh, rules):
        logits = forward({'params': params}, tokens)
    expected = forward({'params': reference}, np.asarray(tokens))
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    batch = sampler.pad_prompts([[5, 6], [7, 8, 9], [10], [11, 12]], pad_id=0,
                                buckets=(4,))
    cfg = sampler.SamplingConfig(max_new_tokens=3, eos_id=1, pad_id=0)
    with partitioning.activate(mesh, rules):
        out = sampler.sample(model, params, batch.tokens, batch.mask, config=cfg,
                             temperatures=np.zeros(4, np.float32),
                             rng=jax.random.key(0))
    # The first greedy token is the argmax after the (left-padded) prompt.
    first = forward({'params': reference}, batch.tokens,
                    segment_ids=batch.mask.astype(np.int32))[:, -1]
    np.testing.assert_array_equal(out.tokens[:, 0], np.argmax(first, -1))
    print('OK')
''')


def test_four_device_mesh_in_subprocess():
    """Model parallelism 2 x data parallelism 2 on forced host devices."""
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
               JAX_PLATFORMS='cpu')
    result = subprocess.run([sys.executable, '-c', _FOUR_DEVICES], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]
