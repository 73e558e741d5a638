"""The served model of the LM benchmarks (lm_decode.py, prompt_tuning.py).

By default the model of ../shared/reference/measurements.md ("Decoding with
transformers on CPU"): a randomly initialised Llama (hidden 256, 6 layers, 8
query / 4 KV heads, SwiGLU width 704, vocabulary 4,096; 6.5M parameters),
written as a Hugging Face folder by transformers (benchmarks/hf_reference.py
`make`, run under the torch interpreter) and imported with
`lm.checkpoints.load_hf`, so both sides of a comparison run the same weights.
Without torch the same architecture gets random weights in JAX instead
(`lm.testing.random_params`) and a small byte-level BPE; speed does not
depend on the weights' values.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
import torch_subprocess  # pylint: disable=g-import-not-at-top

from lm import checkpoints, serving, testing
from lm import model as model_lib
from lm import vocab as vocab_lib

HF_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         'hf_reference.py')
# benchmarks/hf_reference.py `make` flags.
MODEL = {'hidden': 256, 'layers': 6, 'heads': 8, 'kv_heads': 4, 'mlp': 704,
         'vocab': 4096, 'max_len': 2048}
# The served dtypes a benchmark's --dtype flag offers.
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
_VOCAB_TEXT = 'def __call__(self, x):\n    return nn.relu(nn.Dense(64)(x))\n'


def prepare(*, checkpoint: str, torch_python: str, workdir: str, dtype: Any,
            seed: int = 0) -> tuple[serving.LanguageModel, str, str]:
    """The served model, its Hugging Face folder ('' if none) and a description.

    Args:
      checkpoint: an existing Hugging Face folder to serve, or '' to make one.
      torch_python: interpreter with torch and transformers ('' = none: random
        JAX weights, no folder).
      workdir: where a new folder is written (`workdir/model`).
      dtype: the served computation and parameter dtype.
      seed: the weights' seed.
    """
    if not checkpoint and torch_python:
        checkpoint = os.path.join(workdir, 'model')
        made = torch_subprocess.run_json(
            torch_python, HF_SCRIPT,
            ['make', f'--out={checkpoint}', f'--seed={seed}',
             *(f'--{k}={v}' for k, v in MODEL.items())])
        how = f'random Llama made by transformers ({made["params"]:,} parameters)'
    elif checkpoint:
        how = f'Hugging Face folder {checkpoint}'
    if checkpoint:
        return checkpoints.load_hf(checkpoint, dtype=dtype), checkpoint, how
    config = model_lib.TransformerConfig(
        vocab_size=MODEL['vocab'], embed_dim=MODEL['hidden'],
        num_layers=MODEL['layers'], num_heads=MODEL['heads'],
        num_kv_heads=MODEL['kv_heads'],
        head_dim=MODEL['hidden'] // MODEL['heads'], mlp_dim=MODEL['mlp'],
        max_len=MODEL['max_len'], dtype=dtype, param_dtype=dtype)
    vocab = vocab_lib.train_byte_level_bpe([_VOCAB_TEXT] * 20, vocab_size=300)
    served = serving.LanguageModel.create(
        config, testing.random_params(config, seed), vocab)
    return served, '', 'random Llama initialised in JAX (no torch)'
