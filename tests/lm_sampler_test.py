"""lm.sampler: padding invariance, determinism, temperatures, EOS, no recompiles."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import model as model_lib
from lm import sampler
from lm import testing

CONFIG = testing.tiny_config(tie_embeddings=False)  # Untied: varied greedy text.
MODEL = model_lib.Transformer(CONFIG)
GREEDY = sampler.SamplingConfig(max_new_tokens=8, eos_id=1, pad_id=0)
BUCKETS = (8, 16)
PROMPTS = [[5, 6, 7], list(range(30, 40)), [20, 21, 22, 23, 24]]


@pytest.fixture(scope='module')
def params():
    return testing.random_params(CONFIG, seed=0)


def _sample(params, prompts, temperatures, seed=0, config=GREEDY, soft_prompt=None):
    batch = sampler.pad_prompts(prompts, pad_id=config.pad_id, buckets=BUCKETS)
    return sampler.sample(MODEL, params, batch.tokens, batch.mask, config=config,
                          temperatures=np.asarray(temperatures, np.float32),
                          rng=jax.random.key(seed), soft_prompt=soft_prompt)


def _soft_prompt(seed, length=4):
    return np.random.default_rng(seed).standard_normal(
        (length, CONFIG.embed_dim)).astype(np.float32)


def _reference_greedy(params, prompts, soft_prompt, num_tokens):
    """Greedy decoding by repeated full forward passes: no cache, no sampler."""
    batch = sampler.pad_prompts(prompts, pad_id=0, buckets=BUCKETS)
    width = batch.tokens.shape[1]
    tokens = np.concatenate(
        [batch.tokens, np.zeros((len(prompts), num_tokens), np.int32)], 1)
    segment_ids = np.concatenate(
        [batch.mask, np.zeros((len(prompts), num_tokens), bool)], 1).astype(np.int32)
    forward = jax.jit(lambda t, s: MODEL.apply({'params': params}, t, segment_ids=s,
                                               prefix_embeddings=soft_prompt),
                      compiler_options=testing.FAST_COMPILE)
    for step in range(num_tokens):
        logits = np.asarray(forward(tokens, segment_ids))
        tokens[:, width + step] = logits[:, width + step - 1].argmax(-1)
        segment_ids[:, width + step] = 1
    return tokens[:, width:]


def _expected_after_eos(greedy_tokens, eos_id, pad_id):
    """Rows cut at their first EOS (EOS kept, then padding); lengths; finished."""
    tokens = greedy_tokens.copy()
    lengths, finished = [], []
    for row in tokens:
        hits = np.flatnonzero(row == eos_id)
        if hits.size:
            row[hits[0] + 1:] = pad_id
        lengths.append(hits[0] if hits.size else len(row))
        finished.append(bool(hits.size))
    return tokens, np.array(lengths), np.array(finished)


# -- Host-side padding and stop strings. --------------------------------------

def test_pad_prompts_left_pads_into_smallest_bucket():
    batch = sampler.pad_prompts([[5, 6, 7], [8]], pad_id=0, buckets=(2, 4, 8))
    np.testing.assert_array_equal(batch.tokens, [[0, 5, 6, 7], [0, 0, 0, 8]])
    np.testing.assert_array_equal(batch.mask, [[0, 1, 1, 1], [0, 0, 0, 1]])
    assert batch.tokens.dtype == np.int32 and batch.mask.dtype == bool


def test_bucket_rule_caps_at_the_room_in_the_cache():
    assert sampler.bucket_length(5, buckets=(4, 8, 16)) == 8
    assert sampler.bucket_length(9, buckets=(4, 8, 16), max_length=12) == 12
    assert sampler.bucket_length(3, buckets=(4, 8, 16), max_length=12) == 4
    room = sampler.max_prompt_length(CONFIG, GREEDY, prefix_length=4)
    assert room == CONFIG.max_len - 4 - GREEDY.max_new_tokens
    with pytest.raises(ValueError, match='longer than'):
        sampler.pad_prompts([[1] * 13], pad_id=0, buckets=(8,), max_length=12)
    with pytest.raises(ValueError, match='longer than'):
        sampler.bucket_length(17, buckets=(8, 16))


def test_bad_prompts_are_clear_errors():
    with pytest.raises(ValueError, match='no prompts'):
        sampler.pad_prompts([], pad_id=0)
    with pytest.raises(ValueError, match='prompt 1 is empty'):
        sampler.pad_prompts([[3], []], pad_id=0)


def test_cache_longer_than_max_len_is_an_error(params):
    batch = sampler.pad_prompts([[5, 6]], pad_id=0, buckets=(CONFIG.max_len,))
    with pytest.raises(ValueError, match='exceeds max_len'):
        sampler.sample(MODEL, params, batch.tokens, batch.mask, config=GREEDY,
                       temperatures=np.zeros(1, np.float32), rng=jax.random.key(0))


def test_truncate_at_stop_strings():
    text = 'x = 1\n\nclass B:\n    pass\n"""next'
    assert sampler.truncate_at_stop_strings(text, ['"""', '\n\n']) == 'x = 1'
    assert sampler.truncate_at_stop_strings(text, ['zzz', '']) == text


