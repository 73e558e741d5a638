"""Imports Hugging Face Llama / Qwen2 checkpoints into `lm.model` parameters.

A checkpoint is a local folder as transformers' `save_pretrained` writes it
(and the hub serves it):

  * `config.json`, in either layout: pre-v5 (top-level `rope_theta`,
    `rope_scaling`) or transformers v5 (`rope_parameters`);
  * `model.safetensors`, or `model.safetensors.index.json` and the shards it
    names (the single file wins when both are present, as in transformers);
  * `tokenizer.json`, and optionally `tokenizer_config.json`.

`import_hf(path)` returns an `Imported(config, params, vocabulary)`. torch and
transformers are not needed: tensors are read by `safetensors` into numpy
(BF16 through `ml_dtypes`) and converted to the requested dtype.

Supported: `LlamaForCausalLM` and `Qwen2ForCausalLM` (the `architectures`
field, else `model_type` `llama` / `qwen2`) with SiLU MLPs, grouped-query
attention, Qwen2's QKV biases, tied or untied embeddings (a tied checkpoint
may omit `lm_head.weight`; if present it must equal the embedding), any
`rope_theta`, `rms_norm_eps` and `head_dim` (default hidden / heads), and an
embedding with more rows than the tokenizer has tokens.

Refused, with a `ValueError` naming the file and the cause: other
architectures (GPT-2, Mixtral and other MoE models, ...), rotary scaling
(`rope_type` other than `default`: llama3, yarn, linear, dynamic, ...),
sliding-window attention that is switched on, Llama `attention_bias` (it also
biases `o_proj`, which `lm.model` has no parameter for), `mlp_bias`, an
activation other than SiLU; a missing or wrongly shaped tensor; and any
tensor the model does not use, except rotary caches (`rotary_emb.inv_freq`)
that old checkpoints store. Missing files raise `FileNotFoundError`.

Parameter mapping (`L` layers, `E` hidden size, `N` query heads, `K` KV heads,
`D` head_dim, `M` intermediate size, `V` vocab size; tensors named
`model.layers.{i}.*` are stacked over i along our leading `layers` axis):

  HF tensor [HF shape]                       our parameter [shape]
  model.embed_tokens.weight [V, E]           embedding [V, E]
  ...input_layernorm.weight [E]              layers/attn_norm/scale [L, E]
  ...self_attn.q_proj.weight [N*D, E]        layers/attn/q_kernel [L, E, N, D]
  ...self_attn.k_proj.weight [K*D, E]        layers/attn/k_kernel [L, E, K, D]
  ...self_attn.v_proj.weight [K*D, E]        layers/attn/v_kernel [L, E, K, D]
  ...self_attn.q_proj.bias [N*D]             layers/attn/q_bias [L, N, D]
  ...self_attn.k_proj.bias [K*D]             layers/attn/k_bias [L, K, D]
  ...self_attn.v_proj.bias [K*D]             layers/attn/v_bias [L, K, D]
  ...self_attn.o_proj.weight [E, N*D]        layers/attn/o_kernel [L, N, D, E]
  ...post_attention_layernorm.weight [E]     layers/mlp_norm/scale [L, E]
  ...mlp.gate_proj.weight [M, E]             layers/mlp/gate_kernel [L, E, M]
  ...mlp.up_proj.weight [M, E]               layers/mlp/up_kernel [L, E, M]
  ...mlp.down_proj.weight [E, M]             layers/mlp/down_kernel [L, M, E]
  model.norm.weight [E]                      final_norm/scale [E]
  lm_head.weight [V, E]                      lm_head [E, V] (untied only)

The row `h * D + d` of a q/k/v projection is feature `d` of head `h`, the
layout `lm.model` also uses (rotate_half rotary pairs, query head h reading
KV head h // (N / K)), so heads are split by reshapes, never permuted.

EOS and PAD of the vocabulary (`lm.vocab` needs two distinct tokens):
  * EOS: config.json `eos_token_id` (the first, when a list), else
    tokenizer_config.json `eos_token`;
  * PAD: config.json `pad_token_id`, else tokenizer_config.json `pad_token`,
    each only when it differs from EOS; else the special token of lowest id
    in tokenizer.json that is neither EOS nor BOS (Llama 3's reserved tokens,
    Qwen2's `<|im_start|>`): padding is masked out and PAD ids are dropped
    when decoding, so any spare special token serves. No candidate at all
    raises a `ValueError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  Registers bfloat16 with numpy: safetensors reads BF16.
import numpy as np
import safetensors
import tokenizers

from lm import model as model_lib
from lm import partitioning
from lm import vocab as vocab_lib

ARCHITECTURES = {'LlamaForCausalLM': 'llama', 'Qwen2ForCausalLM': 'qwen2'}
SINGLE_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
_IGNORED_SUFFIXES = ('rotary_emb.inv_freq',)  # Rotary caches of old checkpoints.
_ROPE_KEYS = {'rope_type', 'type', 'rope_theta'}


class Imported(NamedTuple):
    """What `import_hf` returns; unpacks as `config, params, vocabulary`."""

    config: model_lib.TransformerConfig
    params: Any
    vocabulary: vocab_lib.TokenizerVocabulary


def import_hf(path: str, *, dtype: Any = jnp.float32,
              mesh: jax.sharding.Mesh | None = None,
              rules: partitioning.Rules | None = None) -> Imported:
    """Reads a Hugging Face checkpoint folder (see the module docstring).

    Args:
      path: the folder.
      dtype: storage and computation dtype of the returned config and params.
      mesh: when given, each parameter is placed in the sharding its logical
        axes get under `rules`; else on the default device.
      rules: the logical axis rule table; defaults to
        `partitioning.standard_logical_axis_rules()`.

    Returns:
      `Imported(config, params, vocabulary)`: params are plain `jax.Array`s
      with exactly the tree of `lm.model.init_params(config)`, unboxed.

    Raises:
      FileNotFoundError: the folder, config.json, tokenizer.json, the weights
        or a shard named by the index is missing.
      ValueError: unsupported architecture or feature, missing, misshapen or
        unused tensors, unusable special tokens (the message names the file
        or tensor).
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f'no Hugging Face checkpoint folder at {path}')
    config_path = os.path.join(path, 'config.json')
    hf_config = _read_json(config_path)
    config = config_from_hf(hf_config, dtype=dtype, source=config_path)
    vocabulary = load_vocabulary(path, hf_config)
    if vocabulary.vocab_size > config.vocab_size:
        raise ValueError(f'{path}: tokenizer.json has {vocabulary.vocab_size} '
                         f'tokens but the embedding only {config.vocab_size} rows')
    with _Tensors(path) as tensors:
        params = _load_params(tensors, config, mesh, rules)
    return Imported(config, params, vocabulary)


