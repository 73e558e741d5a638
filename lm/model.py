"""Decoder-only transformer of the Llama / Qwen2 family, in flax.linen.

The architecture is the one Hugging Face calls `LlamaForCausalLM` /
`Qwen2ForCausalLM`: token embedding (no scaling), `num_layers` pre-norm blocks
of RMSNorm -> grouped-query attention with rotary position embeddings ->
residual, RMSNorm -> SwiGLU MLP -> residual, a final RMSNorm and an output
projection that is either its own matrix or the transposed embedding.
Rotary embeddings use the Hugging Face "rotate_half" convention (the two
halves of each head's features form the rotated pairs), and query head `h`
reads key/value head `h // (num_heads // num_kv_heads)`, so Hugging Face
weights map onto ours without permutation.

Entry points (all through `Transformer.apply`):
  * `Transformer.__call__(tokens, ...) -> logits`: the full forward pass,
    for training, tuning and scoring.
  * `Transformer.decode(tokens, ..., cache=...) -> (logits, cache)`: appends
    a chunk of tokens (a whole prompt, or one token) to a fixed-length KV
    cache and returns their logits; used by `lm.sampler`.

Masking. Every token carries a segment id: 0 marks padding (never attended
to), positive ids mark text; a token attends to earlier tokens of its own
segment (causal, packing-aware). An optional prefix of embeddings (a soft
prompt, `[P, embed]` or `[1 or B, P, embed]`) is prepended to the embedded
tokens; it takes segment id `PREFIX_SEGMENT`, is visible to every
non-padding token after it, and occupies positions 0..P-1, so the tokens'
positions normally start at P (`default_positions` does this). Logits are
returned for the tokens only, never for the prefix.

Positions are explicit: the rotary angle of a token is its `positions` entry,
not its column, so left padding (the sampler's layout) is exact.

KV cache (`KVCache`, an explicit pytree, not the flax 'cache' collection):
keys `[B, num_kv_heads, head_dim, S]` and values `[B, num_kv_heads, S,
head_dim]`, one array per layer, the segment id of each slot `[B, S]` (0 =
empty) and one scalar write index shared by the batch. `decode` writes its
chunk at slots `index .. index + L - 1` of every row and advances the index;
callers keep `index + L <= S` (slots beyond S would be clamped by XLA,
silently). Keys are stored after the rotary embedding, so positions are not
kept in the cache.

Decoding is memory-bound, so the layout serves it: inside the sampler's loop
every layer's arrays are updated in place and read once per step. Heads come
first and keys are stored transposed, so that neither attention product
copies the cache into another layout (`_attend` says how each is computed).
A prefill into an empty cache (`decode(..., prefill=True)`) attends within
its chunk instead of over every slot. The layers are separate arrays because
`decode` runs the layer stack unrolled (a Python loop over the scanned
parameters): a scan over a stacked cache copies every layer's cache out and
back at every step (with the transposes, decoding at batch 16 ran ~2.5x
slower on CPU). `__call__` (training, tuning, scoring) keeps the scan, so its
compile time does not grow with depth; `decode` compiles one copy of the
layer per layer.

Logical axis names (see `lm.partitioning.standard_logical_axis_rules`):
parameters use `vocab`, `embed`, `heads`, `kv_heads`, `kv` (the head
feature dimension), `mlp` and `layers` (the scanned layer stack);
activations use `batch`, `length`, `embed`, `heads`, `kv_heads`, `kv`,
`mlp` and `vocab`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PAD_SEGMENT = 0
PREFIX_SEGMENT = -1
_INIT_STD = 0.02  # Hugging Face's `initializer_range` for this family.
_MASKED = float(np.finfo(np.float32).min)  # Finite: fully masked rows stay NaN-free.
_QUERY_BLOCK = 64  # Queries per block of `_attend_causal_blocks`.


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters of a Llama/Qwen2-family decoder.

    Attributes:
      vocab_size: number of token ids (rows of the embedding).
      embed_dim: width of the residual stream (HF `hidden_size`).
      num_layers: number of decoder blocks.
      num_heads: query heads.
      num_kv_heads: key/value heads; divides `num_heads` (GQA when smaller).
      head_dim: features per head (even, for the rotary embedding).
      mlp_dim: hidden width of the SwiGLU MLP (HF `intermediate_size`).
      max_len: longest sequence (prefix + tokens) the model is used with; the
        sampler refuses caches longer than this.
      rope_theta: base of the rotary frequencies.
      rms_norm_eps: epsilon inside RMSNorm.
      qkv_bias: whether the q/k/v projections have biases (Qwen2: yes).
      tie_embeddings: whether the output projection is the embedding's
        transpose.
      dtype: computation dtype (activations, KV cache).
      param_dtype: storage dtype of the parameters.
    """

    vocab_size: int
    embed_dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    max_len: int
    rope_theta: float = 10_000.0
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False
    tie_embeddings: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        for name in ('vocab_size', 'embed_dim', 'num_layers', 'num_heads',
                     'num_kv_heads', 'head_dim', 'mlp_dim', 'max_len'):
            if getattr(self, name) < 1:
                raise ValueError(f'TransformerConfig.{name} must be positive, '
                                 f'got {getattr(self, name)}')
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f'num_kv_heads ({self.num_kv_heads}) must divide '
                             f'num_heads ({self.num_heads})')
        if self.head_dim % 2:
            raise ValueError(f'head_dim must be even for rotary embeddings, '
                             f'got {self.head_dim}')
        # Canonical numpy dtypes, so equal configs hash equal (jit static args).
        object.__setattr__(self, 'dtype', np.dtype(self.dtype))
        object.__setattr__(self, 'param_dtype', np.dtype(self.param_dtype))


