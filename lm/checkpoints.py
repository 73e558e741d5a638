"""orbax checkpoints of LM parameters and soft prompts.

A checkpoint is an orbax `StandardCheckpointer` directory holding one pytree
(model params, or a soft prompt). `restore` takes an abstract tree
(`jax.ShapeDtypeStruct`s, with shardings where the caller wants them) so that
arrays land directly on the right devices in the requested dtypes, and checks
that the stored tree has exactly the expected structure and shapes.

`load_hf` serves a Hugging Face checkpoint folder (read by
`lm.hf_import.import_hf`) as a `lm.serving.LanguageModel`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from lm import hf_import, partitioning, serving


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

    Parameters go straight to their shardings on `mesh` (default: all
    devices); `options` are `LanguageModel` fields (batch_size,
    stop_strings, top_k, top_p, tuning). Errors as `hf_import.import_hf`.
    """
    mesh = mesh or partitioning.make_mesh()
    config, params, vocabulary = hf_import.import_hf(path, dtype=dtype, mesh=mesh)
    return serving.LanguageModel.create(config, params, vocabulary, mesh=mesh,
                                        **options)
