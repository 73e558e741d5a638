"""orbax checkpoints of LM training states and soft prompts, and exports.

`CheckpointManager` keeps numbered checkpoints of one pytree (a training
state by step, a soft prompt by round) in a folder, crash-safe.

`load_hf` serves a Hugging Face checkpoint folder (read by
`lm.hf_import.import_hf`) as a `lm.serving.LanguageModel`.

An *export* (what `lm.pretrain` writes, and what the embedded default model
is) is a folder of three plain files, no pickle: `config.json` (the
`TransformerConfig`, the vocabulary's EOS/PAD tokens and `LanguageModel`
options such as stop strings), `params.safetensors` (one tensor per
parameter, named by its path, e.g. `layers/attn/q_kernel`) and
`tokenizer.json`. `export` writes one, `load_exported` serves one, and
`load_default` serves the embedded default model (`lm/default/`).
"""

from __future__ import annotations

import dataclasses
import json
import os
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
# The embedded default model: an export shipped as package data.
DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 'default')


class CheckpointManager:
    """Numbered checkpoints of one pytree in a folder (orbax's
    `CheckpointManager`, one subfolder per step).

    A save is atomic: orbax writes into a temporary folder and renames it
    once complete, so a crash at any moment leaves every earlier complete
    checkpoint readable, and an unfinished one is never listed. The newest
    `max_to_keep` are kept (None: all). `restore` takes an abstract tree
    (`jax.ShapeDtypeStruct`s, with shardings where the caller wants them) so
    that arrays land directly on the right devices in the requested dtypes,
    and checks that the stored tree has exactly the expected structure and
    shapes.
    """

    def __init__(self, directory: str, *, max_to_keep: int | None = None):
        self.directory = os.path.abspath(directory)
        # This process's own checkpoints: the LM runs in one process (in a
        # multi-process search, process 0), so orbax must not wait for the
        # others at its barriers.
        this_process = jax.process_index()
        os.makedirs(self.directory, exist_ok=True)  # (orbax's `create` syncs.)
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=False,
                enable_async_checkpointing=False,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    primary_host=this_process,
                    active_processes={this_process})),
            item_handlers=ocp.StandardCheckpointHandler())

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any) -> None:
        """Writes `tree` as checkpoint `step`, replacing one of that step."""
        if step in self._manager.all_steps():
            self._manager.delete(step)
        # As host numpy arrays: in a multi-process run orbax refuses arrays
        # that live on one process's devices only.
        tree = jax.device_get(tree)
        self._manager.save(step, args=ocp.args.StandardSave(tree))
        self._manager.wait_until_finished()

    def restore(self, step: int, abstract_tree: Any | None = None) -> Any:
        """Reads checkpoint `step`; with `abstract_tree`, checks and places
        every leaf.

        Raises:
          FileNotFoundError: no checkpoint of that step.
          ValueError: the stored tree differs from `abstract_tree` in
            structure or shape (the message names the first differing leaf).
            Dtypes are converted to the abstract tree's (e.g. float32 stored,
            bfloat16 served).
        """
        if step not in self._manager.all_steps():
            raise FileNotFoundError(
                f'no checkpoint of step {step} in {self.directory}')
        if abstract_tree is not None:
            _check_matches(self._manager.item_metadata(step).tree,
                           abstract_tree)
        return self._manager.restore(
            step, args=ocp.args.StandardRestore(abstract_tree))

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


class CheckpointNotFoundError(FileNotFoundError, ValueError):
    """A checkpoint folder or one of its files is missing.

    Also a `ValueError`: the path is configuration, and the binaries report a
    configured value that is refused as a configuration error, without a
    traceback.
    """


HF_FOLDER_HINT = ('a Hugging Face checkpoint folder holds config.json, '
                  'tokenizer.json and model.safetensors (or '
                  'model.safetensors.index.json and its shards), as '
                  '`hf download REPO --local-dir FOLDER` writes it '
                  '(README: "A Hugging Face model as the LM")')


def load_hf(path: str, *, dtype: Any = jnp.float32,
            mesh: jax.sharding.Mesh | None = None, max_len: int | None = None,
            model_parallelism: int = 1,
            **options) -> serving.LanguageModel:
    """A Llama/Qwen2-family Hugging Face checkpoint folder, served.

    Args:
      path: the folder.
      dtype: of parameters and activations (a dtype or its name, e.g.
        'bfloat16').
      mesh: parameters go straight to their shardings on it; default:
        `serving.default_mesh(batch_size, model_parallelism=...)`.
      max_len: the longest sequence served (soft prompt + prompt + new
        tokens), which bounds the KV cache and the prompts; default and upper
        limit: the checkpoint's `max_position_embeddings`.
      model_parallelism: devices per model replica in the default mesh.
      **options: `LanguageModel` fields (batch_size, stop_strings, top_k, top_p,
        copy_weight, ..., tuning); the copy prior is off unless `copy_weight`
        is given.

    Raises:
      CheckpointNotFoundError: no path (e.g. an unset gin macro), or the folder
        or a file of it is missing.
      ValueError: as `hf_import.import_hf`, or `max_len` beyond the
        checkpoint's.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise CheckpointNotFoundError(
            'no Hugging Face checkpoint folder given (with gin/lm/hf.gin: '
            '--gin_bindings="HF_CHECKPOINT=\'/path/to/folder\'"); '
            + HF_FOLDER_HINT)
    mesh = mesh or serving.default_mesh(
        options.get('batch_size', serving.LanguageModel.batch_size),
        model_parallelism=model_parallelism)
    try:
        config, params, vocabulary = hf_import.import_hf(path, dtype=dtype,
                                                         mesh=mesh)
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(f'{e}; {HF_FOLDER_HINT}') from None
    if max_len is not None:
        if not 0 < max_len <= config.max_len:
            raise ValueError(f'max_len={max_len} must be in [1, {config.max_len}] '
                             f'(max_position_embeddings of {path})')
        config = dataclasses.replace(config, max_len=max_len)
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


def load_default(*, mesh: jax.sharding.Mesh | None = None,
                 **options) -> serving.LanguageModel:
    """The embedded default model (package data in `lm/default/`), served.

    Its stored options apply (stop strings at the start of another example
    header), unless `options` (LanguageModel fields) override them.

    Raises:
      FileNotFoundError: the package was installed without the model files.
    """
    return load_exported(DEFAULT_MODEL_DIR, mesh=mesh, **options)