@flax.struct.dataclass
class KVCache:
    """Fixed-length key/value cache of every layer (see the module docstring).

    Attributes:
      k: keys after the rotary embedding, one `[B, num_kv_heads, head_dim, S]`
        array per layer, in the config's `dtype`.
      v: values, one `[B, num_kv_heads, S, head_dim]` array per layer.
      segment_ids: `[B, S]` int32 segment id of each slot; 0 = empty.
      index: `[]` int32, the next slot `decode` writes (same for every row).
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    segment_ids: jax.Array
    index: jax.Array

    @property
    def length(self) -> int:
        """Number of slots S."""
        return self.segment_ids.shape[1]


def init_cache(config: TransformerConfig, batch_size: int, length: int) -> KVCache:
    """An empty cache of `length` slots for `batch_size` rows."""
    shape = (batch_size, config.num_kv_heads, length, config.head_dim)
    zeros = lambda shape: tuple(jnp.zeros(shape, config.dtype)
                                for _ in range(config.num_layers))
    return KVCache(
        k=zeros(shape[:2] + shape[:1:-1]),
        v=zeros(shape),
        segment_ids=jnp.zeros((batch_size, length), jnp.int32),
        index=jnp.zeros((), jnp.int32))


def default_positions(segment_ids: jax.Array, offset: int = 0) -> jax.Array:
    """Positions of single-segment rows: `offset` + index among non-padding.

    Correct for left or right padding; padding gets position 0. Packed rows
    (several segments) need their positions from the caller.
    """
    valid = segment_ids != PAD_SEGMENT
    return jnp.where(valid, offset + jnp.cumsum(valid, axis=-1) - 1, 0).astype(
        jnp.int32)


def attention_mask(q_segment_ids: jax.Array, k_segment_ids: jax.Array,
                   q_slots: jax.Array, k_slots: jax.Array) -> jax.Array:
    """Which keys each query sees: `[B, L, S]` bool.

    A query sees a key when the key's slot is not later than its own, the key
    is not padding, and the key is in the query's segment or is the prefix.

    Args:
      q_segment_ids: `[B, L]` segment ids of the queries.
      k_segment_ids: `[B, S]` segment ids of the keys (0 = padding/empty).
      q_slots: `[L]` sequence slots of the queries.
      k_slots: `[S]` sequence slots of the keys.
    """
    causal = k_slots[None, None, :] <= q_slots[None, :, None]
    q_seg = q_segment_ids[:, :, None]
    k_seg = k_segment_ids[:, None, :]
    visible = (k_seg == q_seg) | (k_seg == PREFIX_SEGMENT)
    return causal & visible & (k_seg != PAD_SEGMENT)


def attention_bias(mask: jax.Array) -> jax.Array:
    """The additive form of a boolean mask: 0.0 where True, `_MASKED` (the
    most negative finite float32) where False; added to the scores.

    Adding rather than selecting gives the same softmax (a score plus
    `_MASKED` rounds to `_MASKED`, whose exponential is 0; a row with no
    visible key stays uniform, not NaN), and XLA:CPU fuses the add into the
    attention's reductions where it runs a `where` as its own pass: a decode
    step's attention (batch 8, 768 slots) took 0.41 instead of 0.61 ms per
    layer. The bias is also made once per call, not once per layer.
    """
    return jnp.where(mask, 0.0, _MASKED).astype(jnp.float32)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding, Hugging Face "rotate_half" convention.

    Args:
      x: `[B, L, N, D]` queries or keys.
      positions: `[B, L]` integer positions.
      theta: rotary base.

    Returns:
      `x` rotated, same shape and dtype; angles are computed in float32.
    """
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, L, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


