"""Tiny public model configs for tests and CPU smoke runs (STYLE rule 11).

Every test of the model, the sampler, tuning and the search that needs a real
`lm.model.Transformer` builds one from here, so a change of architecture is
exercised everywhere at once. The models are randomly initialised and a few
tens of thousands of parameters: fast to compile and run on one CPU core;
`random_params` gives them weights without compiling an initialiser.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lm import model as model_lib
from lm import partitioning, serving
from lm import vocab as vocab_lib


# XLA options for jits that tests compile many times and run a few times. On
# the 2-core CPU the tiny model's forward pass compiles ~5x faster and its
# initialiser ~6x faster (measured); never for code whose run time matters.
FAST_COMPILE = {'xla_backend_optimization_level': 0,
                'xla_cpu_use_fusion_emitters': False}


def tiny_config(**overrides) -> model_lib.TransformerConfig:
    """A 2-layer GQA decoder (4 query heads, 2 KV heads, QKV bias, tied embeddings).

    Keyword arguments replace fields, e.g. `tiny_config(num_kv_heads=4,
    qkv_bias=False, tie_embeddings=False)` for the plain Llama variant.
    """
    config = model_lib.TransformerConfig(
        vocab_size=128,
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        mlp_dim=64,
        max_len=128,
        rope_theta=10_000.0,
        rms_norm_eps=1e-6,
        qkv_bias=True,
        tie_embeddings=True)
    return dataclasses.replace(config, **overrides)


def qwen2_0_5b_config() -> model_lib.TransformerConfig:
    """The shapes of Qwen2-0.5B (494,032,768 parameters), for `eval_shape` tests."""
    return model_lib.TransformerConfig(
        vocab_size=151_936,
        embed_dim=896,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        head_dim=64,
        mlp_dim=4864,
        max_len=32_768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        qkv_bias=True,
        tie_embeddings=True)


def random_params(config: model_lib.TransformerConfig, seed: int, *,
                  stddev: float = 0.2) -> Any:
    """Parameters with the exact tree of `init_params`, drawn by numpy on the host.

    For tests that need *some* weights fast: compiling the real initialiser
    costs seconds on CPU (one threefry kernel per parameter), this costs a
    trace. Norm scales are `1 + stddev * N(0, 1)`, everything else
    `stddev * N(0, 1)`; the default is larger than `init_params`' 0.02 so that
    random logits are well spread (greedy choices are then not near-ties).

    Returns:
      Plain (unboxed) `jax.Array`s in `config.param_dtype`.
    """
    rng = np.random.default_rng(seed)
    abstract = partitioning.strip_boxes(model_lib.abstract_params(config))

    def draw(path, leaf):
        values = stddev * rng.standard_normal(leaf.shape)
        if jax.tree_util.keystr(path).endswith("['scale']"):
            values = values + 1.0
        return jnp.asarray(values, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


_TINY_VOCAB_TEXT = ('import jax\nimport flax.linen as nn\n'
                    'class Model(nn.Module):\n    @nn.compact\n'
                    '    def __call__(self, x):\n'
                    '        x = nn.Dense(features=10)(x)\n        return x\n'
                    '"""Metrics:\n{\'num_params\': \'4800\', '
                    '\'val_accuracy\': \'0.865\'}\n"""\n')


def tiny_language_model(*, seed: int = 0, max_len: int = 2048,
                        **options) -> serving.LanguageModel:
    """A served tiny model with random weights and a small byte-level BPE.

    What it writes is noise, but every call of the served interface is real:
    for tests of code that drives an LM (the search), where the LM's skill
    does not matter. `options` go to `LanguageModel.create`.
    """
    vocab = vocab_lib.train_byte_level_bpe([_TINY_VOCAB_TEXT] * 20,
                                           vocab_size=300)
    config = tiny_config(vocab_size=vocab.vocab_size, max_len=max_len)
    return serving.LanguageModel.create(config, random_params(config, seed),
                                        vocab, **options)
