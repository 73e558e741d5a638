"""Soft-prompt tuning (Lester et al., 2021) of a frozen decoder.

A soft prompt is a `[prompt_length, embed]` array prepended to the embedded
tokens (`Transformer.__call__(prefix_embeddings=...)`); tuning trains it and
nothing else: the model's parameters are an argument of the loss, never of the
gradient, and are returned untouched. The loss is next-token cross entropy on
the *target* span of each example only (for EvoPrompting: a child program
given its few-shot prompt).

EvoPrompting's values (section 3.3): length 16, 5 epochs, batch 16, learning
rate 0.1, the prompt carried over from round to round. The paper does not
name the optimizer; we use Adam (Lester et al. used Adafactor at 0.3).

Shapes never depend on the data: every batch holds `batch_size` rows (a last
short batch is filled with zero-weight rows) padded to a length bucket, so a
tuning run compiles once per bucket and later rounds reuse the executables.

Logical axes of the soft prompt: `SOFT_PROMPT_AXES`; add
`PARTITIONING_RULES` to the model's rules (`lm.partitioning`'s
`additional_rules`) to replicate its length axis.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lm import model as model_lib

SOFT_PROMPT_AXES = ('prompt', 'embed')
PARTITIONING_RULES = (('prompt', None),)
DEFAULT_BUCKETS = (64, 128, 256, 512, 1024, 2048)


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    """How a soft prompt is trained (defaults: the paper's values).

    Attributes:
      num_epochs: passes over the examples.
      batch_size: examples per step (fixed; short batches are filled).
      learning_rate: Adam learning rate.
      buckets: padded lengths of a batch (prompt + target tokens).
    """

    num_epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 0.1
    buckets: tuple[int, ...] = DEFAULT_BUCKETS


@dataclasses.dataclass(frozen=True)
class Example:
    """One tuning example: the loss covers `target` given `prompt`."""

    prompt: tuple[int, ...]
    target: tuple[int, ...]


def init_uniform(rng: jax.Array, length: int, embed_dim: int, *,
                 scale: float = 0.5) -> jax.Array:
    """Uniform in [-scale, scale] (Lester et al.'s random initialisation)."""
    return jax.random.uniform(rng, (length, embed_dim), jnp.float32, -scale, scale)


def init_from_vocab(rng: jax.Array, embedding: jax.Array, length: int) -> jax.Array:
    """Rows of the embedding matrix of `length` random distinct tokens."""
    rows = jax.random.choice(rng, embedding.shape[0], (length,), replace=False)
    return jnp.asarray(embedding[rows], jnp.float32)


def init_from_text(embedding: jax.Array, token_ids: Sequence[int],
                   length: int) -> jax.Array:
    """Embeddings of a text's tokens, repeated or cut to `length`."""
    if not token_ids:
        raise ValueError('init_from_text needs at least one token')
    rows = np.resize(np.asarray(token_ids, np.int32), length)
    return jnp.asarray(embedding[rows], jnp.float32)


def _bucket(length: int, buckets: Sequence[int]) -> int:
    for b in sorted(buckets):
        if length <= b:
            return b
    raise ValueError(f'an example of {length} tokens exceeds the largest bucket '
                     f'{max(buckets)}')


def make_batch(examples: Sequence[Example], batch_size: int,
               buckets: Sequence[int], pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded `tokens`, `segment_ids` and per-token loss `weights`.

    `weights[b, t]` is 1 where token `t + 1` belongs to row b's target, so
    `logits[:, t]` is scored against `tokens[:, t + 1]`. Rows beyond
    `len(examples)` are padding with zero weight.
    """
    if not 0 < len(examples) <= batch_size:
        raise ValueError(f'need 1..{batch_size} examples, got {len(examples)}')
    length = _bucket(max(len(e.prompt) + len(e.target) for e in examples), buckets)
    tokens = np.full((batch_size, length), pad_id, np.int32)
    segment_ids = np.zeros((batch_size, length), np.int32)
    weights = np.zeros((batch_size, length), np.float32)
    for row, e in enumerate(examples):
        if not e.prompt or not e.target:
            raise ValueError('an example needs a non-empty prompt and target')
        ids = list(e.prompt) + list(e.target)
        tokens[row, :len(ids)] = ids
        segment_ids[row, :len(ids)] = 1
        weights[row, len(e.prompt) - 1:len(ids) - 1] = 1.0
    return {'tokens': tokens, 'segment_ids': segment_ids, 'weights': weights}


def target_loss(soft_prompt: jax.Array, params: Any, batch: dict[str, jax.Array],
                config: model_lib.TransformerConfig) -> jax.Array:
    """Mean cross entropy over the target tokens of the batch."""
    logits = model_lib.Transformer(config).apply(
        {'params': params}, batch['tokens'], segment_ids=batch['segment_ids'],
        prefix_embeddings=soft_prompt)
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits[:, :-1], batch['tokens'][:, 1:])
    weights = batch['weights'][:, :-1]
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


@functools.partial(jax.jit, static_argnames=('config', 'learning_rate'),
                   donate_argnums=(0, 1))
def train_step(soft_prompt: jax.Array, opt_state: Any, params: Any,
               batch: dict[str, jax.Array], *, config: model_lib.TransformerConfig,
               learning_rate: float) -> tuple[jax.Array, Any, jax.Array]:
    """One Adam step on the soft prompt; `params` are read, never changed."""
    loss, grad = jax.value_and_grad(target_loss)(soft_prompt, params, batch, config)
    updates, opt_state = optax.adam(learning_rate).update(grad, opt_state,
                                                          soft_prompt)
    return optax.apply_updates(soft_prompt, updates), opt_state, loss


def tune(soft_prompt: jax.Array, params: Any, examples: Sequence[Example], *,
         model_config: model_lib.TransformerConfig, config: TuningConfig,
         pad_id: int, rng: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Trains `soft_prompt` on `examples` for `config.num_epochs` epochs.

    Each epoch visits the examples in an order drawn from `fold_in(rng,
    epoch)`. Returns the new prompt and metrics: `epoch_loss` (mean training
    loss of each epoch) and `steps`.
    """
    if not examples:
        return soft_prompt, {'epoch_loss': [], 'steps': 0}
    opt_state = optax.adam(config.learning_rate).init(soft_prompt)
    soft_prompt = jnp.array(soft_prompt, jnp.float32)  # A copy: we donate it.
    epoch_loss, steps = [], 0
    for epoch in range(config.num_epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(rng, epoch),
                                                  len(examples)))
        losses = []
        for start in range(0, len(order), config.batch_size):
            chunk = [examples[i] for i in order[start:start + config.batch_size]]
            batch = make_batch(chunk, config.batch_size, config.buckets, pad_id)
            soft_prompt, opt_state, loss = train_step(
                soft_prompt, opt_state, params, batch, config=model_config,
                learning_rate=config.learning_rate)
            losses.append(loss)
            steps += 1
        epoch_loss.append(float(np.mean(jax.device_get(losses))))
    return soft_prompt, {'epoch_loss': epoch_loss, 'steps': steps}
