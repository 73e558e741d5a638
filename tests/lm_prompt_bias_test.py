"""LanguageModel.prompt_token_bias: a copy prior over the prompt's tokens."""

import dataclasses

import jax

from lm import serving, testing
from lm import vocab as vocab_lib


def test_a_large_prompt_token_bias_only_copies_prompt_tokens():
    vocab = vocab_lib.train_byte_level_bpe(
        ['the quick brown fox jumps over the lazy dog 0123456789'] * 5,
        vocab_size=300)
    config = testing.tiny_config(vocab_size=300)
    plain = serving.LanguageModel.create(config, testing.random_params(config, 0),
                                         vocab, batch_size=2)
    copying = dataclasses.replace(plain, prompt_token_bias=1e4)
    prompt = 'fox 42'
    outputs = {}
    for name, lm in (('plain', plain), ('copying', copying)):
        texts = lm.generate([prompt], num_samples=2, max_new_tokens=12,
                            temperatures=[0.0, 1.0], rng=jax.random.key(0))[0]
        outputs[name] = texts
    for text in outputs['copying']:  # Only prompt tokens, so only its characters.
        assert text and set(text) <= set(prompt), text
    assert outputs['plain'] != outputs['copying']
