"""Jitted, stateless sampling from `lm.model.Transformer` with a fixed KV cache.

Apart from the model (t5x `decoding.temperature_sample`, gemma's sampler):
`decode_loop` drives any `tokens -> logits` step function over an opaque
cache; `sample` binds it to a `Transformer` (prefill, then the loop) and is
one `jax.jit` program.

Layout. Prompts are LEFT-padded to a common bucket length T, so every row's
last prompt token sits in the same column and all rows write the same cache
slot at each step (one scalar write index). The cache holds
`S = P + T + max_new_tokens` slots: the soft prompt (P, possibly 0), the
padded prompts, then the generated tokens. Padding has segment id 0 and is
never attended to; positions come from the mask (`P + rank among the row's
real tokens`), never from the column, so a prompt's logits do not depend on
its padding.

No recompilation. What is traced is fixed by the model and `SamplingConfig`
(static) and by shapes: batch size B, bucket T, soft-prompt length P, and
whether there is a soft prompt. Prompt contents, temperatures, the key and
the soft prompt's *values* are arguments, so a new prompt in the same bucket
or a newly tuned soft prompt reuses the compiled program.

Bucket rule (`bucket_length`): the smallest bucket >= the batch's longest
prompt, among `buckets` below the room left in the cache (`max_len - P -
max_new_tokens`) plus that room itself; a longer prompt is an error.

Per-row temperature: row b samples from `softmax(logits / temperatures[b])`
after top-k / top-p filtering (in that order, as Hugging Face does); a row
with temperature 0 takes the argmax (greedy). Each step's key is
`fold_in(rng, step)`; the key is a required argument.

Copy prior (`SamplingConfig.copy_weight` > 0): prompt lookup, the work of an
induction head done explicitly. At every step, the longest suffix of the
row's text so far (prompt, then generated tokens) that also ends at an
earlier prompt position j is found (`extend_matches` keeps, per prompt
position, the length of that common suffix); if it is at least
`copy_min_match` tokens long, the tokens that follow those longest matches in
the prompt form a copy distribution (`copy_distribution`), and the row samples
from `(1 - copy_weight) * p_lm + copy_weight * p_copy`, where `p_lm` is the
model's distribution after temperature and filtering (for greedy rows, at
temperature 1, and the argmax of the mixture is taken). Where no match is long
enough, rows sample from the model alone (the same draws as without the
prior). The matches start from the prompt's last `COPY_INIT_SPAN` tokens.
With `copy_half_life` h > 0, a match counts `2 ** (-d / h)`, where d is how
many tokens before the prompt's end it ends: where the text matches several
places equally well (code that two few-shot examples share), the copy prior
follows the latest, so a caller chooses what is copied by what it shows last.

Stopping: a row stops after emitting `eos_id` and emits `pad_id` thereafter;
the loop ends when every row has stopped or after `max_new_tokens`. Stop
strings are applied on the host after detokenisation
(`truncate_at_stop_strings`), since they do not align with token boundaries.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from lm import model as model_lib

DEFAULT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Static sampling strategy (changing it compiles a new program).

    Attributes:
      max_new_tokens: tokens generated per row at most (EOS included).
      eos_id: the token that ends a row.
      pad_id: emitted by rows that have ended.
      top_k: keep the k most likely tokens; 0 = no top-k filter.
      top_p: keep the smallest set of most likely tokens whose probability
        reaches top_p (nucleus); 1.0 = no filter.
      copy_weight: weight of the copy prior (module docstring) in [0, 1];
        0 = off (nothing of it is traced).
      copy_min_match: tokens a suffix must match in the prompt before the
        copy prior proposes what followed it.
      copy_half_life: in prompt tokens, how fast a match's weight in the copy
        prior falls with its distance from the prompt's end (module
        docstring); 0 = every match weighs the same.
    """

    max_new_tokens: int
    eos_id: int
    pad_id: int
    top_k: int = 0
    top_p: float = 1.0
    copy_weight: float = 0.0
    copy_min_match: int = 4
    copy_half_life: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(
                f'max_new_tokens must be positive, got {self.max_new_tokens}')
        if self.top_k < 0:
            raise ValueError(f'top_k must be >= 0, got {self.top_k}')
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f'top_p must be in (0, 1], got {self.top_p}')
        if not 0.0 <= self.copy_weight <= 1.0:
            raise ValueError(
                f'copy_weight must be in [0, 1], got {self.copy_weight}')
        if self.copy_min_match < 1:
            raise ValueError(
                f'copy_min_match must be >= 1, got {self.copy_min_match}')
        if self.copy_half_life < 0:
            raise ValueError(
                f'copy_half_life must be >= 0, got {self.copy_half_life}')


