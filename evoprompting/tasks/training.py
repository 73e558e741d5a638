"""Helpers every task's trainer shares: parameter counts, the size cap,
batch orders and the data-parallel mesh."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


from evoprompting.tasks import base


def param_shapes(variables: Any) -> tuple[tuple[int, ...], ...]:
    """The shape of every array of the 'params' collection (abstract or
    concrete) in real numbers: a complex array has a trailing axis of 2,
    its real and imaginary parts."""
    return tuple(
        tuple(x.shape) + ((2,) if jnp.issubdtype(x.dtype, jnp.complexfloating)
                          else ())
        for x in jax.tree.leaves(variables['params']))


def count_params(variables: Any) -> int:
    """Number of real scalars in the 'params' collection (`param_shapes`)."""
    return base.num_params(param_shapes(variables))


def params_within_cap(variables: Any,
                      max_params: int) -> tuple[tuple[int, ...], ...]:
    """`param_shapes(variables)`, or ProgramFailure(too_large) when they
    hold more than `max_params` numbers."""
    shapes = param_shapes(variables)
    num_params = base.num_params(shapes)
    if num_params > max_params:
        raise base.ProgramFailure(
            base.Status.TOO_LARGE,
            f'{num_params:,} parameters exceed the cap of {max_params:,}')
    return shapes


def batch_order(num_examples: int, batch_size: int, num_steps: int,
                seed: int) -> np.ndarray:
    """int32 [num_steps, batch_size] example indices, epoch-wise shuffled."""
    if batch_size > num_examples:
        raise ValueError(f'batch_size {batch_size} > {num_examples} examples')
    per_epoch = num_examples // batch_size
    epochs = -(-num_steps // per_epoch)
    rng = np.random.default_rng(seed)
    order = np.concatenate([
        rng.permutation(num_examples)[:per_epoch * batch_size]
        for _ in range(epochs)])
    return order[:num_steps * batch_size].reshape(
        num_steps, batch_size).astype(np.int32)


class DataParallel:
    """A worker's devices as a one-axis mesh ('data') for data-parallel
    training: parameters and optimizer state replicated, every batch split
    along its example (graph) axis, so each device computes its share of the
    examples and XLA sums the gradients across devices.

    Raises ValueError at construction when a batch size does not divide
    evenly over the devices.
    """

    def __init__(self, devices: Any, **batch_sizes: int):
        self.mesh = Mesh(np.asarray(devices), ('data',))
        for name, size in batch_sizes.items():
            if size % self.mesh.size:
                raise ValueError(
                    f'{name} {size} must be divisible by the worker\'s '
                    f'{self.mesh.size} devices')

    @property
    def replicated(self) -> NamedSharding:
        """Whole on every device (parameters, state, datasets)."""
        return NamedSharding(self.mesh, PartitionSpec())

    def split(self, axis: int = 0) -> NamedSharding:
        """Split over the devices along `axis` (a batch's example axis)."""
        return NamedSharding(self.mesh,
                             PartitionSpec(*([None] * axis), 'data'))
