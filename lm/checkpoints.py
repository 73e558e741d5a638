"""orbax checkpoints of LM parameters and soft prompts.

A checkpoint is an orbax `StandardCheckpointer` directory holding one pytree
(model params, or a soft prompt). `restore` takes an abstract tree
(`jax.ShapeDtypeStruct`s, with shardings where the caller wants them) so that
arrays land directly on the right devices in the requested dtypes, and checks
that the stored tree has exactly the expected structure and shapes.

`load_hf` serves a Hugging Face checkpoint folder (read by
`lm.hf_import.import_hf`) as a `lm.serving.LanguageModel`.

An *export* (what `lm.pretrain` writes, and what the embedded default model
is) is a folder of three plain files, no pickle: `config.json` (the
`TransformerConfig`, the vocabulary's EOS/PAD tokens and `LanguageModel`
options such as stop strings), `params.safetensors` (one tensor per
parameter, named by its path, e.g. `layers/attn/q_kernel`) and
`tokenizer.json`. `export` writes one, `load_exported` serves one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy

from lm import hf_import
from lm import model as model_lib
from lm import partitioning, serving
from lm import vocab as vocab_lib

EXPORT_FILES = ('config.json', 'params.safetensors', 'tokenizer.json')


def save(directory: str, tree: Any, *, overwrite: bool = False) -> None:
    """Writes `tree` to `directory`; never leaves a half-written checkpoint.

    orbax writes into a temporary folder and renames it when complete. With
    `overwrite`, the new checkpoint is completed beside the old one and then
    swapped in.
    """
    directory = os.path.abspath(directory)
    exists = os.path.exists(directory)
    if exists and not overwrite:
        raise FileExistsError(f'checkpoint already exists: {directory}')
    target = directory + '.new' if exists else directory
    shutil.rmtree(directory + '.new', ignore_errors=True)  # A crashed attempt.
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, tree)
    checkpointer.wait_until_finished()
    if exists:
        old = directory + '.old'
        os.replace(directory, old)
        os.replace(target, directory)
        shutil.rmtree(old)


def restore(directory: str, abstract_tree: Any | None = None) -> Any:
    """Reads a checkpoint; with `abstract_tree`, checks and places every leaf.

    Raises:
      FileNotFoundError: no checkpoint at `directory`.
      ValueError: the stored tree differs from `abstract_tree` in structure
        or shape (the message names the first differing leaf). Dtypes are
        converted to the abstract tree's (e.g. float32 stored, bfloat16 served).
    """
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f'no checkpoint at {directory}')
    checkpointer = ocp.StandardCheckpointer()
    if abstract_tree is not None:
        stored = checkpointer.metadata(directory).item_metadata.tree
        _check_matches(stored, abstract_tree)
    return checkpointer.restore(directory, abstract_tree)


def _check_matches(stored: Any, expected: Any) -> None:
    stored_leaves = dict(jax.tree_util.tree_leaves_with_path(stored))
    expected_leaves = dict(jax.tree_util.tree_leaves_with_path(expected))
    names = lambda leaves: {jax.tree_util.keystr(k) for k in leaves}
    missing = names(expected_leaves) - names(stored_leaves)
    extra = names(stored_leaves) - names(expected_leaves)
    if missing or extra:
        raise ValueError(f'checkpoint tree differs: missing {sorted(missing)[:5]}, '
                         f'unexpected {sorted(extra)[:5]}')
    stored_by_name = {jax.tree_util.keystr(k): v for k, v in stored_leaves.items()}
    for key, leaf in expected_leaves.items():
        name = jax.tree_util.keystr(key)
        got = stored_by_name[name]
        if tuple(got.shape) != tuple(leaf.shape):
            raise ValueError(f'checkpoint leaf {name} has shape {tuple(got.shape)}, '
                             f'expected {tuple(leaf.shape)}')


def load_hf(path: str, *, dtype: Any = jnp.float32,
            mesh: jax.sharding.Mesh | None = None,
            **options) -> serving.LanguageModel:
    """A Llama/Qwen2-family Hugging Face checkpoint folder, served.

    Parameters go straight to their shardings on `mesh` (default:
    `serving.default_mesh(batch_size)`); `options` are `LanguageModel` fields
    (batch_size, stop_strings, top_k, top_p, tuning). Errors as
    `hf_import.import_hf`.
    """
    mesh = mesh or serving.default_mesh(
        options.get('batch_size', serving.LanguageModel.batch_size))
    config, params, vocabulary = hf_import.import_hf(path, dtype=dtype, mesh=mesh)
    return serving.LanguageModel.create(config, params, vocabulary, mesh=mesh,
                                        **options)


def _param_name(path: Any) -> str:
    return '/'.join(str(getattr(k, 'key', k)) for k in path)


def export(directory: str, config: model_lib.TransformerConfig, params: Any,
           vocab: vocab_lib.TokenizerVocabulary, *,
           serving_options: dict[str, Any] | None = None) -> None:
    """Writes an export folder (module docstring); replaces an existing one.

    Args:
      directory: the folder (created).
      config: the model's config; parameters are stored in its `param_dtype`.
      params: plain (unboxed) parameters of `config`.
      vocab: the tokenizer vocabulary.
      serving_options: JSON-able `LanguageModel` options (`stop_strings`,
        `batch_size`, `top_k`, `top_p`) that `load_exported` applies.
    """
    os.makedirs(directory, exist_ok=True)
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    fields['dtype'] = np.dtype(config.dtype).name
    fields['param_dtype'] = np.dtype(config.param_dtype).name
    record = {'model': fields, 'eos_token': vocab.eos_token,
              'pad_token': vocab.pad_token,
              'serving_options': dict(serving_options or {})}
    tensors = {_param_name(path): np.asarray(leaf, np.dtype(config.param_dtype))
               for path, leaf in jax.tree_util.tree_leaves_with_path(
                   partitioning.strip_boxes(params))}
    for name, write in (
            ('params.safetensors',
             lambda p: safetensors.numpy.save_file(tensors, p)),
            ('tokenizer.json', vocab.save),
            ('config.json', lambda p: _write_json(p, record))):
        path = os.path.join(directory, name)
        write(path + '.tmp')
        os.replace(path + '.tmp', path)


def _write_json(path: str, record: Any) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=2)


def load_exported(directory: str, *, mesh: jax.sharding.Mesh | None = None,
                  **options) -> serving.LanguageModel:
    """Serves an export folder. `options` (LanguageModel fields) override the
    stored serving options.

    Raises:
      FileNotFoundError: a file of the export is missing.
      ValueError: the parameters do not match the stored config.
    """
    for name in EXPORT_FILES:
        if not os.path.isfile(os.path.join(directory, name)):
            raise FileNotFoundError(f'{directory} is not an exported model: '
                                    f'{name} is missing')
    with open(os.path.join(directory, 'config.json'), encoding='utf-8') as f:
        record = json.load(f)
    config = model_lib.TransformerConfig(**record['model'])
    vocab = vocab_lib.TokenizerVocabulary.from_file(
        os.path.join(directory, 'tokenizer.json'), eos_token=record['eos_token'],
        pad_token=record['pad_token'])
    stored = safetensors.numpy.load_file(
        os.path.join(directory, 'params.safetensors'))
    abstract = partitioning.strip_boxes(model_lib.abstract_params(config))
    expected = {_param_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(abstract)}
    if set(stored) != expected:
        raise ValueError(f'exported parameters differ from the config: missing '
                         f'{sorted(expected - set(stored))[:5]}, unexpected '
                         f'{sorted(set(stored) - expected)[:5]}')

    def fill(path, leaf):
        array = stored[_param_name(path)]
        if array.shape != leaf.shape:
            raise ValueError(f'exported parameter {_param_name(path)} has shape '
                             f'{array.shape}, expected {leaf.shape}')
        return array.astype(leaf.dtype)

    params = jax.tree_util.tree_map_with_path(fill, abstract)
    stored_options = dict(record.get('serving_options', {}))
    if 'stop_strings' in stored_options:
        stored_options['stop_strings'] = tuple(stored_options['stop_strings'])
    return serving.LanguageModel.create(config, params, vocab, mesh=mesh,
                                        **{**stored_options, **options})