@flax.struct.dataclass
class SampleOutput:
    """What `sample` returns.

    Attributes:
      tokens: `[B, max_new_tokens]` int32 generated ids; after a row's EOS,
        `pad_id`.
      lengths: `[B]` int32 number of generated tokens before EOS (the text is
        `tokens[b, :lengths[b]]`).
      finished: `[B]` bool, whether the row emitted EOS.
    """

    tokens: jax.Array
    lengths: jax.Array
    finished: jax.Array


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    """Left-padded prompts (host arrays from `pad_prompts`; inside `sample`,
    the traced arguments).

    Attributes:
      tokens: `[B, T]` int32, `pad_id` on the left of each prompt.
      mask: `[B, T]` bool, True on real tokens.
    """

    tokens: np.ndarray
    mask: np.ndarray


def max_prompt_length(model_config: model_lib.TransformerConfig,
                      config: SamplingConfig, prefix_length: int = 0) -> int:
    """Room for the prompt: `max_len - prefix_length - max_new_tokens`."""
    return model_config.max_len - prefix_length - config.max_new_tokens


def bucket_length(length: int, *, buckets: Sequence[int] = DEFAULT_BUCKETS,
                  max_length: int | None = None) -> int:
    """The padded length for a longest prompt of `length` tokens (module docstring).

    Raises:
      ValueError: `length` < 1, or longer than `max_length` (or the largest
        bucket when `max_length` is None).
    """
    if length < 1:
        raise ValueError('every prompt needs at least one token')
    candidates = sorted(b for b in buckets if max_length is None or b < max_length)
    if max_length is not None:
        candidates.append(max_length)
    for candidate in candidates:
        if candidate >= length:
            return candidate
    limit = candidates[-1] if candidates else max_length
    raise ValueError(f'prompt of {length} tokens is longer than the {limit} '
                     'tokens the cache leaves for it')


def pad_prompts(prompts: Sequence[Sequence[int]], *, pad_id: int,
                buckets: Sequence[int] = DEFAULT_BUCKETS,
                max_length: int | None = None) -> PromptBatch:
    """Left-pads token-id prompts to their bucket.

    Args:
      prompts: one list of token ids per row, each non-empty.
      pad_id: the padding id.
      buckets: candidate padded lengths.
      max_length: the room the cache leaves for the prompt
        (`max_prompt_length(...)`); a bucket of exactly this length is added.

    Raises:
      ValueError: no prompts, an empty prompt, or one that does not fit.
    """
    if not prompts:
        raise ValueError('no prompts given')
    lengths = [len(p) for p in prompts]
    if min(lengths) < 1:
        raise ValueError(f'prompt {lengths.index(min(lengths))} is empty')
    width = bucket_length(max(lengths), buckets=buckets, max_length=max_length)
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    mask = np.zeros((len(prompts), width), bool)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt):] = prompt
        mask[row, width - len(prompt):] = True
    return PromptBatch(tokens=tokens, mask=mask)