# -- config.json -> TransformerConfig. ---------------------------------------

def config_from_hf(hf_config: dict[str, Any], *, dtype: Any = jnp.float32,
                   source: str = 'config.json') -> model_lib.TransformerConfig:
    """Translates a Llama/Qwen2 `config.json` dict; refuses what we cannot run.

    `source` names the file in error messages. `max_len` is the checkpoint's
    `max_position_embeddings`.
    """
    family = _family(hf_config, source)
    _check_supported(hf_config, family, source)

    def required(key):
        if hf_config.get(key) is None:
            raise ValueError(f'{source}: missing {key!r}')
        return int(hf_config[key])

    embed_dim = required('hidden_size')
    num_heads = required('num_attention_heads')
    head_dim = hf_config.get('head_dim')
    if head_dim is None:
        if embed_dim % num_heads:
            raise ValueError(f'{source}: no head_dim, and hidden_size {embed_dim} '
                             f'is not a multiple of num_attention_heads {num_heads}')
        head_dim = embed_dim // num_heads
    return model_lib.TransformerConfig(
        vocab_size=required('vocab_size'),
        embed_dim=embed_dim,
        num_layers=required('num_hidden_layers'),
        num_heads=num_heads,
        num_kv_heads=int(hf_config.get('num_key_value_heads') or num_heads),
        head_dim=int(head_dim),
        mlp_dim=required('intermediate_size'),
        max_len=required('max_position_embeddings'),
        rope_theta=_rope_theta(hf_config, source),
        rms_norm_eps=float(hf_config.get('rms_norm_eps', 1e-6)),
        qkv_bias=family == 'qwen2',
        tie_embeddings=bool(hf_config.get('tie_word_embeddings', False)),
        dtype=dtype,
        param_dtype=dtype)


