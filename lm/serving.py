"""The language model as one object: what the search talks to.

`LanguageModel` owns the model config, parameters (placed on its mesh by
their logical axes), vocabulary, mesh and axis rules, and exposes three
calls on text:

  * `generate(prompts, num_samples, max_new_tokens, temperatures, rng,
    soft_prompt=None)` -> `list[list[str]]`: `num_samples` continuations of
    each prompt, sample i at `temperatures[i]`;
  * `logits(token_ids)` -> `np.ndarray [B, T, V]`;
  * `tune(soft_prompt, examples, rng)` -> `(soft_prompt, metrics)`:
    soft-prompt tuning on (prompt text, target text) pairs, model frozen.

Compilation is bounded: rows are grouped into batches of `batch_size` (a
last short batch is filled with copies of its first row at temperature 0,
whose outputs are dropped) and prompts are padded to length buckets, so the
sampler compiles once per (bucket, soft prompt length) and never per prompt.
Every jitted call runs inside `partitioning.activate(mesh, rules)`.

Randomness: batch j samples with `fold_in(rng, j)`. A row's sample depends on
the batch it lands in (the sampler draws one key per step for the batch).

`lm.checkpoints.load_default()` serves the embedded default model
(`lm/default/`, trained by `python -m lm.pretrain`, see lm/README.md).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm import model as model_lib
from lm import partitioning, prompt_tuning, sampler
from lm import vocab as vocab_lib


@functools.partial(jax.jit, static_argnames=('model',))
def _forward(model: model_lib.Transformer, params: Any,
             tokens: jax.Array) -> jax.Array:
    return model.apply({'params': params}, tokens)


def default_mesh(batch_size: int, *,
                 model_parallelism: int = 1) -> jax.sharding.Mesh:
    """A mesh over the most local devices whose model replicas (groups of
    `model_parallelism` devices, along 'model') divide `batch_size` (along
    'data').

    A batch that does not split evenly would leave devices computing padding
    or replicas (batch 1 over 2 CPU devices decoded 2.7x slower than on one).

    Raises:
      ValueError: fewer than `model_parallelism` local devices.
    """
    available = len(jax.local_devices())
    if not 1 <= model_parallelism <= available:
        raise ValueError(f'model_parallelism={model_parallelism} must be between '
                         f'1 and the number of local devices ({available})')
    count = max(n for n in range(model_parallelism, available + 1,
                                 model_parallelism)
                if batch_size % (n // model_parallelism) == 0)
    return partitioning.make_mesh(count, model_parallelism=model_parallelism)


def _place(params: Any, config: model_lib.TransformerConfig,
           mesh: jax.sharding.Mesh, rules: partitioning.Rules) -> Any:
    """`params` (plain or boxed) put on their logical shardings over `mesh`."""
    shardings = partitioning.logical_shardings(
        model_lib.abstract_params(config), mesh, rules)
    return jax.device_put(partitioning.strip_boxes(params), shardings)


@dataclasses.dataclass
class LanguageModel:
    """A served decoder (see the module docstring). Build with `create`.

    Attributes:
      config: the model's hyperparameters.
      params: plain parameter arrays, sharded over `mesh` by logical axes.
      vocab: the vocabulary (EOS ends a sample; PAD fills).
      mesh: devices the model runs on, axes ('data', 'model').
      rules: logical-axis rules (with the soft prompt's).
      batch_size: rows per sampling call.
      stop_strings: samples are cut before the first of these.
      top_k, top_p: sampling filters (0 and 1.0 disable them).
      copy_weight, copy_min_match, copy_half_life: the sampler's copy prior
        (prompt lookup, `lm.sampler`): it makes a small model continue what its
        prompt shows (the parents' layers) instead of what it recalls from
        training, preferring what the prompt shows last when copy_half_life
        > 0; copy_weight 0 disables it.
      tuning: soft-prompt tuning settings used by `tune`.
    """

    config: model_lib.TransformerConfig
    params: Any
    vocab: vocab_lib.Vocabulary
    mesh: jax.sharding.Mesh
    rules: partitioning.Rules
    batch_size: int = 16
    stop_strings: tuple[str, ...] = ()
    top_k: int = 0
    top_p: float = 1.0
    copy_weight: float = 0.0
    copy_min_match: int = 4
    copy_half_life: int = 0
    tuning: prompt_tuning.TuningConfig = prompt_tuning.TuningConfig()

    @classmethod
    def create(cls, config: model_lib.TransformerConfig, params: Any,
               vocab: vocab_lib.Vocabulary, *,
               mesh: jax.sharding.Mesh | None = None, **options) -> LanguageModel:
        """Places `params` (plain or boxed) on `mesh` (default:
        `default_mesh(batch_size)`)."""
        if vocab.vocab_size > config.vocab_size:
            raise ValueError(f'vocabulary of {vocab.vocab_size} tokens does not fit '
                             f'the model\'s {config.vocab_size} embeddings')
        mesh = mesh or default_mesh(options.get('batch_size', cls.batch_size))
        rules = partitioning.standard_logical_axis_rules(
            prompt_tuning.PARTITIONING_RULES)
        return cls(config=config, params=_place(params, config, mesh, rules),
                   vocab=vocab, mesh=mesh, rules=rules, **options)

    def with_mesh(self, mesh: jax.sharding.Mesh) -> LanguageModel:
        """The same model served on `mesh` (parameters placed there)."""
        return dataclasses.replace(
            self, mesh=mesh, params=_place(self.params, self.config, mesh,
                                           self.rules))

    @property
    def model(self) -> model_lib.Transformer:
        return model_lib.Transformer(self.config)

    def generate(self, prompts: Sequence[str], *, num_samples: int,
                 max_new_tokens: int, temperatures: Sequence[float],
                 rng: jax.Array, soft_prompt: jax.Array | None = None
                 ) -> list[list[str]]:
        """`num_samples` continuations of every prompt (sample i at
        `temperatures[i]`), cut at EOS and at the first stop string."""
        if len(temperatures) != num_samples:
            raise ValueError(f'{num_samples} samples need {num_samples} '
                             f'temperatures, got {len(temperatures)}')
        rows = [(p, t) for p in prompts for t in temperatures]
        config = self._sampling_config(max_new_tokens)
        room = self.prompt_room(max_new_tokens, soft_prompt)
        encoded = {p: self.vocab.encode(p) for p in prompts}
        texts = []
        for j, start in enumerate(range(0, len(rows), self.batch_size)):
            chunk = rows[start:start + self.batch_size]
            filled = chunk + [(chunk[0][0], 0.0)] * (self.batch_size - len(chunk))
            batch = sampler.pad_prompts([encoded[p] for p, _ in filled],
                                        pad_id=self.vocab.pad_id, max_length=room)
            with partitioning.activate(self.mesh, self.rules):
                out = sampler.sample(
                    self.model, self.params, batch.tokens, batch.mask,
                    config=config,
                    temperatures=jnp.asarray([t for _, t in filled], jnp.float32),
                    rng=jax.random.fold_in(rng, j), soft_prompt=soft_prompt)
            tokens, lengths = jax.device_get((out.tokens, out.lengths))
            for row in range(len(chunk)):
                text = self.vocab.decode(tokens[row, :lengths[row]])
                texts.append(sampler.truncate_at_stop_strings(text, self.stop_strings))
        return [texts[i * num_samples:(i + 1) * num_samples]
                for i in range(len(prompts))]

    def prompt_room(self, max_new_tokens: int,
                    soft_prompt: jax.Array | None = None) -> int:
        """Most prompt tokens `generate` accepts with these settings."""
        prefix = 0 if soft_prompt is None else soft_prompt.shape[-2]
        return sampler.max_prompt_length(
            self.config, self._sampling_config(max_new_tokens), prefix)

    def _sampling_config(self, max_new_tokens: int) -> sampler.SamplingConfig:
        return sampler.SamplingConfig(
            max_new_tokens=max_new_tokens, eos_id=self.vocab.eos_id,
            pad_id=self.vocab.pad_id, top_k=self.top_k, top_p=self.top_p,
            copy_weight=self.copy_weight, copy_min_match=self.copy_min_match,
            copy_half_life=self.copy_half_life)

    def logits(self, token_ids: np.ndarray) -> np.ndarray:
        """float32 `[B, T, vocab]` logits of `[B, T]` token ids."""
        token_ids = np.asarray(token_ids, np.int32)
        if token_ids.ndim != 2:
            raise ValueError(f'token_ids must be [B, T], got {token_ids.shape}')
        with partitioning.activate(self.mesh, self.rules):
            return np.asarray(_forward(self.model, self.params, token_ids))

    def tune(self, soft_prompt: jax.Array, examples: Sequence[tuple[str, str]],
             rng: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
        """Tunes `soft_prompt` on (prompt text, target text) pairs; the target
        is followed by EOS, so the model also learns where a child ends."""
        encoded = [prompt_tuning.Example(
            prompt=tuple(self.vocab.encode(p)),
            target=tuple(self.vocab.encode(t)) + (self.vocab.eos_id,))
            for p, t in examples]
        with partitioning.activate(self.mesh, self.rules):
            return prompt_tuning.tune(
                soft_prompt, self.params, encoded, model_config=self.config,
                config=self.tuning, pad_id=self.vocab.pad_id, rng=rng)