def _param(module: nn.Module, name: str, init: Any, shape: tuple[int, ...],
           axes: tuple[str, ...], dtype: Any) -> jax.Array:
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


_normal = nn.initializers.normal(_INIT_STD)


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale (initialised to ones), computed in float32."""

    eps: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = _param(self, 'scale', nn.initializers.ones, (x.shape[-1],),
                       ('embed',), self.param_dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True)
                                     + self.eps)
        return jnp.asarray(scale, self.dtype) * normed.astype(self.dtype)


class Attention(nn.Module):
    """Grouped-query self-attention with rotary embeddings and an optional cache.

    Parameters: `q_kernel [embed, heads, kv]`, `k_kernel` and `v_kernel`
    `[embed, kv_heads, kv]`, `o_kernel [heads, kv, embed]`, and with
    `qkv_bias` the biases `q_bias [heads, kv]`, `k_bias`/`v_bias [kv_heads, kv]`.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, bias: jax.Array,
                 kv_cache: tuple[jax.Array, jax.Array] | None,
                 cache_index: jax.Array) -> tuple[jax.Array, Any]:
        """Attends `x [B, L, embed]`; returns `([B, L, embed], new kv_cache)`.

        With `kv_cache = (k [B, K, D, S], v [B, K, S, D])`, the chunk's keys
        and values are written at `cache_index`; the queries then attend over
        all S slots when `bias` (`attention_bias`) is `[B, L, S]`, or over the
        chunk itself when it is `[B, L, L]` (a prefill into an empty cache,
        which need not read the empty slots). Without a cache, over the chunk
        (`bias [B, L, L]`).
        """
        cfg = self.config
        h, kvh, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        e = x.shape[-1]
        dt, pdt = cfg.dtype, cfg.param_dtype

        def project(name, heads, axes):
            kernel = _param(self, f'{name}_kernel', _normal, (e, heads, d),
                            ('embed',) + axes, pdt)
            y = jnp.einsum('ble,ehd->blhd', x, jnp.asarray(kernel, dt))
            if cfg.qkv_bias:
                bias = _param(self, f'{name}_bias', nn.initializers.zeros,
                              (heads, d), axes, pdt)
                y = y + jnp.asarray(bias, dt)
            return y

        q = project('q', h, ('heads', 'kv'))
        k = project('k', kvh, ('kv_heads', 'kv'))
        v = project('v', kvh, ('kv_heads', 'kv'))
        q = apply_rope(q, positions, cfg.rope_theta)
        k = apply_rope(k, positions, cfg.rope_theta)
        q = nn.with_logical_constraint(q, ('batch', 'length', 'heads', 'kv'))
        k = jnp.transpose(k, (0, 2, 3, 1))  # [B, K, D, L], the cache's layouts.
        v = jnp.swapaxes(v, 1, 2)  # [B, K, L, D]

        b, l = q.shape[:2]
        if kv_cache is not None:
            k_cache, v_cache = kv_cache
            kv_cache = (
                jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype),
                                             (0, 0, 0, cache_index)),
                jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype),
                                             (0, 0, cache_index, 0)))
            if bias.shape[-1] != l:  # Attend over the cache's S slots.
                k, v = kv_cache
        k = nn.with_logical_constraint(k, ('batch', 'kv_heads', 'kv', 'length'))
        v = nn.with_logical_constraint(v, ('batch', 'kv_heads', 'length', 'kv'))

        q = q.reshape(b, l, kvh, h // kvh, d) * jnp.asarray(d ** -0.5, dt)
        q = jnp.transpose(q, (0, 2, 3, 1, 4))
        if bias.shape[-1] == l:  # Within the chunk: causal over its own slots.
            out = _attend_causal_blocks(q, k, v, bias)
        else:
            out = _attend(q, k, v, bias)
        out = jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(b, l, h * d)
        o_kernel = _param(self, 'o_kernel', _normal, (h, d, e),
                          ('heads', 'kv', 'embed'), pdt)
        out = out @ jnp.asarray(o_kernel, dt).reshape(h * d, e)
        return out, kv_cache


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
    """Softmax attention of `q [B, K, G, L, D]` (scaled; G query heads per
    key/value head) over `k [B, K, D, S]` and `v [B, K, S, D]`, with `bias
    [B, L, S]` (`attention_bias`) added to the scores; returns `[B, K, G, L,
    D]` in `v`'s dtype.

    Written for XLA:CPU, where decoding spends much of its time here
    (measured on the 6.5M-parameter benchmark Llama at batch 16):
      * the scores are made with S minor, as the softmax reads them (from an
        einsum XLA made them S-major and transposed every score: the mask
        and softmax of a 512-token prefill took 4x longer);
      * a decode step (L = 1) uses broadcast products reduced over D, then
        over S, which read the cache once in its layout, instead of batched
        `[G, D] x [D, S]` matrix products (1.3x slower per step);
      * with one query head per key/value head (G = 1, no GQA), XLA:CPU
        (jax 0.10) hands those products to a YNNPACK fusion that made a
        decode step of the default model 8x slower at batch 16 (27.9 against
        3.5 ms); on CPU such a step is computed with the query repeated
        (G = 2) and the copy dropped.
    Scores and the softmax are float32 whatever the dtype.
    """
    b, kvh, g, l, d = q.shape
    if l == 1 and g == 1 and jax.default_backend() == 'cpu':
        return _attend(jnp.concatenate([q, q], axis=2), k, v, bias)[:, :, :1]
    f32 = jnp.float32
    if l == 1:
        logits = jnp.sum(q[..., None].astype(f32) * k[:, :, None, None].astype(f32),
                         axis=4)  # [B, K, G, 1, S]
    else:
        logits = jax.lax.dot_general(
            q.reshape(b, kvh, g * l, d), k, (((3,), (2,)), ((0, 1), (0, 1))),
            preferred_element_type=f32).reshape(b, kvh, g, l, -1)
    logits = logits + bias[:, None, None]
    probs = jax.nn.softmax(logits, axis=-1)
    if l == 1:
        out = jnp.sum(probs[..., None] * v[:, :, None, None].astype(f32),
                      axis=4)  # [B, K, G, 1, D]
        return out.astype(v.dtype)
    return jnp.einsum('bkgls,bksd->bkgld', probs.astype(v.dtype), v)


def _attend_causal_blocks(q: jax.Array, k: jax.Array, v: jax.Array,
                          bias: jax.Array) -> jax.Array:
    """`_attend` of a chunk over itself (`bias [B, L, L]`, keys at the queries'
    own slots), by blocks of `_QUERY_BLOCK` queries.

    The bias comes from a causal mask (`attention_mask`), so the queries of
    slots `[start, end)` see no key after slot `end - 1`: each block reads
    only keys `[0, end)`, skipping the upper triangle that a full `[L, L]`
    product computes and masks. The skipped scores would contribute exactly 0 to the
    softmax, so every query that sees a key (every non-padding token sees
    itself) gets the same result up to the order of float32 sums; a padding
    query sees none, and its output (unused) is the mean of fewer values.
    On the 2-core CPU, a 512-token chunk of the benchmark Llama (batch 16)
    attends 2.2x faster forward and 1.9x with gradients than as one
    product; blocks of 64 were faster than 32 and 128.
    """
    length = q.shape[3]
    if length <= _QUERY_BLOCK:
        return _attend(q, k, v, bias)
    blocks = []
    for start in range(0, length, _QUERY_BLOCK):
        end = min(start + _QUERY_BLOCK, length)
        blocks.append(_attend(q[:, :, :, start:end], k[..., :end],
                              v[:, :, :end], bias[:, start:end, :end]))
    return jnp.concatenate(blocks, axis=3)


class Mlp(nn.Module):
    """SwiGLU: `down(silu(gate(x)) * up(x))`; kernels `[embed, mlp]`, `[mlp, embed]`."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        e, m, dt, pdt = x.shape[-1], cfg.mlp_dim, cfg.dtype, cfg.param_dtype
        gate = _param(self, 'gate_kernel', _normal, (e, m), ('embed', 'mlp'), pdt)
        up = _param(self, 'up_kernel', _normal, (e, m), ('embed', 'mlp'), pdt)
        down = _param(self, 'down_kernel', _normal, (m, e), ('mlp', 'embed'), pdt)
        hidden = (jax.nn.silu(x @ jnp.asarray(gate, dt)) * (x @ jnp.asarray(up, dt)))
        hidden = nn.with_logical_constraint(hidden, ('batch', 'length', 'mlp'))
        return hidden @ jnp.asarray(down, dt)


class DecoderLayer(nn.Module):
    """One pre-norm block; scanned over the layer stack by `Transformer`."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, kv_cache: Any, positions: jax.Array,
                 bias: jax.Array, cache_index: jax.Array) -> tuple[jax.Array, Any]:
        cfg = self.config
        norm = functools.partial(RMSNorm, eps=cfg.rms_norm_eps, dtype=cfg.dtype,
                                 param_dtype=cfg.param_dtype)
        h, kv_cache = Attention(cfg, name='attn')(
            norm(name='attn_norm')(x), positions, bias, kv_cache, cache_index)
        x = x + h
        x = x + Mlp(cfg, name='mlp')(norm(name='mlp_norm')(x))
        x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
        return x, kv_cache


