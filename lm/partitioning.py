"""Logical-axis partitioning of the LM onto a ('data', 'model') device mesh.

Model code names axes (`lm.model`'s docstring lists them); only this module
knows the mesh. The rule table maps each logical name to a mesh axis (or to
None: replicated), in the manner of t5x `partitioning.py`:

  * `batch` -> 'data' (data parallelism);
  * `vocab`, `heads`, `mlp`, `joined_kv` -> 'model' (Megatron-style tensor
    parallelism: attention split by query head, MLP by hidden unit, the
    embedding and output projection by vocabulary row);
  * `embed`, `kv`, `kv_heads`, `length`, `layers` -> replicated. KV heads are
    few under GQA (often fewer than the model-parallel devices), so their
    projections are replicated rather than split unevenly.

Model parallelism should divide `num_heads`, `mlp_dim` and `vocab_size`.

Activation constraints in the model (`nn.with_logical_constraint`) take
effect only inside `activate(mesh, rules)` (a mesh context plus the rule
table); outside, jit propagates the shardings of the inputs.

Parameters are created already sharded (flax lm1b `setup_initial_state`):
`jax.eval_shape` of the initialiser gives the boxed abstract tree, its
logical specs become `NamedSharding`s, and the initialiser is jitted with
those `out_shardings`, so no device ever holds the whole model unsharded.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ('data', 'model')
Rules = tuple[tuple[str, str | None], ...]


def standard_logical_axis_rules(
        additional_rules: Sequence[tuple[str, str | None]] = ()) -> Rules:
    """The rule table (see the module docstring).

    Args:
      additional_rules: rules placed first, so they take precedence over the
        standard ones (new names, e.g. a soft prompt's, or overrides).
    """
    return tuple(additional_rules) + (
        ('batch', 'data'),
        ('vocab', 'model'),
        ('heads', 'model'),
        ('mlp', 'model'),
        ('joined_kv', 'model'),
        ('embed', None),
        ('kv', None),
        ('kv_heads', None),
        ('length', None),
        ('layers', None),
    )


def set_cpu_device_count(count: int = 0) -> None:
    """Splits the host CPU into `count` JAX devices (0: one per core).

    XLA:CPU runs many of a decoding step's ops (the attention's reductions
    over the KV cache among them) on one thread, so on a CPU-only machine a
    mesh whose 'data' axis spans several host devices runs the batch's
    shards in parallel: the benchmark Llama decodes 1.26x faster at batch 16
    on 2 cores, the default model samples 1.6x faster (lm/README.md). Takes
    effect only on the CPU backend; accelerators are unaffected.

    Must be called before JAX initialises its backends (before any device
    query or computation), as binaries do first thing in `main`.

    Raises:
      ValueError: `count` is negative.
      RuntimeError: JAX's backends are already initialised.
    """
    if count < 0:
        raise ValueError(f'CPU device count must be >= 0 (0: one per core), '
                         f'got {count}')
    count = count or len(os.sched_getaffinity(0))
    try:
        jax.config.update('jax_num_cpu_devices', count)
    except RuntimeError as e:
        raise RuntimeError(f'cannot split the CPU into {count} devices: JAX is '
                           f'already initialised ({e})') from None


def make_mesh(devices: Sequence[jax.Device] | int | None = None, *,
              model_parallelism: int = 1) -> Mesh:
    """A `(data, model)` mesh of shape `(n // model_parallelism, model_parallelism)`.

    Args:
      devices: the devices, or how many of this process's devices
        (`jax.local_devices()`: in a multi-process search the LM runs in the
        process that drives it) to take (first ones), or None for all.
      model_parallelism: devices along 'model'; must divide their number.
        Neighbouring devices (in `devices` order) share a model replica.
    """
    if devices is None:
        devices = jax.local_devices()
    elif isinstance(devices, int):
        available = jax.local_devices()
        if not 1 <= devices <= len(available):
            raise ValueError(f'asked for {devices} devices, {len(available)} '
                             'available')
        devices = available[:devices]
    devices = list(devices)
    if model_parallelism < 1 or len(devices) % model_parallelism:
        raise ValueError(f'model_parallelism={model_parallelism} must divide '
                         f'the number of devices ({len(devices)})')
    grid = np.array(devices, dtype=object).reshape(
        len(devices) // model_parallelism, model_parallelism)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Context in which the model's logical activation constraints apply."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """`NamedSharding`s for a boxed tree (e.g. from `jax.eval_shape`).

    Leaves without logical names (plain arrays) are replicated.
    """
    specs = nn.get_partition_spec(abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def create_sharded(init_fn: Callable[[jax.Array], Any], rng: jax.Array, *,
                   mesh: Mesh, rules: Rules,
                   compiler_options: Mapping[str, Any] | None = None) -> Any:
    """Runs `init_fn(rng)` with every output created in its sharding.

    Args:
      init_fn: returns a tree boxed with logical names (e.g.
        `functools.partial(lm.model.init_params, config)`).
      rng: its PRNG key.
      mesh: the device mesh.
      rules: the logical axis rule table.
      compiler_options: XLA options for this one-off compilation; on CPU,
        `lm.testing.FAST_COMPILE` compiles a model's initialiser ~5x faster.

    Returns:
      The unboxed tree (plain `jax.Array`s), each leaf laid out by its rules.
    """
    abstract = jax.eval_shape(init_fn, rng)
    shardings = logical_shardings(abstract, mesh, rules)
    init = jax.jit(init_fn, out_shardings=shardings,
                   compiler_options=compiler_options)
    tree = init(rng)
    return strip_boxes(tree)


def strip_boxes(tree: Any) -> Any:
    """The tree without its logical-axis boxes (no sharding constraint applied)."""
    return jax.tree_util.tree_map(
        lambda x: x.value if isinstance(x, nn.Partitioned) else x, tree,
        is_leaf=lambda x: isinstance(x, nn.Partitioned))


def count_params(tree: Any) -> int:
    """Number of scalars in a parameter tree: boxed or not, abstract or real."""
    leaves = jax.tree_util.tree_leaves(tree)  # A box's only child is its value.
    return sum(math.prod(leaf.shape) for leaf in leaves)
