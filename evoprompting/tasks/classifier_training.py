"""Training and scoring of a candidate classifier (a flax.linen Module class).

Runs inside a sandbox worker: it instantiates and calls generated code.

The contract checks come first, all on abstract values (`jax.eval_shape`):
the class must be a `flax.linen.Module`, construct without arguments, init on
float32 [batch, features] and return [batch, num_classes] logits; then the
parameter count is compared with the cap. Only then is anything compiled.

Training is data-parallel over the worker's devices: the dataset lives on the
devices (replicated), each compiled call gathers its batches by index with the
batch axis sharded over the mesh axis 'data', and runs `steps_per_call`
optimizer steps; the state is donated. Step `s` uses the dropout key
`fold_in(key, s)` and the batch order is fixed by the seed, so the same program
and seed give the same numbers.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from evoprompting.tasks import base

Status = base.Status
# For code that runs once or rarely (init, evaluation): XLA's backend
# optimisations cost seconds of compile for milliseconds of run time. On CPU,
# random-number initialisers compile ~4x faster this way.
_FAST_COMPILE = {'xla_backend_optimization_level': 0}


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training."""

    step: jax.Array
    dropout_key: jax.Array  # Step s uses fold_in(dropout_key, s).
    params: Any
    model_state: Any  # Mutable collections other than 'params', e.g. batch_stats.
    opt_state: Any


def _build(model_cls: Any, sample_x: jax.ShapeDtypeStruct,
           num_classes: int) -> tuple[nn.Module, bool, Any]:
    """Instantiates the model and checks the contract on abstract values.

    Returns the module, whether `__call__` takes `train`, and the abstract
    variables. Raises ProgramFailure(build_error) naming what was expected.
    """
    if model_cls is None:
        raise base.ProgramFailure(
            Status.BUILD_ERROR, 'the program defines no `Model` class')
    if not (isinstance(model_cls, type) and issubclass(model_cls, nn.Module)):
        raise base.ProgramFailure(
            Status.BUILD_ERROR,
            f'`Model` must be a subclass of flax.linen.Module, got {model_cls!r}')
    try:
        model = model_cls()
    except Exception as e:  # pylint: disable=broad-except
        _reraise_oom(e)
        raise base.ProgramFailure(
            Status.BUILD_ERROR,
            f'`Model()` failed: {type(e).__name__}: {e}') from None
    takes_train = 'train' in inspect.signature(model.__call__).parameters
    train_kw = {'train': False} if takes_train else {}
    expected = f'[{sample_x.shape[0]}, {num_classes}]'
    given = f'float32{list(sample_x.shape)}'
    try:
        variables = jax.eval_shape(
            lambda k, x: model.init(k, x, **train_kw), jax.eval_shape(jax.random.key, 0),
            sample_x)
        out = jax.eval_shape(
            lambda v, x: model.apply(v, x, **train_kw), variables, sample_x)
    except Exception as e:  # pylint: disable=broad-except
        _reraise_oom(e)
        raise base.ProgramFailure(
            Status.BUILD_ERROR,
            f'Model failed on an input of shape {given} (expected logits '
            f'{expected}): {type(e).__name__}: {_first_line(e)}') from None
    if (not isinstance(out, jax.ShapeDtypeStruct)
            or out.shape != (sample_x.shape[0], num_classes)):
        got = (f'{out.dtype}{list(out.shape)}'
               if isinstance(out, jax.ShapeDtypeStruct) else
               f'a {type(out).__name__}')
        raise base.ProgramFailure(
            Status.BUILD_ERROR,
            f'Model maps {given} to {got}, expected logits {expected}')
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise base.ProgramFailure(
            Status.BUILD_ERROR, f'Model returns {out.dtype} logits, expected floats')
    if 'params' not in variables:
        raise base.ProgramFailure(Status.BUILD_ERROR, 'Model has no parameters')
    return model, takes_train, variables


