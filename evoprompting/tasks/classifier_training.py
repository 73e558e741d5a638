"""Training of a candidate classifier (a flax.linen Module class), and its scoring.

`train_and_predict` runs inside a sandbox worker: it instantiates and calls
generated code, and sees no validation or test labels; it reports predicted
classes, which `accuracy` scores in the trusted parent (`judge.Judge`).

The contract checks come first, all on abstract values (`jax.eval_shape`,
`jax.make_jaxpr`): the class must be a `flax.linen.Module`, construct without
arguments, init on float32 [batch, features] and return [batch, num_classes]
logits; then the parameter count is compared with the cap. Only then is
anything compiled.

Training is data-parallel over the worker's devices: the dataset lives on the
devices (replicated), each compiled call gathers its batches by index with the
batch axis sharded over the mesh axis 'data', and runs several optimizer
steps; the state is donated. Step `s` uses the dropout key
`fold_in(key, s)` and the batch order is fixed by the seed, so the same program
and seed give the same numbers.

The shape of the training loop is chosen per model by a fixed rule (see
`loop_plan`), measured on the 2-core CPU the project runs on:

  * models with a convolution run `steps_per_call` steps per compiled call,
    unrolled into straight-line code: inside an XLA:CPU while loop the
    gradients of a convolution are not rewritten to the fast (Eigen) form and
    ran 10-30x slower; unrolled, a few steps per call amortise dispatch.
  * all other models (dense, recurrent) run the `eval_every` steps between two
    validations as one `lax.scan`: one call per validation, and the compile
    costs one step whatever the number of steps.

The rule depends only on the program, never on timing, so a program's numbers
do not depend on the machine's load.

Compilation (see `compiling`): on CPU, init and evaluation, which run once or
rarely, compile with XLA's backend optimisations and fusion emitters off, and
the training chunk at optimisation level 1; other backends use XLA's
defaults. The three programs are lowered one after the other (tracing needs
the GIL), init first, then the chunk, and compiled on threads (XLA compiles
without the GIL), so the compiles overlap the lowering and each other, and
the evaluation's compile overlaps the first training calls. `compile_s` is the
wall-clock time the evaluation waited for tracing and compiling (before
training, and at the first validation if its compile was not done); `train_s`
is the rest of the loop (training, validation and test predictions).
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any, Collection, Mapping

import flax
import flax.linen as nn
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import optax

from evoprompting.sandbox import judge as judge_lib
from evoprompting.tasks import base
from evoprompting.tasks import compiling
from evoprompting.tasks import training

Status = base.Status
# Primitives after which a model trains by unrolled steps (see `loop_plan`).
_UNROLL_PRIMITIVES = frozenset({'conv_general_dilated'})


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training."""

    step: jax.Array
    dropout_key: jax.Array  # Step s uses fold_in(dropout_key, s).
    params: Any
    model_state: Any  # Mutable collections other than 'params', e.g. batch_stats.
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class BuiltModel:
    """A candidate that passed the contract checks (all values abstract).

    Attributes:
      module: the instantiated flax module.
      takes_train: whether `__call__` has a `train` keyword.
      variables: abstract variables (ShapeDtypeStructs) from `module.init`.
      primitives: names of the JAX primitives of the forward pass (with
        `train=False`), nested jaxprs included; `loop_plan` reads them.
    """

    module: nn.Module
    takes_train: bool
    variables: Any
    primitives: frozenset[str]