class Transformer(nn.Module):
    """The decoder (see the module docstring for masking, positions, cache).

    Parameters: `embedding [vocab, embed]`; `layers/...` stacked over a
    leading `layers` axis of size `num_layers` (the block is `nn.scan`ned, so
    compile time does not grow with depth); `final_norm/scale [embed]`;
    `lm_head [embed, vocab]` unless `tie_embeddings`.
    """

    config: TransformerConfig

    def setup(self):
        cfg = self.config
        self.embedding = _param(self, 'embedding', _normal,
                                (cfg.vocab_size, cfg.embed_dim), ('vocab', 'embed'),
                                cfg.param_dtype)
        stack = nn.scan(
            DecoderLayer,
            variable_axes={'params': 0},
            split_rngs={'params': True},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
            length=cfg.num_layers,
            metadata_params={nn.PARTITION_NAME: 'layers'})
        self.layers = stack(cfg)
        self.final_norm = RMSNorm(eps=cfg.rms_norm_eps, dtype=cfg.dtype,
                                  param_dtype=cfg.param_dtype)
        if not cfg.tie_embeddings:
            self.lm_head = _param(self, 'lm_head', _normal,
                                  (cfg.embed_dim, cfg.vocab_size),
                                  ('embed', 'vocab'), cfg.param_dtype)

    def __call__(self, tokens: jax.Array, *, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None,
                 prefix_embeddings: jax.Array | None = None) -> jax.Array:
        """Full forward pass.

        Args:
          tokens: `[B, T]` int token ids.
          positions: `[B, T]` positions of the tokens; defaults to
            `default_positions(segment_ids, offset=P)` (P = prefix length).
          segment_ids: `[B, T]` int, 0 = padding; defaults to all ones.
          prefix_embeddings: optional `[P, embed]` or `[1 or B, P, embed]`
            soft prompt prepended to the embedded tokens.

        Returns:
          `[B, T, vocab]` float32 logits of the tokens (prefix excluded).
        """
        logits, _ = self._forward(tokens, positions, segment_ids,
                                  prefix_embeddings, None, last_only=False)
        return logits

    def decode(self, tokens: jax.Array, *, positions: jax.Array, cache: KVCache,
               segment_ids: jax.Array | None = None,
               prefix_embeddings: jax.Array | None = None,
               last_only: bool = False,
               prefill: bool = False) -> tuple[jax.Array, KVCache]:
        """Appends a chunk to the cache; returns its logits and the new cache.

        Args:
          tokens: `[B, L]` int token ids, written (after the prefix, if any)
            at slot `cache.index` of every row.
          positions: `[B, L]` positions of the tokens (explicit: with left
            padding they come from the mask, not from the slot).
          cache: a `KVCache` with room for the prefix and L more slots.
          segment_ids: `[B, L]`, 0 = padding; defaults to all ones.
          prefix_embeddings: optional soft prompt, normally given only with
            the first chunk (the prompt).
          last_only: return only the last column's logits, `[B, 1, vocab]`
            (the prefill of left-padded prompts needs no others).
          prefill: the caller guarantees the cache is empty (index 0, as
            `init_cache` makes it): the chunk then attends within itself,
            without reading the cache's empty slots (the same result, less
            work). Static.

        Returns:
          `([B, L or 1, vocab] float32 logits, updated cache)`.
        """
        return self._forward(tokens, positions, segment_ids, prefix_embeddings,
                             cache, last_only=last_only, prefill=prefill)

    def _forward(self, tokens, positions, segment_ids, prefix, cache, *, last_only,
                 prefill=False):
        cfg = self.config
        batch, _ = tokens.shape
        if segment_ids is None:
            segment_ids = jnp.ones(tokens.shape, jnp.int32)
        segment_ids = segment_ids.astype(jnp.int32)
        x = jnp.take(jnp.asarray(self.embedding, cfg.dtype), tokens, axis=0)

        num_prefix = 0
        if prefix is not None:
            if prefix.ndim == 2:
                prefix = prefix[None]
            num_prefix = prefix.shape[1]
            if prefix.ndim != 3 or prefix.shape[0] not in (1, batch) or (
                    prefix.shape[2] != cfg.embed_dim):
                raise ValueError(f'prefix_embeddings must be [P, {cfg.embed_dim}] or '
                                 f'[1 or {batch}, P, {cfg.embed_dim}], got '
                                 f'{prefix.shape}')
            prefix = jnp.broadcast_to(prefix.astype(cfg.dtype),
                                      (batch, num_prefix, cfg.embed_dim))
            x = jnp.concatenate([prefix, x], axis=1)
        if positions is None:
            positions = default_positions(segment_ids, offset=num_prefix)
        if num_prefix:
            segment_ids = jnp.concatenate(
                [jnp.full((batch, num_prefix), PREFIX_SEGMENT, jnp.int32),
                 segment_ids], axis=1)
            positions = jnp.concatenate(
                [jnp.broadcast_to(jnp.arange(num_prefix, dtype=jnp.int32),
                                  (batch, num_prefix)), positions], axis=1)
        x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
        length = x.shape[1]

        if cache is None:
            index = jnp.zeros((), jnp.int32)
            k_segment_ids, kv = segment_ids, None
        else:
            index = cache.index
            k_segment_ids = jax.lax.dynamic_update_slice(
                cache.segment_ids, segment_ids, (0, index))
            kv = (cache.k, cache.v)
        if cache is None or prefill:  # [B, L, L]: attend within the chunk.
            mask = attention_mask(segment_ids, segment_ids, jnp.arange(length),
                                  jnp.arange(length))
        else:  # [B, L, S]: attend over the cache's slots.
            mask = attention_mask(segment_ids, k_segment_ids,
                                  index + jnp.arange(length),
                                  jnp.arange(cache.length))
        bias = attention_bias(mask)

        if cache is None:
            x, _ = self.layers(x, None, positions, bias, index)
        else:
            x, kv = self._unrolled_layers(x, kv, positions, bias, index)
        x = x[:, -1:] if last_only else x[:, num_prefix:]
        x = self.final_norm(x)
        if cfg.tie_embeddings:
            head = jnp.asarray(self.embedding, cfg.dtype).T
        else:
            head = jnp.asarray(self.lm_head, cfg.dtype)
        logits = (x @ head).astype(jnp.float32)
        logits = nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))

        if cache is None:
            return logits, None
        new_cache = KVCache(k=kv[0], v=kv[1], segment_ids=k_segment_ids,
                            index=index + length)
        return logits, new_cache

    def _unrolled_layers(self, x, kv, positions, bias, index):
        """The scanned layer stack as a Python loop over per-layer caches.

        Layer i runs `DecoderLayer` on row i of the stacked parameters and
        on its own cache arrays `kv[0][i]`, `kv[1][i]` (the module docstring
        says why). Returns `(x, (keys, values))`.
        """
        stacked = nn.meta.unbox(self.layers.variables['params'])
        layer = DecoderLayer(self.config, parent=None)
        keys, values = [], []
        for i in range(self.config.num_layers):
            params = jax.tree_util.tree_map(lambda p, i=i: p[i], stacked)
            x, (k, v) = layer.apply({'params': params}, x, (kv[0][i], kv[1][i]),
                                    positions, bias, index)
            keys.append(k)
            values.append(v)
        return x, (tuple(keys), tuple(values))


def init_params(config: TransformerConfig, rng: jax.Array) -> Any:
    """Freshly initialised parameters, boxed with their logical axis names.

    `lm.partitioning.strip_boxes` gives plain arrays; better, create them
    sharded with `lm.partitioning.create_sharded`, which also strips the boxes.
    """
    tokens = jnp.zeros((1, 1), jnp.int32)
    return Transformer(config).init({'params': rng}, tokens)['params']


def abstract_params(config: TransformerConfig) -> Any:
    """The boxed parameter tree as `jax.ShapeDtypeStruct`s; allocates nothing."""
    return jax.eval_shape(functools.partial(init_params, config),
                          jax.random.key(0))