def test_sampling_config_validation():
    with pytest.raises(ValueError, match='top_p'):
        sampler.SamplingConfig(max_new_tokens=4, eos_id=1, pad_id=0, top_p=0.0)
    with pytest.raises(ValueError, match='max_new_tokens'):
        sampler.SamplingConfig(max_new_tokens=0, eos_id=1, pad_id=0)
    with pytest.raises(ValueError, match='copy_weight'):
        sampler.SamplingConfig(max_new_tokens=4, eos_id=1, pad_id=0,
                               copy_weight=1.5)
    with pytest.raises(ValueError, match='copy_min_match'):
        sampler.SamplingConfig(max_new_tokens=4, eos_id=1, pad_id=0,
                               copy_weight=0.5, copy_min_match=0)
    with pytest.raises(ValueError, match='copy_half_life'):
        sampler.SamplingConfig(max_new_tokens=4, eos_id=1, pad_id=0,
                               copy_weight=0.5, copy_half_life=-1)


# -- Token choice. ------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=('top_k', 'top_p'),
                   compiler_options=testing.FAST_COMPILE)
def _choose(logits, rng, temperatures, top_k=0, top_p=1.0):
    return sampler.sample_from_logits(logits, rng, temperatures, top_k=top_k,
                                      top_p=top_p)


def test_sample_from_logits_filters_and_temperatures():
    probs = np.array([0.4, 0.3, 0.2, 0.1], np.float32)
    rows = 2000
    logits = np.tile(np.log(probs), (rows, 1))
    hot = np.ones(rows, np.float32)
    key = jax.random.key(0)
    counts = np.bincount(np.asarray(_choose(logits, key, hot)), minlength=4)
    np.testing.assert_allclose(counts / rows, probs, atol=0.04)
    assert set(np.asarray(_choose(logits, key, hot, top_k=2)).tolist()) == {0, 1}
    assert set(np.asarray(_choose(logits, key, hot, top_p=0.5)).tolist()) == {0, 1}
    assert set(np.asarray(_choose(logits, key, hot, top_p=0.75)).tolist()) == {0, 1, 2}
    # Temperature 0 rows are greedy, whatever the others do.
    mixed = np.where(np.arange(rows) % 2 == 0, 0.0, 1.0).astype(np.float32)
    chosen = np.asarray(_choose(logits, key, mixed))
    assert (chosen[::2] == 0).all() and len(set(chosen[1::2].tolist())) == 4


def test_first_argmax_is_argmax():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 5, (64, 33)).astype(np.float32)  # Many ties.
    rows[::3, ::2] = -np.inf  # Filtered entries.
    np.testing.assert_array_equal(sampler.first_argmax(jnp.asarray(rows)),
                                  np.argmax(rows, axis=-1))


# -- The jitted sampler. ------------------------------------------------------

def test_greedy_is_the_same_alone_and_in_a_padded_batch(params):
    together = _sample(params, PROMPTS, [0, 0, 0])
    assert together.tokens.shape == (3, GREEDY.max_new_tokens)
    for row in (0, 2):  # Alone they pad to bucket 8, together to 16.
        alone = _sample(params, [PROMPTS[row]], [0])
        np.testing.assert_array_equal(alone.tokens[0], together.tokens[row])
        assert alone.lengths[0] == together.lengths[row]


