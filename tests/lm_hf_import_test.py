"""lm.hf_import: logit parity with transformers on committed tiny checkpoints, errors.

The fixtures under tests/fixtures/hf/ come from `make_fixtures.py` there
(torch + transformers); these tests need neither.
"""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import tokenizers

from lm import hf_import
from lm import model as model_lib
from lm import partitioning
from lm import testing

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'hf')
# What each fixture must exercise: (num_heads, num_kv_heads, qkv_bias, tied).
VARIANTS = {
    'llama_gqa_untied': (4, 2, False, False),
    'qwen2_bias_tied': (6, 2, True, True),
    'llama_mha_tied_sharded': (4, 4, False, True),
}
PARITY_ATOL = 1e-4  # Issue 4: max abs logit difference in float32.


@functools.lru_cache(maxsize=None)
def _imported(name):
    return hf_import.import_hf(os.path.join(FIXTURES, name))


def _expected(name):
    return np.load(os.path.join(FIXTURES, name, 'expected.npz'))


def _apply(config, method=None):
    """`Transformer(config).apply` (or its `method`), jitted."""
    return jax.jit(
        lambda params, tokens, **kw: model_lib.Transformer(config).apply(
            {'params': params}, tokens, method=method, **kw),
        compiler_options=testing.FAST_COMPILE)


# -- Parity. -----------------------------------------------------------------

@pytest.mark.parametrize('name', VARIANTS)
def test_full_forward_matches_transformers(name):
    config, params, _ = _imported(name)
    heads, kv_heads, bias, tied = VARIANTS[name]
    assert (config.num_heads, config.num_kv_heads, config.qkv_bias,
            config.tie_embeddings) == (heads, kv_heads, bias, tied)
    expected = _expected(name)
    logits = np.asarray(_apply(config)(params, expected['input_ids']))
    assert logits.shape == expected['logits'].shape
    np.testing.assert_allclose(logits, expected['logits'], atol=PARITY_ATOL, rtol=0)


@pytest.mark.parametrize('name', VARIANTS)
def test_cached_decode_matches_transformers(name):
    """Prefill 7 tokens, then decode the other 5 one at a time."""
    config, params, _ = _imported(name)
    expected = _expected(name)
    tokens = expected['input_ids']
    batch, length = tokens.shape
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), tokens.shape)
    decode = _apply(config, method=model_lib.Transformer.decode)
    cache = model_lib.init_cache(config, batch, length)
    chunks = []
    for start, stop in [(0, 7)] + [(col, col + 1) for col in range(7, length)]:
        logits, cache = decode(params, tokens[:, start:stop],
                               positions=positions[:, start:stop], cache=cache)
        chunks.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), expected['logits'],
                               atol=PARITY_ATOL, rtol=0)


@pytest.mark.parametrize('name', VARIANTS)
def test_parameter_count_and_tree_equal_the_model(name):
    config, params, _ = _imported(name)
    assert partitioning.count_params(params) == int(_expected(name)['num_params'])
    abstract = partitioning.strip_boxes(model_lib.abstract_params(config))
    assert jax.tree.structure(params) == jax.tree.structure(abstract)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(abstract)):
        assert (got.shape, got.dtype) == (want.shape, want.dtype)


@pytest.mark.parametrize('name', VARIANTS)
def test_tokenizer_encodes_like_transformers(name):
    """EOS/PAD: from config.json, tokenizer_config.json, or the first spare special."""
    _, _, vocabulary = _imported(name)
    expected = _expected(name)
    text = str(expected['text'])
    assert vocabulary.encode(text) == expected['text_ids'].tolist()
    assert vocabulary.decode(vocabulary.encode(text) + [vocabulary.eos_id]) == text
    assert (vocabulary.eos_token, vocabulary.pad_token) == ('<eos>', '<pad>')
    assert vocabulary.vocab_size == 300