def _family(hf_config: dict[str, Any], source: str) -> str:
    """'llama' or 'qwen2', from `architectures`, else from `model_type`."""
    architectures = hf_config.get('architectures')
    supported = ', '.join(ARCHITECTURES)
    if architectures:
        if len(architectures) != 1 or architectures[0] not in ARCHITECTURES:
            raise ValueError(f'{source}: unsupported architecture {architectures}; '
                             f'supported: {supported}')
        return ARCHITECTURES[architectures[0]]
    model_type = hf_config.get('model_type')
    if model_type not in ARCHITECTURES.values():
        raise ValueError(f'{source}: unsupported model_type {model_type!r} (and no '
                         f'architectures field); supported: {supported}')
    return model_type


def _check_supported(hf_config: dict[str, Any], family: str, source: str) -> None:
    """Raises for features of the family that `lm.model` does not implement."""
    def refuse(what):
        raise ValueError(f'{source}: {what} is not supported by lm.model')

    if hf_config.get('hidden_act', 'silu') != 'silu':
        refuse(f'hidden_act {hf_config["hidden_act"]!r} (only silu)')
    if hf_config.get('mlp_bias'):
        refuse('mlp_bias')
    if family == 'llama' and hf_config.get('attention_bias'):
        refuse('attention_bias (Llama biases o_proj too)')
    if hf_config.get('use_sliding_window'):
        refuse('sliding-window attention (use_sliding_window)')
    layer_types = hf_config.get('layer_types') or []
    if any(t != 'full_attention' for t in layer_types):
        refuse(f'layer_types {sorted(set(layer_types))} (only full_attention)')


def _rope_theta(hf_config: dict[str, Any], source: str) -> float:
    """The rotary base; refuses any rotary scaling."""
    for key in ('rope_scaling', 'rope_parameters'):
        rope = hf_config.get(key) or {}
        rope_type = rope.get('rope_type', rope.get('type', 'default'))
        if rope_type != 'default' or set(rope) - _ROPE_KEYS:
            raise ValueError(f'{source}: {key} {rope} is not supported by lm.model '
                             '(only the default rotary embedding)')
    rope_parameters = hf_config.get('rope_parameters') or {}
    return float(rope_parameters.get('rope_theta',
                                     hf_config.get('rope_theta', 10_000.0)))


# -- tokenizer.json -> TokenizerVocabulary. ----------------------------------

def load_vocabulary(path: str, hf_config: dict[str, Any]) -> vocab_lib.TokenizerVocabulary:
    """The folder's tokenizer with EOS and PAD chosen as the module docstring says."""
    tokenizer_path = os.path.join(path, 'tokenizer.json')
    if not os.path.isfile(tokenizer_path):
        raise FileNotFoundError(f'no tokenizer.json in {path}')
    tokenizer = tokenizers.Tokenizer.from_file(tokenizer_path)
    tokenizer_config_path = os.path.join(path, 'tokenizer_config.json')
    tokenizer_config = {}
    if os.path.isfile(tokenizer_config_path):
        tokenizer_config = _read_json(tokenizer_config_path)

    def from_config(key):  # A token string from config.json's id, or None.
        token_id = hf_config.get(f'{key}_token_id')
        if isinstance(token_id, list):
            token_id = token_id[0] if token_id else None
        if token_id is None:
            return None
        token = tokenizer.id_to_token(int(token_id))
        if token is None:
            raise ValueError(f'{path}: config.json {key}_token_id {token_id} is '
                             'not in tokenizer.json')
        return token

    def from_tokenizer_config(key):  # A string, or an AddedToken dict.
        token = tokenizer_config.get(f'{key}_token')
        return token['content'] if isinstance(token, dict) else token

    eos = from_config('eos') or from_tokenizer_config('eos')
    if eos is None:
        raise ValueError(f'{path}: no EOS token (config.json has no eos_token_id, '
                         'tokenizer_config.json no eos_token)')
    bos = from_config('bos') or from_tokenizer_config('bos')
    candidates = [from_config('pad'), from_tokenizer_config('pad')] + [
        added.content for _, added in sorted(
            tokenizer.get_added_tokens_decoder().items())
        if added.special and added.content != bos]
    pad = next((token for token in candidates if token not in (None, eos)), None)
    if pad is None:
        raise ValueError(f'{path}: no PAD token distinct from EOS {eos!r}: set '
                         'pad_token_id in config.json or add a special token')
    return vocab_lib.TokenizerVocabulary(tokenizer, eos_token=eos, pad_token=pad)