def truncate_at_stop_strings(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to (excluding) the earliest occurrence of any stop string."""
    cut = len(text)
    for stop in stop_strings:
        if stop:
            found = text.find(stop)
            if found != -1:
                cut = min(cut, found)
    return text[:cut]


def filter_logits(logits: jax.Array, *, top_k: int, top_p: float) -> jax.Array:
    """Sets logits outside the top-k, then outside the nucleus, to -inf.

    Args:
      logits: `[B, V]` float32, already divided by the temperature.
      top_k: static; 0 = off.
      top_p: static; 1.0 = off. The nucleus always keeps the best token.
    """
    if top_k and top_k < logits.shape[-1]:
        candidates = jax.lax.top_k(logits, top_k)[0]  # Sorted, descending.
        logits = jnp.where(logits < candidates[:, -1:], -jnp.inf, logits)
    else:
        candidates = None
    if top_p < 1.0:
        if candidates is None:
            candidates = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(candidates, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        kept = jnp.where(mass_before < top_p, candidates, jnp.inf)
        cutoff = jnp.min(kept, axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def sample_from_logits(logits: jax.Array, rng: jax.Array, temperatures: jax.Array,
                       *, top_k: int = 0, top_p: float = 1.0,
                       copy_log_probs: jax.Array | None = None,
                       copy_weight: float = 0.0) -> jax.Array:
    """One token per row: greedy where `temperatures <= 0`, else filtered sampling.

    Args:
      logits: `[B, V]`.
      rng: PRNG key.
      temperatures: `[B]`.
      top_k, top_p: see `SamplingConfig`.
      copy_log_probs: optional `[B, V]` copy log-probabilities
        (`copy_distribution`; all -inf in rows without a match), mixed in
        with `copy_weight` (module docstring).
      copy_weight: see `SamplingConfig`.

    Returns:
      `[B]` int32 token ids.
    """
    logits = logits.astype(jnp.float32)
    hot = temperatures > 0
    scaled = logits / jnp.where(hot, temperatures, 1.0).astype(jnp.float32)[:, None]
    scaled = filter_logits(scaled, top_k=top_k, top_p=top_p)
    if copy_log_probs is None:
        greedy = first_argmax(logits)
    else:
        copying = jnp.any(copy_log_probs > -jnp.inf, axis=-1, keepdims=True)
        mixed = jnp.logaddexp(
            jnp.log1p(-copy_weight) + jax.nn.log_softmax(scaled, axis=-1),
            jnp.log(jnp.float32(copy_weight)) + copy_log_probs)
        # Rows without a match keep the model's own logits: the same draws.
        scaled = jnp.where(copying, mixed, scaled)
        greedy = first_argmax(scaled)
    # The Gumbel-max trick, as `jax.random.categorical` does it (the same
    # draws for the same key), with the faster argmax.
    sampled = first_argmax(scaled + jax.random.gumbel(rng, scaled.shape))
    return jnp.where(hot, sampled, greedy).astype(jnp.int32)


def first_argmax(x: jax.Array) -> jax.Array:
    """`jnp.argmax(x, axis=-1)` (the first maximum) for `[B, V]` rows without
    NaN (-inf entries are fine), as a max and a min: XLA:CPU runs these two
    plain reductions faster than the paired value-index reduction of `argmax`
    (with the sampling around it, a step took 2.1 ms against 0.8 ms at
    [16, 4096])."""
    top = jnp.max(x, axis=-1, keepdims=True)
    index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    return jnp.min(jnp.where(x == top, index, x.shape[-1] - 1), axis=-1)


# -- The copy prior (module docstring). ----------------------------------------

COPY_INIT_SPAN = 64  # Prompt tokens the matches start from (and their cap then).


def extend_matches(matches: jax.Array, prompt_tokens: jax.Array,
                   allowed: jax.Array, token: jax.Array) -> jax.Array:
    """The match lengths after the row's text grows by `token`.

    Args:
      matches: `[B, T]` int32; `matches[b, j]` is the length of the longest
        common suffix of row b's text and its prompt up to position j.
      prompt_tokens: `[B, T]` left-padded prompts.
      allowed: `[B, T]` bool, the positions that may match (real prompt
        tokens that come before `token` in the text).
      token: `[B]` the new last token of each row.
    """
    previous = jnp.pad(matches[:, :-1], ((0, 0), (1, 0)))
    return jnp.where(allowed & (prompt_tokens == token[:, None]), previous + 1, 0)


def initial_matches(prompt_tokens: jax.Array, prompt_mask: jax.Array) -> jax.Array:
    """`[B, T]` match lengths for the text that is the prompt itself, built
    from its last `COPY_INIT_SPAN` tokens (so they depend on no padding)."""
    length = prompt_tokens.shape[1]
    span = min(COPY_INIT_SPAN, length)
    columns = jnp.arange(length)

    def feed(i, matches):
        column = length - span + i
        allowed = (prompt_mask & (columns < column)[None]
                   & jnp.take(prompt_mask, column, axis=1)[:, None])
        return extend_matches(matches, prompt_tokens, allowed,
                              jnp.take(prompt_tokens, column, axis=1))

    return jax.lax.fori_loop(0, span, feed,
                             jnp.zeros(prompt_tokens.shape, jnp.int32))


def copy_distribution(matches: jax.Array, prompt_tokens: jax.Array, *,
                      vocab_size: int, min_match: int,
                      half_life: int = 0) -> jax.Array:
    """`[B, vocab_size]` log-probabilities of the prompt tokens that follow
    the row's longest matches (each counts once, or `2 ** (-d / half_life)`
    when it ends d tokens before the prompt's end); all -inf in rows whose
    longest match is shorter than `min_match`. The prompt's last position is
    no candidate: what follows it is the text being written."""
    matches, following = matches[:, :-1], prompt_tokens[:, 1:]
    longest = jnp.max(matches, axis=1, keepdims=True)
    chosen = ((matches == longest) & (longest >= min_match)).astype(jnp.float32)
    if half_life:  # Weights relative to the latest match, which never underflows.
        distance = jnp.arange(matches.shape[1], 0, -1, dtype=jnp.float32)[None]
        latest = jnp.min(jnp.where(chosen > 0, distance, jnp.inf), axis=1,
                         keepdims=True)
        chosen = jnp.where(chosen > 0,
                           jnp.exp2((latest - distance) / half_life), 0.0)
    rows = jnp.arange(matches.shape[0])[:, None]
    counts = jnp.zeros((matches.shape[0], vocab_size), jnp.float32)
    counts = counts.at[rows, following].add(chosen)
    total = jnp.maximum(jnp.sum(counts, axis=-1, keepdims=True), 1.0)
    return jnp.log(counts) - jnp.log(total)


# (tokens [B, 1], positions [B, 1], segment_ids [B, 1], cache)
#     -> (logits [B, 1, V], cache)
DecodeFn = Callable[[jax.Array, jax.Array, jax.Array, Any], tuple[jax.Array, Any]]


@flax.struct.dataclass
class _LoopState:
    step: jax.Array  # [] int32
    logits: jax.Array  # [B, V] logits for the token to emit at `step`.
    cache: Any
    positions: jax.Array  # [B] position of the token emitted at `step`.
    tokens: jax.Array  # [B, N]
    lengths: jax.Array  # [B]
    finished: jax.Array  # [B] bool
    matches: jax.Array | None  # [B, T] copy-prior match lengths, if it is on.


def decode_loop(decode_fn: DecodeFn, cache: Any, first_logits: jax.Array,
                first_positions: jax.Array, *, config: SamplingConfig,
                temperatures: jax.Array, rng: jax.Array,
                prompt: PromptBatch | None = None) -> SampleOutput:
    """Samples up to `config.max_new_tokens` per row with `lax.while_loop`.

    Model-agnostic: `decode_fn` appends one token per row to the cache (it
    must have room for `max_new_tokens` more slots) and returns the next
    logits; the cache is opaque here.

    Args:
      decode_fn: the step function (see `DecodeFn`).
      cache: the cache after the prompt.
      first_logits: `[B, V]` logits after the prompt's last token.
      first_positions: `[B]` position of the first generated token.
      config: the sampling strategy.
      temperatures: `[B]` per-row temperature; 0 = greedy.
      rng: PRNG key; step s uses `fold_in(rng, s)`.
      prompt: the left-padded prompts (tokens and mask as arrays), which the
        copy prior copies from; required when `config.copy_weight` > 0.

    Raises (while tracing):
      ValueError: the copy prior is on and `prompt` is missing.
    """
    batch, vocab_size = first_logits.shape
    width = config.max_new_tokens
    copying = config.copy_weight > 0
    if copying and prompt is None:
        raise ValueError('the copy prior (copy_weight > 0) needs the prompt')

    def cond(state: _LoopState) -> jax.Array:
        return (state.step < width) & ~jnp.all(state.finished)

    def body(state: _LoopState) -> _LoopState:
        key = jax.random.fold_in(rng, state.step)
        copy_log_probs = None if not copying else copy_distribution(
            state.matches, prompt.tokens, vocab_size=vocab_size,
            min_match=config.copy_min_match, half_life=config.copy_half_life)
        token = sample_from_logits(state.logits, key, temperatures,
                                   top_k=config.top_k, top_p=config.top_p,
                                   copy_log_probs=copy_log_probs,
                                   copy_weight=config.copy_weight)
        token = jnp.where(state.finished, config.pad_id, token)
        matches = None if not copying else extend_matches(
            state.matches, prompt.tokens, prompt.mask, token)
        is_eos = ~state.finished & (token == config.eos_id)
        finished = state.finished | is_eos
        tokens = jax.lax.dynamic_update_slice(state.tokens, token[:, None],
                                              (0, state.step))
        lengths = state.lengths + (~finished).astype(jnp.int32)
        # Ended rows write padding (segment 0), which nothing attends to.
        logits, cache = decode_fn(token[:, None], state.positions[:, None],
                                  (~finished).astype(jnp.int32)[:, None],
                                  state.cache)
        return _LoopState(step=state.step + 1, logits=logits[:, -1], cache=cache,
                          positions=state.positions + 1, tokens=tokens,
                          lengths=lengths, finished=finished, matches=matches)

    state = _LoopState(
        step=jnp.zeros((), jnp.int32),
        logits=first_logits.astype(jnp.float32),
        cache=cache,
        positions=first_positions.astype(jnp.int32),
        tokens=jnp.full((batch, width), config.pad_id, jnp.int32),
        lengths=jnp.zeros((batch,), jnp.int32),
        finished=jnp.zeros((batch,), bool),
        matches=(initial_matches(prompt.tokens, prompt.mask) if copying
                 else None))
    state = jax.lax.while_loop(cond, body, state)
    return SampleOutput(tokens=state.tokens, lengths=state.lengths,
                        finished=state.finished)


@functools.partial(jax.jit, static_argnames=('model', 'config'))
def sample(model: model_lib.Transformer, params: Any, prompt_tokens: jax.Array,
           prompt_mask: jax.Array, *, config: SamplingConfig,
           temperatures: jax.Array, rng: jax.Array,
           soft_prompt: jax.Array | None = None) -> SampleOutput:
    """Samples continuations of left-padded prompts (one jitted program).

    Args:
      model: the `Transformer` (static: hashed by its config).
      params: its parameters (plain or boxed arrays, any sharding).
      prompt_tokens: `[B, T]` int, left-padded (see `pad_prompts`).
      prompt_mask: `[B, T]` bool, True on real tokens; every row has one.
      config: the sampling strategy (static).
      temperatures: `[B]` float per-row temperatures; 0 = greedy.
      rng: PRNG key (required; never invented here).
      soft_prompt: optional `[P, embed]` or `[1 or B, P, embed]` prefix.

    Returns:
      `SampleOutput` with `[B, max_new_tokens]` tokens.

    Raises (while tracing):
      ValueError: inconsistent shapes, or `P + T + max_new_tokens` beyond
        the model's `max_len`.
    """
    model_config = model.config
    batch, prompt_length = prompt_tokens.shape
    if prompt_mask.shape != prompt_tokens.shape:
        raise ValueError(f'prompt_mask {prompt_mask.shape} must match prompt_tokens '
                         f'{prompt_tokens.shape}')
    if temperatures.shape != (batch,):
        raise ValueError(f'temperatures must be [{batch}], got {temperatures.shape}')
    prefix_length = 0 if soft_prompt is None else soft_prompt.shape[-2]
    cache_length = prefix_length + prompt_length + config.max_new_tokens
    if cache_length > model_config.max_len:
        raise ValueError(
            f'soft prompt ({prefix_length}) + padded prompt ({prompt_length}) + '
            f'max_new_tokens ({config.max_new_tokens}) = {cache_length} exceeds '
            f'max_len {model_config.max_len}')

    variables = {'params': params}
    mask = prompt_mask.astype(bool)
    segment_ids = mask.astype(jnp.int32)
    positions = model_lib.default_positions(segment_ids, offset=prefix_length)
    cache = model_lib.init_cache(model_config, batch, cache_length)
    logits, cache = model.apply(
        variables, prompt_tokens, positions=positions, segment_ids=segment_ids,
        cache=cache, prefix_embeddings=soft_prompt, last_only=True,
        prefill=True, method=model_lib.Transformer.decode)

    # `decode` takes row i of every stacked layer parameter; inside the loop
    # that slice would be copied at every step. Slicing once here and
    # restacking inside the loop lets XLA fold slice(stack(...)) back to the
    # per-layer arrays, so the loop reads the weights in place.
    layers = [jax.tree_util.tree_map(lambda p, i=i: p[i], params['layers'])
              for i in range(model_config.num_layers)]

    def decode_fn(tokens, step_positions, step_segment_ids, step_cache):
        stacked = jax.tree_util.tree_map(lambda *ps: jnp.stack(ps), *layers)
        return model.apply({'params': {**params, 'layers': stacked}}, tokens,
                           positions=step_positions, segment_ids=step_segment_ids,
                           cache=step_cache, method=model_lib.Transformer.decode)

    first_positions = prefix_length + jnp.sum(mask, axis=1)
    return decode_loop(decode_fn, cache, logits[:, -1], first_positions,
                       config=config, temperatures=temperatures, rng=rng,
                       prompt=PromptBatch(tokens=prompt_tokens, mask=mask))