def test_hub_qwen2_0_5b_config_translates():
    """Qwen2.5-0.5B's config.json (pre-v5 layout, sliding window off)."""
    hub_config = {
        'architectures': ['Qwen2ForCausalLM'], 'attention_dropout': 0.0,
        'bos_token_id': 151643, 'eos_token_id': 151643, 'hidden_act': 'silu',
        'hidden_size': 896, 'initializer_range': 0.02, 'intermediate_size': 4864,
        'max_position_embeddings': 32768, 'max_window_layers': 24,
        'model_type': 'qwen2', 'num_attention_heads': 14, 'num_hidden_layers': 24,
        'num_key_value_heads': 2, 'rms_norm_eps': 1e-06, 'rope_theta': 1000000.0,
        'sliding_window': 32768, 'tie_word_embeddings': True,
        'torch_dtype': 'bfloat16', 'use_cache': True, 'use_mrope': False,
        'use_sliding_window': False, 'vocab_size': 151936}
    assert hf_import.config_from_hf(hub_config) == testing.qwen2_0_5b_config()


def test_bfloat16_weights_and_dtype(tmp_path):
    """BF16 safetensors load (via ml_dtypes); `dtype` sets params and config."""
    folder = _copy(tmp_path, 'llama_gqa_untied')
    _edit_tensors(folder, lambda tensors: {
        name: value.astype(jnp.bfloat16) for name, value in tensors.items()})
    config, params, _ = hf_import.import_hf(folder)
    _, reference, _ = _imported('llama_gqa_untied')
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
        assert got.dtype == jnp.float32
        np.testing.assert_array_equal(got, want.astype(jnp.bfloat16).astype(jnp.float32))
    config, params, _ = hf_import.import_hf(folder, dtype=jnp.bfloat16)
    assert config.dtype == config.param_dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}


def test_mesh_places_every_parameter_by_its_logical_axes():
    mesh = partitioning.make_mesh(1)
    _, params, _ = hf_import.import_hf(
        os.path.join(FIXTURES, 'qwen2_bias_tied'), mesh=mesh)
    for leaf in jax.tree.leaves(params):
        assert leaf.sharding.mesh == mesh


def test_rotary_caches_are_ignored(tmp_path):
    folder = _copy(tmp_path, 'llama_gqa_untied')
    _edit_tensors(folder, lambda tensors: {
        **tensors,
        'model.layers.0.self_attn.rotary_emb.inv_freq': np.ones(8, np.float32)})
    hf_import.import_hf(folder)


# -- Errors. -----------------------------------------------------------------

def _copy(tmp_path, name):
    folder = str(tmp_path / name)
    shutil.copytree(os.path.join(FIXTURES, name), folder)
    return folder


def _edit_config(folder, changes):
    """Applies `changes` to config.json; a None value deletes the key."""
    path = os.path.join(folder, 'config.json')
    with open(path) as f:
        config = json.load(f)
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    with open(path, 'w') as f:
        json.dump(config, f)


def _edit_tensors(folder, edit, file='model.safetensors'):
    path = os.path.join(folder, file)
    tensors = edit(safetensors.numpy.load_file(path))
    safetensors.numpy.save_file(tensors, path, metadata={'format': 'pt'})


CONFIG_ERRORS = {
    'gpt2': ({'architectures': ['GPT2LMHeadModel']},
             r"unsupported architecture \['GPT2LMHeadModel'\]"),
    'moe': ({'architectures': ['MixtralForCausalLM']},
            r"unsupported architecture \['MixtralForCausalLM'\]"),
    'model_type': ({'architectures': None, 'model_type': 'gpt2'},
                   "unsupported model_type 'gpt2'"),
    'rope_type': ({'rope_parameters': {'rope_type': 'llama3', 'factor': 8.0,
                                       'rope_theta': 5e5}},
                  r'rope_parameters .* not supported'),
    'legacy_rope_scaling': ({'rope_scaling': {'type': 'linear', 'factor': 2.0}},
                            r'rope_scaling .* not supported'),
    'sliding_window': ({'use_sliding_window': True}, 'sliding-window attention'),
    'layer_types': ({'layer_types': ['full_attention', 'sliding_attention']},
                    'layer_types'),
    'attention_bias': ({'attention_bias': True}, 'attention_bias'),
    'activation': ({'hidden_act': 'gelu'}, "hidden_act 'gelu'"),
    'missing_key': ({'hidden_size': None}, "missing 'hidden_size'"),
    'no_eos': ({'eos_token_id': None}, 'no EOS token'),
    'eos_not_in_tokenizer': ({'eos_token_id': 5000},
                             'eos_token_id 5000 is not in tokenizer.json'),
    'small_embedding': ({'vocab_size': 100},
                        'tokenizer.json has 300 tokens but the embedding only 100'),
}