# -- safetensors -> params. --------------------------------------------------

class _Tensors(contextlib.ExitStack):
    """The tensors of a checkpoint folder by name, with use tracking.

    Every tensor of every weight file is listed (with an index, each listed
    tensor must be in the shard the index names). `get` checks shapes and
    records use; `unused` lists what was never read.
    """

    def __init__(self, path: str):
        super().__init__()
        self._handles, self._file_of, self._used = {}, {}, set()
        try:
            self.files = self._open(path)
        except BaseException:
            self.close()
            raise

    def _open(self, path: str) -> list[str]:
        """Opens and lists every weight file; returns their names."""
        index_path = os.path.join(path, INDEX_FILE)
        if os.path.isfile(os.path.join(path, SINGLE_FILE)):
            weight_map = None
            files = [SINGLE_FILE]
        elif os.path.isfile(index_path):
            weight_map = _read_json(index_path).get('weight_map')
            if not isinstance(weight_map, dict):
                raise ValueError(f'{index_path}: no weight_map')
            files = sorted(set(weight_map.values()))
        else:
            raise FileNotFoundError(f'no weights in {path}: neither {SINGLE_FILE} '
                                    f'nor {INDEX_FILE}')
        for file in files:
            file_path = os.path.join(path, file)
            if not os.path.isfile(file_path):
                raise FileNotFoundError(f'missing weight file {file_path}')
            handle = self.enter_context(safetensors.safe_open(file_path, 'np'))
            self._handles[file] = handle
            for name in handle.keys():
                if name in self._file_of:
                    raise ValueError(f'{path}: tensor {name} is in both '
                                     f'{self._file_of[name]} and {file}')
                self._file_of[name] = file
        for name, file in (weight_map or {}).items():
            if self._file_of.get(name) != file:
                raise ValueError(f'{index_path} puts tensor {name} in {file}, '
                                 'which does not hold it')
        return files

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The tensor `name`, which must have `shape`; marks it used."""
        file = self._file_of.get(name)
        if file is None:
            raise ValueError(f'missing tensor {name} (not in {", ".join(self.files)})')
        handle = self._handles[file]
        got = tuple(handle.get_slice(name).get_shape())
        if got != tuple(shape):
            raise ValueError(f'tensor {name} in {file} has shape {got}, expected '
                             f'{tuple(shape)}')
        self._used.add(name)
        return handle.get_tensor(name)

    def unused(self) -> list[str]:
        """Tensors never read, except the ignorable rotary caches."""
        return sorted(name for name in self._file_of
                      if name not in self._used and not name.endswith(_IGNORED_SUFFIXES))


@dataclasses.dataclass(frozen=True)
class _Rule:
    """One of our parameters and the HF tensor(s) it comes from.

    Attributes:
      hf_name: the HF tensor; with `{i}`, one per layer, stacked on axis 0.
      hf_shape: its shape (per layer).
      to_ours: HF layout -> our layout (per layer).
    """

    hf_name: str
    hf_shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray]


def _same(w: np.ndarray) -> np.ndarray:
    return w


def _transpose(w: np.ndarray) -> np.ndarray:
    return w.T


def _heads_in(heads: int, head_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """`[heads * head_dim, E]` (torch Linear) -> `[E, heads, head_dim]`."""
    return lambda w: w.reshape(heads, head_dim, w.shape[-1]).transpose(2, 0, 1)


def _heads_bias(heads: int, head_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """`[heads * head_dim]` -> `[heads, head_dim]`."""
    return lambda b: b.reshape(heads, head_dim)


def _heads_out(heads: int, head_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """`[E, heads * head_dim]` (torch Linear) -> `[heads, head_dim, E]`."""
    return lambda w: w.T.reshape(heads, head_dim, w.shape[0])


def parameter_rules(config: model_lib.TransformerConfig) -> dict[tuple[str, ...], _Rule]:
    """Our parameter path -> its HF source (the table in the module docstring)."""
    e, n, k, d = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim
    m, v = config.mlp_dim, config.vocab_size
    layer = 'model.layers.{i}.'
    rules = {
        ('embedding',): _Rule('model.embed_tokens.weight', (v, e), _same),
        ('layers', 'attn_norm', 'scale'): _Rule(
            layer + 'input_layernorm.weight', (e,), _same),
        ('layers', 'attn', 'q_kernel'): _Rule(
            layer + 'self_attn.q_proj.weight', (n * d, e), _heads_in(n, d)),
        ('layers', 'attn', 'k_kernel'): _Rule(
            layer + 'self_attn.k_proj.weight', (k * d, e), _heads_in(k, d)),
        ('layers', 'attn', 'v_kernel'): _Rule(
            layer + 'self_attn.v_proj.weight', (k * d, e), _heads_in(k, d)),
        ('layers', 'attn', 'o_kernel'): _Rule(
            layer + 'self_attn.o_proj.weight', (e, n * d), _heads_out(n, d)),
        ('layers', 'mlp_norm', 'scale'): _Rule(
            layer + 'post_attention_layernorm.weight', (e,), _same),
        ('layers', 'mlp', 'gate_kernel'): _Rule(
            layer + 'mlp.gate_proj.weight', (m, e), _transpose),
        ('layers', 'mlp', 'up_kernel'): _Rule(
            layer + 'mlp.up_proj.weight', (m, e), _transpose),
        ('layers', 'mlp', 'down_kernel'): _Rule(
            layer + 'mlp.down_proj.weight', (e, m), _transpose),
        ('final_norm', 'scale'): _Rule('model.norm.weight', (e,), _same),
    }
    if config.qkv_bias:
        for name, heads in (('q', n), ('k', k), ('v', k)):
            rules[('layers', 'attn', f'{name}_bias')] = _Rule(
                layer + f'self_attn.{name}_proj.bias', (heads * d,),
                _heads_bias(heads, d))
    if not config.tie_embeddings:
        rules[('lm_head',)] = _Rule('lm_head.weight', (v, e), _transpose)
    return rules


def _load_params(tensors: _Tensors, config: model_lib.TransformerConfig,
                 mesh: jax.sharding.Mesh | None,
                 rules: partitioning.Rules | None) -> Any:
    """Every parameter of the model, read, converted and placed; all tensors used."""
    boxed = model_lib.abstract_params(config)
    abstract = partitioning.strip_boxes(boxed)
    trees = (abstract,)
    if mesh is not None:
        trees += (partitioning.logical_shardings(
            boxed, mesh, rules or partitioning.standard_logical_axis_rules()),)
    by_path = parameter_rules(config)

    def load(key_path, leaf, sharding=None):
        rule = by_path[tuple(key.key for key in key_path)]
        if '{i}' not in rule.hf_name:
            value = rule.to_ours(tensors.get(rule.hf_name, rule.hf_shape))
        else:
            value = np.empty(leaf.shape, leaf.dtype)
            for i in range(config.num_layers):
                value[i] = rule.to_ours(
                    tensors.get(rule.hf_name.format(i=i), rule.hf_shape))
        return jax.device_put(np.asarray(value, leaf.dtype), sharding)

    params = jax.tree_util.tree_map_with_path(load, *trees)  # Leaf by leaf.
    if config.tie_embeddings and 'lm_head.weight' in tensors:
        head = tensors.get('lm_head.weight', (config.vocab_size, config.embed_dim))
        embedding = tensors.get('model.embed_tokens.weight', head.shape)
        if not np.array_equal(head, embedding):
            raise ValueError('tie_word_embeddings is set but lm_head.weight differs '
                             'from model.embed_tokens.weight')
    unused = tensors.unused()
    if unused:
        raise ValueError(f'{len(unused)} tensors the model does not use: '
                         f'{", ".join(unused[:8])}')
    return params


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'missing {path}')
    with open(path, encoding='utf-8') as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f'{path} is not valid JSON: {error}') from error