def _build(model_cls: Any, sample_x: jax.ShapeDtypeStruct,
           num_classes: int) -> BuiltModel:
    """Instantiates the model and checks the contract on abstract values.

    Raises ProgramFailure(build_error) naming what was expected.
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
            f'`Model()` failed: {type(e).__name__}: {base.first_line(e)}') from None
    takes_train = 'train' in inspect.signature(model.__call__).parameters
    train_kw = {'train': False} if takes_train else {}
    expected = f'[{sample_x.shape[0]}, {num_classes}]'
    given = f'float32{list(sample_x.shape)}'
    try:
        variables = jax.eval_shape(
            lambda k, x: model.init(k, x, **train_kw), jax.eval_shape(jax.random.key, 0),
            sample_x)
        forward, out = jax.make_jaxpr(
            lambda v, x: model.apply(v, x, **train_kw), return_shape=True)(
                variables, sample_x)
    except Exception as e:  # pylint: disable=broad-except
        _reraise_oom(e)
        raise base.ProgramFailure(
            Status.BUILD_ERROR,
            f'Model failed on an input of shape {given} (expected logits '
            f'{expected}): {type(e).__name__}: {base.first_line(e)}') from None
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
    return BuiltModel(module=model, takes_train=takes_train,
                      variables=variables,
                      primitives=_primitive_names(forward.jaxpr))


def _primitive_names(jaxpr: jex.core.Jaxpr) -> frozenset[str]:
    """Names of the primitives in `jaxpr` and in the jaxprs nested in it."""
    names = set()
    stack = [jaxpr]
    while stack:
        for eqn in stack.pop().eqns:
            names.add(eqn.primitive.name)
            for value in eqn.params.values():
                for v in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(v, jex.core.ClosedJaxpr):
                        stack.append(v.jaxpr)
                    elif isinstance(v, jex.core.Jaxpr):
                        stack.append(v)
    return frozenset(names)


@dataclasses.dataclass(frozen=True)
class LoopPlan:
    """How the optimizer steps are grouped into compiled calls.

    Attributes:
      steps_per_call: optimizer steps in one compiled call; divides
        `eval_every`.
      unrolled: True: the steps are straight-line code (compile time grows
        with `steps_per_call`). False: they are one `lax.scan` (an XLA while
        loop; compile time of one step).
    """

    steps_per_call: int
    unrolled: bool


def loop_plan(primitives: Collection[str], config: Any) -> LoopPlan:
    """The training-loop shape for a model whose forward pass uses `primitives`.

    A fixed rule, from measurements on the 2-core CPU (MNIST-1D seeds, batch
    128): a model with a convolution gets `config.steps_per_call` unrolled
    steps per call (in a while loop its convolution gradients ran 10-30x
    slower); any other model gets one rolled `lax.scan` over the
    `config.eval_every` steps between validations (the MLP ran ~1.3x and the
    GRU ~1.1x faster than with one step per call, and compiled as fast).
    """
    if _UNROLL_PRIMITIVES.intersection(primitives):
        return LoopPlan(steps_per_call=config.steps_per_call, unrolled=True)
    return LoopPlan(steps_per_call=config.eval_every, unrolled=False)


def worker_inputs(splits: Any) -> dict[str, np.ndarray]:
    """What a worker gets of `splits`: no validation or test labels."""
    return {'train_x': splits.train_x, 'train_y': splits.train_y,
            'val_x': splits.val_x, 'test_x': splits.test_x}


def _sample_input(inputs: Mapping[str, np.ndarray],
                  config: Any) -> jax.ShapeDtypeStruct:
    """An abstract training batch of `inputs`."""
    return jax.ShapeDtypeStruct(
        (config.batch_size, inputs['train_x'].shape[1]), jnp.float32)


def build_params(model_cls: Any, inputs: Mapping[str, np.ndarray],
                 config: Any, *, max_params: int,
                 num_classes: int) -> tuple[tuple[int, ...], ...]:
    """The parameter shapes of `model_cls` built on abstract values, as
    `train_and_predict` builds it, without training (a build-only request).
    Raises ProgramFailure as `train_and_predict` does before training."""
    built = _build(model_cls, _sample_input(inputs, config), num_classes)
    return training.params_within_cap(built.variables, max_params)


def train_and_predict(model_cls: Any, inputs: Mapping[str, np.ndarray],
                      config: Any, report_validation: base.ReportValidation, *,
                      max_params: int, seed: int,
                      num_classes: int) -> base.Trained:
    """Trains `model_cls` on `inputs` (`worker_inputs`) with `config` (a
    TrainConfig). Every `config.eval_every` steps it reports the predicted
    validation classes ({'class': int8 [n]}); where `report_validation` says
    they are the best so far it predicts the test classes. Each split is
    predicted in passes of its own.

    Raises ProgramFailure for contract violations, non-finite training
    losses and non-finite logits at an evaluation.
    """
    parallel = training.DataParallel(jax.devices(),
                                     batch_size=config.batch_size)
    replicated, by_batch = parallel.replicated, parallel.split()

    sample_x = _sample_input(inputs, config)
    built = _build(model_cls, sample_x, num_classes)
    model, takes_train = built.module, built.takes_train
    training.params_within_cap(built.variables, max_params)
    plan = loop_plan(built.primitives, config)

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
        """`plan.steps_per_call` steps; idx is int32 [steps_per_call, batch]."""
        def step(state, rows):
            rows = jax.lax.with_sharding_constraint(rows, by_batch)
            return one_step(state, data_x[rows], data_y[rows])
        if idx.shape[0] == 1:  # A scan of length 1 is still a while loop.
            state, loss = step(state, idx[0])
            return state, loss[None]
        # unroll=True: straight-line steps, traced once.
        return jax.lax.scan(step, state, idx, unroll=plan.unrolled)

    eval_batch = len(inputs['val_x'])

    def predict(state, x):
        """Predicted classes of one batch, and whether its logits are all
        finite (argmax would hide NaN)."""
        logits, _ = apply(state.params, state.model_state, x, False, None)
        return (jnp.argmax(logits, -1).astype(jnp.int32),
                jnp.all(jnp.isfinite(logits)))

    # The compiled programs see the state as a flat list of arrays: their HLO,
    # and so the persistent compilation cache's key, then does not depend on
    # the names a program gives its layers, and children of equal shapes share
    # executables.
    state_def = None  # TrainState's treedef, recorded when init is traced.

    def init_leaves(seed):
        nonlocal state_def
        leaves, state_def = jax.tree.flatten(init(seed))
        return leaves

    def chunk_leaves(leaves, data_x, data_y, idx):
        state, losses = train_chunk(jax.tree.unflatten(state_def, leaves),
                                    data_x, data_y, idx)
        return jax.tree.leaves(state), losses

    def predict_leaves(leaves, x):
        return predict(jax.tree.unflatten(state_def, leaves), x)

    to_device = lambda a: jax.device_put(a, replicated)
    train_x = to_device(inputs['train_x'])
    train_y = to_device(inputs['train_y'])
    # Each split in batches of the validation set's size, the last padded:
    # one compile, and no batch mixes validation and test inputs.
    eval_splits = {split: [to_device(b) for b in _batches(inputs[f'{split}_x'],
                                                          eval_batch)]
                   for split in ('val', 'test')}
    order = training.batch_order(len(inputs['train_x']), config.batch_size,
                        config.num_steps, seed)
    order = order.reshape(-1, plan.steps_per_call, config.batch_size)
    seed_arg = np.uint32(seed)

    # The training chunk is lowered right after init (which gives its
    # state's shapes), as it compiles longest; the evaluation's compile then
    # overlaps the first training calls.
    init_jit = jax.jit(init_leaves, out_shardings=replicated)
    chunk_jit = jax.jit(chunk_leaves, donate_argnums=0,
                        out_shardings=replicated)
    predict_jit = jax.jit(predict_leaves)
    t0 = time.perf_counter()
    with compiling.Compiler(threads=3) as compiler:
        abstract_state = [
            jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated)
            for a in compiler.submit('init', init_jit, 'once', seed_arg)]
        chunk_args = (abstract_state, train_x, train_y, order[0])
        compiler.submit('train', chunk_jit, 'train', *chunk_args)
        compiler.submit('predict', predict_jit, 'once', abstract_state,
                        eval_splits['val'][0])
        state = compiler.run('init', init_jit, 'once', seed_arg)
        chunk_fn = compiler.compiled('train', chunk_jit, 'train', *chunk_args)
        loop_start, waited_before = time.perf_counter(), compiler.seconds

        best_step, test_classes = 0, None
        chunks_per_eval = config.eval_every // plan.steps_per_call
        pending_losses = []
        last_loss = float('nan')

        def predict_split(split: str) -> np.ndarray:
            outs = [jax.device_get(compiler.run(
                'predict', predict_jit, 'once', state, b))
                    for b in eval_splits[split]]
            if not all(bool(finite) for _, finite in outs):
                raise base.ProgramFailure(
                    Status.NAN, f'non-finite logits at step {step} on the '
                    f'{"validation" if split == "val" else "test"} inputs')
            classes = np.concatenate([c for c, _ in outs])
            return classes[:len(inputs[f'{split}_x'])].astype(np.int8)

        for c, idx in enumerate(order):
            state, losses = chunk_fn(state, train_x, train_y, idx)
            pending_losses.append(losses)
            step = (c + 1) * plan.steps_per_call
            if c == 0 or (c + 1) % chunks_per_eval == 0:
                host_losses = np.concatenate(
                    [np.asarray(l) for l in pending_losses])
                pending_losses = []
                bad = np.flatnonzero(~np.isfinite(host_losses))
                if bad.size:
                    raise base.ProgramFailure(
                        Status.NAN, f'training loss is {host_losses[bad[0]]} '
                        f'(non-finite) by step {step}')
                last_loss = float(host_losses[-1])
            if (c + 1) % chunks_per_eval == 0:
                if report_validation(step, {'class': predict_split('val')}):
                    best_step, test_classes = step, predict_split('test')
        # A wait for the evaluation's compile counts as compiling.
        waited = compiler.seconds - waited_before
        compile_s = loop_start - t0 + waited
        train_s = time.perf_counter() - loop_start - waited

    return base.Trained(
        param_shapes=training.param_shapes(built.variables),
        best_step=best_step, test_predictions={'class': test_classes},
        compile_s=compile_s, train_s=train_s, final_train_loss=last_loss)


def _batches(x: np.ndarray, size: int) -> list[np.ndarray]:
    """`x` in batches of `size` rows, the last padded with zeros."""
    pad = -len(x) % size
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    return [x[i:i + size] for i in range(0, len(x), size)]


def accuracy(predictions: Mapping[str, np.ndarray],
             labels: np.ndarray) -> float:
    """Accuracy of predicted classes ({'class': [n] integers}). Raises
    ValueError for predictions that do not fit `labels`."""
    classes = predictions.get('class') if set(predictions) == {'class'} else None
    if (classes is None or classes.shape != labels.shape
            or classes.dtype.kind not in 'iu'):
        raise ValueError(f'expected {{"class": integers {list(labels.shape)}}}, '
                         f'got { {k: f"{v.dtype}{list(v.shape)}" for k, v in predictions.items()} }')
    return float(np.mean(classes == labels))


def train_and_evaluate(model_cls: Any, splits: Any, config: Any, *,
                       max_params: int, seed: int,
                       num_classes: int) -> base.EvalResult:
    """`train_and_predict` and its `judge.Judge` in one process: for tests and
    benchmarks of trusted code (no sandbox). Returns an EvalResult without
    `source_sha256`."""
    labels = {'val': splits.val_y, 'test': splits.test_y}
    judge = judge_lib.Judge(lambda split, p: accuracy(p, labels[split]),
                            ('val_accuracy', 'test_accuracy'), max_params,
                            config.evaluation_steps)
    trained = train_and_predict(model_cls, worker_inputs(splits), config,
                                judge, max_params=max_params, seed=seed,
                                num_classes=num_classes)
    return judge.verdict(trained)


def _reraise_oom(e: Exception) -> None:
    """Out-of-memory errors are not build errors: let the worker name them."""
    if base.is_out_of_memory(e):
        raise e