def _first_line(e: Exception, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    return text[0][:limit] if text else ''


def count_params(variables: Any) -> int:
    """Number of scalars in the 'params' collection (abstract or concrete)."""
    return int(sum(np.prod(x.shape, dtype=np.int64)
                   for x in jax.tree.leaves(variables['params'])))


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


def train_and_evaluate(model_cls: Any, splits: Any, config: Any, *,
                       max_params: int, seed: int,
                       num_classes: int) -> base.EvalResult:
    """Trains `model_cls` on `splits` with `config` (a TrainConfig).

    Returns an EvalResult without `source_sha256` (the worker fills it in).
    Raises ProgramFailure for contract violations and non-finite losses.
    """
    devices = jax.devices()
    mesh = Mesh(np.asarray(devices), ('data',))
    if config.batch_size % len(devices):
        raise ValueError(f'batch_size {config.batch_size} must be divisible by '
                         f'{len(devices)} devices')
    replicated = NamedSharding(mesh, P())
    by_batch = NamedSharding(mesh, P('data'))

    num_features = splits.train_x.shape[1]
    sample_x = jax.ShapeDtypeStruct((config.batch_size, num_features),
                                    jnp.float32)
    model, takes_train, abstract_vars = _build(model_cls, sample_x, num_classes)
    num_params = count_params(abstract_vars)
    if num_params > max_params:
        raise base.ProgramFailure(
            Status.TOO_LARGE,
            f'{num_params:,} parameters exceed the cap of {max_params:,}')

    tx = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)

    def apply(params, model_state, x, train, key):
        variables = {'params': params, **model_state}
        if not takes_train:
            return model.apply(variables, x), model_state
        if not train:
            return model.apply(variables, x, train=False), model_state
        logits, new_state = model.apply(
            variables, x, train=True, mutable=list(model_state),
            rngs={'dropout': key})
        return logits, dict(new_state)

    def init(seed):
        init_key, dropout_key = jax.random.split(jax.random.key(seed))
        train_kw = {'train': False} if takes_train else {}
        variables = model.init(init_key,
                               jnp.zeros(sample_x.shape, sample_x.dtype),
                               **train_kw)
        params = variables['params']
        model_state = {c: v for c, v in variables.items() if c != 'params'}
        return TrainState(step=jnp.zeros((), jnp.int32), dropout_key=dropout_key,
                          params=params, model_state=model_state,
                          opt_state=tx.init(params))

    def one_step(state, x, y):
        def loss_fn(params):
            logits, new_state = apply(
                params, state.model_state, x, True,
                jax.random.fold_in(state.dropout_key, state.step))
            loss = optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), y).mean()
            return loss, new_state
        (loss, new_state), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1,
                             params=optax.apply_updates(state.params, updates),
                             model_state=new_state,
                             opt_state=opt_state), loss

    def train_chunk(state, data_x, data_y, idx):
        """`steps_per_call` steps; idx is int32 [steps_per_call, batch]."""
        losses = []
        for i in range(idx.shape[0]):  # Unrolled: small graphs, no while loop.
            rows = jax.lax.with_sharding_constraint(idx[i], by_batch)
            state, loss = one_step(state, data_x[rows], data_y[rows])
            losses.append(loss)
        return state, jnp.stack(losses)

    def accuracy(state, x, y):
        logits, _ = apply(state.params, state.model_state, x, False, None)
        return jnp.mean(jnp.argmax(logits, -1) == y)

    def evaluate(state, val_x, val_y, test_x, test_y):
        return accuracy(state, val_x, val_y), accuracy(state, test_x, test_y)

    to_device = lambda a: jax.device_put(a, replicated)
    train_x, train_y = to_device(splits.train_x), to_device(splits.train_y)
    eval_arrays = [to_device(a) for a in (splits.val_x, splits.val_y,
                                          splits.test_x, splits.test_y)]
    order = batch_order(len(splits.train_x), config.batch_size,
                        config.num_steps, seed)
    order = order.reshape(-1, config.steps_per_call, config.batch_size)

    t0 = time.perf_counter()
    try:
        seed_arg = np.uint32(seed)
        state = jax.jit(init, out_shardings=replicated).lower(
            seed_arg).compile(_FAST_COMPILE)(seed_arg)
        chunk_fn = jax.jit(
            train_chunk, donate_argnums=0, out_shardings=replicated).lower(
                state, train_x, train_y, order[0]).compile()
        eval_fn = jax.jit(evaluate).lower(state, *eval_arrays).compile(
            _FAST_COMPILE)
    except base.ProgramFailure:
        raise
    except Exception as e:  # pylint: disable=broad-except
        _reraise_oom(e)
        raise base.ProgramFailure(
            Status.BUILD_ERROR,
            f'Model failed to compile for training: {type(e).__name__}: '
            f'{_first_line(e)}') from None
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    best = (-1.0, 0.0, 0)  # (val_accuracy, test_accuracy, step)
    chunks_per_eval = config.eval_every // config.steps_per_call
    pending_losses = []
    last_loss = float('nan')
    for c, idx in enumerate(order):
        state, losses = chunk_fn(state, train_x, train_y, idx)
        pending_losses.append(losses)
        if c == 0 or (c + 1) % chunks_per_eval == 0:
            host_losses = np.concatenate([np.asarray(l) for l in pending_losses])
            pending_losses = []
            bad = np.flatnonzero(~np.isfinite(host_losses))
            if bad.size:
                raise base.ProgramFailure(
                    Status.NAN, f'training loss is {host_losses[bad[0]]} '
                    f'(non-finite) by step {(c + 1) * config.steps_per_call}')
            last_loss = float(host_losses[-1])
        if (c + 1) % chunks_per_eval == 0:
            val_acc, test_acc = (float(a) for a in eval_fn(state, *eval_arrays))
            step = (c + 1) * config.steps_per_call
            if val_acc > best[0]:
                best = (val_acc, test_acc, step)
    train_s = time.perf_counter() - t0

    val_acc, test_acc, best_step = best
    return base.EvalResult(
        status=Status.OK,
        message=(f'best val_accuracy {val_acc:.4f} at step {best_step} '
                 f'(test_accuracy {test_acc:.4f})'),
        source_sha256='', params=num_params,
        metrics={'val_accuracy': val_acc, 'test_accuracy': test_acc,
                 'best_step': best_step, 'final_train_loss': last_loss},
        compile_s=compile_s, train_s=train_s)


def _reraise_oom(e: Exception) -> None:
    """Out-of-memory errors are not build errors: let the worker name them."""
    if isinstance(e, MemoryError) or 'RESOURCE_EXHAUSTED' in str(e):
        raise e