def test_a_new_prompt_in_the_same_bucket_does_not_recompile(params):
    _sample(params, [PROMPTS[0]], [0])
    compiled = sampler.sample._cache_size()
    other = _sample(params, [PROMPTS[2]], [0.8], seed=5)  # Same bucket (8).
    assert sampler.sample._cache_size() == compiled
    assert other.tokens.shape == (1, GREEDY.max_new_tokens)


def test_same_key_same_samples_other_key_other_samples(params):
    hot = [1.0, 1.0, 1.0]
    first = _sample(params, PROMPTS, hot, seed=1)
    again = _sample(params, PROMPTS, hot, seed=1)
    other = _sample(params, PROMPTS, hot, seed=2)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    assert (np.asarray(first.tokens) != np.asarray(other.tokens)).any()


def test_per_row_temperature(params):
    greedy = _sample(params, PROMPTS, [0, 0, 0])
    mixed = _sample(params, PROMPTS, [0.0, 1.0, 0.0], seed=3)
    np.testing.assert_array_equal(mixed.tokens[0], greedy.tokens[0])
    np.testing.assert_array_equal(mixed.tokens[2], greedy.tokens[2])
    assert (np.asarray(mixed.tokens[1]) != np.asarray(greedy.tokens[1])).any()


def test_eos_stops_a_row_and_pads_after_it(params):
    # Sample until some row emits EOS (id 1) after its first token; the search
    # is deterministic and reuses one compiled program.
    for seed in range(100):
        out = _sample(params, PROMPTS, [1.0, 1.0, 1.0], seed=seed)
        tokens, lengths, finished = (np.asarray(x) for x in
                                     (out.tokens, out.lengths, out.finished))
        if (finished & (lengths > 0)).any():
            break
    assert (finished & (lengths > 0)).any()
    for row in range(len(PROMPTS)):
        if finished[row]:
            k = lengths[row]
            assert tokens[row, k] == GREEDY.eos_id
            assert GREEDY.eos_id not in tokens[row, :k]
            assert (tokens[row, k + 1:] == GREEDY.pad_id).all()
        else:
            assert lengths[row] == GREEDY.max_new_tokens
            assert GREEDY.eos_id not in tokens[row]


def test_soft_prompt_changes_output_and_a_new_value_does_not_recompile(params):
    plain = _sample(params, PROMPTS, [0, 0, 0])
    tuned = _sample(params, PROMPTS, [0, 0, 0], soft_prompt=_soft_prompt(0))
    compiled = sampler.sample._cache_size()
    retuned = _sample(params, PROMPTS, [0, 0, 0], soft_prompt=_soft_prompt(1))
    assert sampler.sample._cache_size() == compiled
    assert (np.asarray(tuned.tokens) != np.asarray(plain.tokens)).any()
    assert (np.asarray(retuned.tokens) != np.asarray(tuned.tokens)).any()
    # Cached greedy decoding with a prefix equals uncached greedy decoding.
    reference = _reference_greedy(params, PROMPTS, _soft_prompt(0),
                                  GREEDY.max_new_tokens)
    expected, lengths, _ = _expected_after_eos(reference, GREEDY.eos_id, GREEDY.pad_id)
    np.testing.assert_array_equal(tuned.tokens, expected)
    np.testing.assert_array_equal(tuned.lengths, lengths)


# -- The copy prior (prompt lookup). ------------------------------------------

def test_copy_distribution_follows_the_longest_matches():
    # Left-padded row 0: "3 5 6 7 8 5 6 7 9 5 6"; the text ends in "9 5 6",
    # which matches "5 6" twice (never the prompt's own end), both followed by
    # 7; row 1 has only padding before "5 6" and no earlier match.
    prompts = [[3, 5, 6, 7, 8, 5, 6, 7, 9, 5, 6], [5, 6]]
    batch = sampler.pad_prompts(prompts, pad_id=0, buckets=(16,))
    tokens, mask = jnp.asarray(batch.tokens), jnp.asarray(batch.mask)
    matches = sampler.initial_matches(tokens, mask)
    assert int(matches[0].max()) == 2 and int(matches[1].max()) == 0
    log_probs = sampler.copy_distribution(matches, tokens, vocab_size=12,
                                          min_match=2)
    np.testing.assert_allclose(np.exp(log_probs[0]), np.eye(12)[7])
    assert np.isneginf(log_probs[1]).all()
    assert np.isneginf(sampler.copy_distribution(
        matches, tokens, vocab_size=12, min_match=3)).all()
    # Writing 7 then 9: only the second match goes on ("5 6 7 9", then 5).
    for token in (7, 9):
        matches = sampler.extend_matches(matches, tokens, mask,
                                         jnp.asarray([token, token]))
    assert int(matches[0].max()) == 4
    log_probs = sampler.copy_distribution(matches, tokens, vocab_size=12,
                                          min_match=2)
    np.testing.assert_allclose(np.exp(log_probs[0]), np.eye(12)[5])