@pytest.mark.parametrize('case', CONFIG_ERRORS)
def test_unsupported_configs_are_refused_by_name(tmp_path, case):
    changes, message = CONFIG_ERRORS[case]
    folder = _copy(tmp_path, 'llama_gqa_untied')
    _edit_config(folder, changes)
    with pytest.raises(ValueError, match=message) as error:
        hf_import.import_hf(folder)
    assert folder in str(error.value)


@pytest.mark.parametrize('name, file', [
    ('llama_gqa_untied', 'config.json'),
    ('llama_gqa_untied', 'tokenizer.json'),
    ('llama_gqa_untied', 'model.safetensors'),
    ('llama_mha_tied_sharded', 'model-00002-of-00003.safetensors'),
])
def test_missing_files_are_named(tmp_path, name, file):
    folder = _copy(tmp_path, name)
    os.remove(os.path.join(folder, file))
    expected = 'neither model.safetensors' if file == 'model.safetensors' else file
    with pytest.raises(FileNotFoundError, match=expected):
        hf_import.import_hf(folder)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='no Hugging Face checkpoint folder'):
        hf_import.import_hf(str(tmp_path / 'nowhere'))


def test_misshapen_tensor_is_named(tmp_path):
    folder = _copy(tmp_path, 'llama_gqa_untied')
    name = 'model.layers.1.self_attn.q_proj.weight'
    _edit_tensors(folder, lambda tensors: {**tensors, name: tensors[name].T.copy()})
    with pytest.raises(ValueError, match=f'tensor {name} in model.safetensors has '
                       r'shape \(32, 64\), expected \(64, 32\)'):
        hf_import.import_hf(folder)


def test_missing_tensor_is_named(tmp_path):
    folder = _copy(tmp_path, 'qwen2_bias_tied')
    name = 'model.layers.1.self_attn.k_proj.bias'
    _edit_tensors(folder, lambda tensors: {
        key: value for key, value in tensors.items() if key != name})
    with pytest.raises(ValueError, match=f'missing tensor {name}'):
        hf_import.import_hf(folder)


def test_unused_tensor_is_named(tmp_path):
    folder = _copy(tmp_path, 'llama_gqa_untied')
    name = 'model.layers.0.self_attn.o_proj.bias'
    _edit_tensors(folder, lambda tensors: {**tensors, name: np.zeros(32, np.float32)})
    with pytest.raises(ValueError, match=f'tensors the model does not use: {name}'):
        hf_import.import_hf(folder)


def test_tied_checkpoint_with_a_different_head_is_refused(tmp_path):
    folder = _copy(tmp_path, 'qwen2_bias_tied')
    _edit_tensors(folder, lambda tensors: {
        **tensors, 'lm_head.weight': tensors['model.embed_tokens.weight'] + 1.0})
    with pytest.raises(ValueError, match='lm_head.weight differs'):
        hf_import.import_hf(folder)
    _edit_tensors(folder, lambda tensors: {
        **tensors, 'lm_head.weight': tensors['model.embed_tokens.weight']})
    hf_import.import_hf(folder)  # An explicit copy of the embedding is fine.


def test_index_naming_the_wrong_shard_is_refused(tmp_path):
    folder = _copy(tmp_path, 'llama_mha_tied_sharded')
    path = os.path.join(folder, 'model.safetensors.index.json')
    with open(path) as f:
        index = json.load(f)
    index['weight_map']['model.norm.weight'] = 'model-00001-of-00003.safetensors'
    with open(path, 'w') as f:
        json.dump(index, f)
    with pytest.raises(ValueError, match='puts tensor model.norm.weight in '
                       'model-00001-of-00003.safetensors, which does not hold it'):
        hf_import.import_hf(folder)


def test_pad_must_differ_from_eos(tmp_path):
    """With EOS the only special token, no PAD can be chosen."""
    folder = _copy(tmp_path, 'llama_mha_tied_sharded')
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {'a': 0, '<eos>': 1}, unk_token='a'))
    tokenizer.add_special_tokens(['<eos>'])
    tokenizer.save(os.path.join(folder, 'tokenizer.json'))
    _edit_config(folder, {'bos_token_id': None, 'pad_token_id': 1})
    with pytest.raises(ValueError, match="no PAD token distinct from EOS '<eos>'"):
        hf_import.import_hf(folder)