def test_copy_half_life_favours_the_latest_match():
    # "5 6" ends at positions 2 (then 7) and 6 (then 9), 8 and 4 tokens before
    # the prompt's end: equal weights without a half-life, 1 : 2 ** (4 / 2)
    # with half-life 2, whatever the padding.
    prompt = [3, 5, 6, 7, 8, 5, 6, 9, 4, 5, 6]
    for bucket in (11, 16):
        batch = sampler.pad_prompts([prompt], pad_id=0, buckets=(bucket,))
        tokens, mask = jnp.asarray(batch.tokens), jnp.asarray(batch.mask)
        matches = sampler.initial_matches(tokens, mask)
        for half_life, expected in ((0, 0.5), (2, 0.8)):
            probs = np.exp(sampler.copy_distribution(
                matches, tokens, vocab_size=12, min_match=2,
                half_life=half_life)[0])
            np.testing.assert_allclose(probs[[7, 9]], [1 - expected, expected],
                                       rtol=1e-6)
            assert probs.sum() == pytest.approx(1.0)
    # A lone match far back still counts, however short the half-life.
    batch = sampler.pad_prompts([[3, 5, 6, 7] + [9] * 300 + [5, 6]], pad_id=0)
    tokens, mask = jnp.asarray(batch.tokens), jnp.asarray(batch.mask)
    probs = np.exp(sampler.copy_distribution(
        sampler.initial_matches(tokens, mask), tokens, vocab_size=12,
        min_match=2, half_life=1)[0])
    np.testing.assert_allclose(probs, np.eye(12)[7])


def _copy_config(weight, min_match=3, max_new_tokens=6):
    return sampler.SamplingConfig(max_new_tokens=max_new_tokens, eos_id=1,
                                  pad_id=0, copy_weight=weight,
                                  copy_min_match=min_match)


def test_full_copy_weight_continues_a_repeated_prompt(params):
    # "s s[:4]" with a random model: every step has a match of >= 4 tokens, so
    # copy_weight 1 writes the rest of s, greedy or sampled.
    s = [40, 17, 93, 8, 61, 25, 77, 12, 55, 31]
    out = _sample(params, [s + s[:4]], [0.0], config=_copy_config(1.0))
    np.testing.assert_array_equal(out.tokens[0], s[4:10])
    out = _sample(params, [s + s[:4]], [1.0], config=_copy_config(1.0), seed=4)
    np.testing.assert_array_equal(out.tokens[0], s[4:10])
    plain = _sample(params, [s + s[:4]], [0.0], config=_copy_config(0.0))
    assert (np.asarray(plain.tokens[0]) != s[4:10]).any()  # The model alone.


def test_copy_prior_without_a_long_enough_match_changes_nothing(params):
    plain = _sample(params, PROMPTS, [1.0, 0.0, 0.7], seed=6,
                    config=_copy_config(0.0, max_new_tokens=8))
    never = _sample(params, PROMPTS, [1.0, 0.0, 0.7], seed=6,
                    config=_copy_config(0.9, min_match=64, max_new_tokens=8))
    np.testing.assert_array_equal(plain.tokens, never.tokens)


def test_copy_prior_is_the_same_alone_and_in_a_padded_batch(params):
    prompts = [[9, 8, 7, 9, 8], [30, 31, 32, 33, 30, 31, 32, 33, 30, 31, 32]]
    config = _copy_config(0.5, min_match=2, max_new_tokens=8)
    together = _sample(params, prompts, [0.0, 0.0], config=config)
    alone = _sample(params, [prompts[0]], [0.0], config=config)  # Bucket 8.
    np.testing.assert_array_equal(alone.tokens[0], together.tokens[0])
