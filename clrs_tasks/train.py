"""Training and scoring of a CLRS model with a candidate triplet function.

The single-task recipe of Ibarz et al. 2022 (dm-clrs `examples/run.py`):
hidden 128, Adam (lr 1e-3) after global-norm gradient clipping at 1.0,
batch 32, the loss summed over outputs and hints, one training batch per
step cycling through the training sizes, validation every `eval_every`
steps, and the test split scored with the parameters of the best
validation score. Losses and scores are masked, so padding graphs never
count.

The judge is not in the trainer: `train_and_predict` (run inside sandbox
workers for generated programs) sees validation and test sets without
their answers (`data.redacted`) and reports hard output predictions;
`score`, in the trusted parent, scores them against the outputs, and the
parent's `judge.Judge` says which evaluation point to keep.

Training is data-parallel over the worker's devices, as MNIST-1D's is
(`training.DataParallel`): parameters and optimizer state replicated, every
training and evaluation batch split along its graph axis, so `batch_size` and
`eval_batch_size` must divide evenly over the devices.

Each program compiles init, one training step per training size and one
prediction per evaluation set, all of them lowered before the first step and
compiled on `compile_threads` threads (`compiling.Compiler`). `compile_s` is
the wall-clock time of building the model, lowering those programs and
waiting for their compiles; `train_s` is the rest (training steps,
validation and test predictions).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from clrs_tasks import data as data_lib
from clrs_tasks import metrics
from clrs_tasks import model as model_lib
from clrs_tasks import processors
from evoprompting.sandbox import judge as judge_lib
from evoprompting.tasks import base
from evoprompting.tasks import compiling
from evoprompting.tasks.training import DataParallel, batch_order
from evoprompting.tasks.training import param_shapes, params_within_cap

Status = base.Status
_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How every model is trained; defaults are run.py's, except the budget.

    Attributes:
      num_steps: optimizer steps (the paper's search budget: 2,000).
      batch_size: graphs per training batch.
      learning_rate: Adam learning rate.
      grad_clip_max_norm: global-norm clipping; 0 disables it.
      eval_every: steps between validations (and at the last step).
      eval_batch_size: graphs per validation/test batch (padded).
      hidden_dim: H.
      nb_triplet_fts: k, passed to the triplet function.
      processor: a key of `processors.PROCESSORS`.
      hint_teacher_forcing: see `model.EncodeProcessDecode`.
      compile_threads: programs compiled at once; 0 means
        `compiling.default_threads()` (one per two CPU cores, at most 4).
        Each compile holds its own XLA memory.
    """

    num_steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    grad_clip_max_norm: float = 1.0
    eval_every: int = 50
    eval_batch_size: int = 32
    hidden_dim: int = 128
    nb_triplet_fts: int = 8
    processor: str = 'triplet_gmpnn'
    hint_teacher_forcing: float = 0.0
    compile_threads: int = 0

    @property
    def evaluation_steps(self) -> tuple[int, ...]:
        """Every `eval_every` steps, and the last step."""
        return tuple(s for s in range(1, self.num_steps + 1)
                     if s % self.eval_every == 0 or s == self.num_steps)

    def __post_init__(self):
        for name in ('num_steps', 'batch_size', 'eval_every',
                     'eval_batch_size', 'hidden_dim', 'nb_triplet_fts'):
            if getattr(self, name) <= 0:
                raise ValueError(f'TrainConfig.{name} must be positive')
        if self.compile_threads < 0:
            raise ValueError('TrainConfig.compile_threads must be >= 0')
        if self.processor not in processors.PROCESSORS:
            raise ValueError(f'unknown processor {self.processor!r}')


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    noise_key: jax.Array  # Step s uses fold_in(noise_key, s).
    params: Any
    opt_state: Any


def _graph_weights(graph_mask: jax.Array, like: jax.Array,
                   graph_axis: int = 0) -> jax.Array:
    """graph_mask [G] as float, broadcast against `like` (graph axis given)."""
    w = graph_mask.astype(jnp.float32)
    shape = [1] * like.ndim
    shape[graph_axis] = w.shape[0]
    return jnp.broadcast_to(w.reshape(shape), like.shape)


def _per_element_loss(typ: str, truth: jax.Array, pred: jax.Array,
                      num_nodes: int) -> tuple[jax.Array, jax.Array]:
    """(loss, validity) per element, as dm-clrs' losses compute them."""
    if typ == 'scalar':
        loss = (pred - truth) ** 2
        return loss, jnp.ones_like(loss)
    if typ == 'mask':
        loss = (jnp.maximum(pred, 0) - pred * truth
                + jnp.log1p(jnp.exp(-jnp.abs(pred))))
        return loss, (truth != -1).astype(jnp.float32)
    if typ in ('mask_one', 'categorical'):
        masked = truth * (truth != -1)
        loss = -jnp.sum(masked * jax.nn.log_softmax(pred), axis=-1)
        return loss, jnp.any(truth == 1, axis=-1).astype(jnp.float32)
    if typ == 'pointer':
        loss = -jnp.sum(jax.nn.one_hot(truth, num_nodes)
                        * jax.nn.log_softmax(pred), axis=-1)
        return loss, jnp.ones_like(loss)
    if typ == 'permutation_pointer':
        loss = -jnp.sum(truth * pred, axis=-1)
        return loss, jnp.ones_like(loss)
    raise ValueError(f'no loss for type {typ!r}')


def loss_fn(spec: model_lib.ModelSpec, batch: data_lib.GraphBatch,
            output_preds: Mapping[str, jax.Array],
            hint_preds: Mapping[str, jax.Array]) -> jax.Array:
    """Sum of the output losses and the hint losses (dm-clrs' `_loss`).

    Output losses average over real graphs' elements (mask_one and
    categorical: per positive label); hint losses over the steps 1..T-1
    before each graph's end.
    """
    n = batch.num_nodes
    types = {name: typ for name, _, _, typ, _ in spec}
    total = jnp.zeros(())
    for name, (_, truth) in data_lib.to_dense(batch, 'output').items():
        loss, valid = _per_element_loss(types[name], truth,
                                        output_preds[name], n)
        valid = valid * _graph_weights(batch.graph_mask, valid)
        total += jnp.sum(loss * valid) / jnp.maximum(jnp.sum(valid), _EPS)
    for name, (_, truth) in data_lib.to_dense(batch, 'hint').items():
        steps = truth.shape[0] - 1
        pred = hint_preds[name][:steps]
        loss, valid = _per_element_loss(types[name], truth[1:], pred, n)
        if types[name] == 'mask_one':
            valid = jnp.ones_like(loss)  # dm-clrs: every row counts.
        not_done = (batch.lengths[None] > jnp.arange(steps)[:, None] + 1)
        not_done = not_done.reshape(not_done.shape + (1,) * (loss.ndim - 2))
        valid = valid * not_done
        total += jnp.sum(loss * valid) / jnp.maximum(jnp.sum(valid), _EPS)
    return total


@dataclasses.dataclass(frozen=True)
class Splits:
    """Training pools (one per size), validation and test sets."""

    train: Sequence[data_lib.Dataset]
    val: data_lib.Dataset
    test: data_lib.Dataset


def build_model(triplet_fn: Any, spec: model_lib.ModelSpec,
                config: TrainConfig) -> model_lib.EncodeProcessDecode:
    if triplet_fn is None:
        raise base.ProgramFailure(
            Status.BUILD_ERROR, 'the program defines no `get_triplet_msgs`')
    if not callable(triplet_fn):
        raise base.ProgramFailure(
            Status.BUILD_ERROR,
            f'`get_triplet_msgs` must be a function, got {triplet_fn!r}')
    return model_lib.EncodeProcessDecode(
        spec, processor_kind=config.processor, triplet_fn=triplet_fn,
        nb_triplet_fts=config.nb_triplet_fts, hidden_dim=config.hidden_dim,
        hint_teacher_forcing=config.hint_teacher_forcing)


def _host_batch(dataset: data_lib.Dataset, rows: np.ndarray,
                num_graphs: int) -> data_lib.GraphBatch:
    with jax.default_device(jax.devices('cpu')[0]):
        return jax.device_get(data_lib.make_batch(
            dataset.arrays, dataset.spec, rows, num_graphs))


def _abstract_model(triplet_fn: Any, splits: Splits, config: TrainConfig
                    ) -> tuple[model_lib.ModelSpec, Any, Any, Any]:
    """(spec, module, a training batch, abstract variables) of the model
    with `triplet_fn`.
    Raises ProgramFailure (build_error, oom) for one that does not build."""
    spec = model_lib.model_spec(splits.val)
    module = build_model(triplet_fn, spec, config)
    sample = _host_batch(splits.train[0], np.arange(config.batch_size)
                         % splits.train[0].num_samples, config.batch_size)
    try:
        variables = jax.eval_shape(
            lambda k, b: module.init({'params': k, 'noise': k}, b,
                                     train=False),
            jax.eval_shape(jax.random.key, 0), sample)
    except Exception as e:  # pylint: disable=broad-except
        if base.is_out_of_memory(e):
            raise base.ProgramFailure(
                Status.OOM, f'out of memory: {base.first_line(e)}') from None
        raise base.ProgramFailure(
            Status.BUILD_ERROR,
            f'the model with this get_triplet_msgs failed: '
            f'{type(e).__name__}: {base.first_line(e)}') from None
    return spec, module, sample, variables


def build_params(triplet_fn: Any, splits: Splits, config: TrainConfig, *,
                 max_params: int) -> tuple[tuple[int, ...], ...]:
    """The parameter shapes of the model with `triplet_fn`, built on
    abstract values as `train_and_predict` builds it, without training (a
    build-only request). Raises ProgramFailure as `train_and_predict` does
    before training."""
    _, _, _, variables = _abstract_model(triplet_fn, splits, config)
    return params_within_cap(variables, max_params)


def train_and_predict(triplet_fn: Any, splits: Splits, config: TrainConfig,
                      report_validation: base.ReportValidation, *,
                      max_params: int, seed: int) -> base.Trained:
    """Trains the model with `triplet_fn` on `splits` (whose validation and
    test sets may be `data.redacted`: no answers are read). Every
    `config.eval_every` steps and at the end it reports the hard output
    predictions on the validation set; it keeps the parameters of the last
    point `report_validation` accepts and predicts the test set with them.

    Raises ProgramFailure for programs that do not build, are too large or
    make the training loss or an evaluation's output predictions non-finite.
    """
    t0 = time.perf_counter()
    parallel = DataParallel(jax.devices(), batch_size=config.batch_size,
                            eval_batch_size=config.eval_batch_size)
    spec, module, sample, variables = _abstract_model(triplet_fn, splits,
                                                      config)
    params_within_cap(variables, max_params)
    # Every batch goes to the devices split along its graph axis.
    to_devices = lambda batch: jax.device_put(
        batch, data_lib.graph_axis_shardings(batch, parallel.split))
    sample = to_devices(sample)

    if config.grad_clip_max_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_max_norm),
                         optax.scale_by_adam(),
                         optax.scale(-config.learning_rate))
    else:
        tx = optax.adam(config.learning_rate)

    def init(batch):
        init_key, noise_key = jax.random.split(jax.random.key(seed))
        params = module.init({'params': init_key, 'noise': noise_key}, batch,
                             train=False)['params']
        return TrainState(step=jnp.zeros((), jnp.int32), noise_key=noise_key,
                          params=params, opt_state=tx.init(params))

    def train_step(state, batch):
        def loss_of(params):
            outs, hints = module.apply(
                {'params': params}, batch, train=True,
                rngs={'noise': jax.random.fold_in(state.noise_key,
                                                  state.step)})
            return loss_fn(spec, batch, outs, hints)
        loss, grads = jax.value_and_grad(loss_of)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1,
                             params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state), loss

    def predict(params, batch):
        """Hard predictions, and bool [G]: whether each graph's raw output
        predictions are all finite (argmax and thresholds would hide NaN)."""
        outs, _ = module.apply({'params': params}, batch, train=False)
        finite = jnp.ones(batch.graph_mask.shape, bool)
        for pred in outs.values():
            finite &= jnp.all(
                jnp.isfinite(pred).reshape(pred.shape[0], -1), axis=-1)
        return metrics.postprocess(spec, outs), finite

    replicated = parallel.replicated
    init_jit = jax.jit(init, out_shardings=replicated)
    train_jit = jax.jit(train_step, out_shardings=replicated)
    predict_jit = jax.jit(predict)

    def eval_batch(dataset, rows):
        return to_devices(_host_batch(dataset, rows, config.eval_batch_size))

    def train_batch(size, step):
        return to_devices(_host_batch(splits.train[size], orders[size][step],
                                      config.batch_size))

    def predict_set(params, dataset, step, split):
        """Hard output predictions on `dataset`; non-finite output
        predictions of any real (not padding) graph make the program `nan`."""
        preds = []
        for rows in data_lib.eval_batches(dataset.num_samples,
                                          config.eval_batch_size):
            out, finite = jax.device_get(compiler.run(
                'predict', predict_jit, 'once', params,
                eval_batch(dataset, rows)))
            if not np.all(finite[:len(rows)]):
                raise base.ProgramFailure(
                    Status.NAN, f'non-finite output predictions at step '
                    f'{step} on the {split} inputs')
            preds.append({k: v[:len(rows)] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in preds]) for k in preds[0]}

    sizes = len(splits.train)
    orders = [batch_order(pool.num_samples, config.batch_size,
                          -(-config.num_steps // sizes), seed + i)
              for i, pool in enumerate(splits.train)]
    threads = config.compile_threads or compiling.default_threads()
    with compiling.Compiler(threads) as compiler:
        # Every program is lowered and its compile started before the first
        # step, init first, in the order they are needed.
        abstract_state = compiler.submit('init', init_jit, 'once', sample)
        for size in range(sizes):
            compiler.submit('train', train_jit, 'train', abstract_state,
                            train_batch(size, 0))
        for dataset in (splits.val, splits.test):
            first_rows = next(iter(data_lib.eval_batches(
                dataset.num_samples, config.eval_batch_size)))
            compiler.submit('predict', predict_jit, 'once',
                            abstract_state.params,
                            eval_batch(dataset, first_rows))
        state = compiler.run('init', init_jit, 'once', sample)
        build_s = time.perf_counter() - t0 - compiler.seconds  # The model.
        best_step, best_params = 0, None
        for step in range(config.num_steps):
            size = step % sizes
            state, loss = compiler.run('train', train_jit, 'train', state,
                                       train_batch(size, step // sizes))
            last = step + 1 == config.num_steps
            if (step + 1) % config.eval_every == 0 or last:
                if not np.isfinite(float(loss)):
                    raise base.ProgramFailure(
                        Status.NAN,
                        f'non-finite training loss at step {step + 1}')
                val = predict_set(state.params, splits.val, step + 1,
                                  'validation')
                if report_validation(step + 1, val):
                    best_step = step + 1
                    best_params = jax.device_get(state.params)
        test = predict_set(best_params, splits.test, best_step, 'test')
        compile_s = build_s + compiler.seconds
    total_s = time.perf_counter() - t0
    return base.Trained(
        param_shapes=param_shapes(variables),
        best_step=best_step, test_predictions=test, compile_s=compile_s,
        train_s=total_s - compile_s, final_train_loss=float(loss))


def score(dataset: data_lib.Dataset,
          predictions: Mapping[str, np.ndarray]) -> float:
    """The mean output score (`metrics.score`) of hard output predictions
    on `dataset`, against its outputs. Raises ValueError for predictions
    that do not fit the dataset."""
    truth = dataset.outputs
    if set(predictions) != set(truth):
        raise ValueError(f'predictions for {sorted(predictions)}, expected '
                         f'{sorted(truth)}')
    for name, want in truth.items():
        if predictions[name].shape != want.shape:
            raise ValueError(f'{name}: predictions {list(predictions[name].shape)}'
                             f', expected {list(want.shape)}')
        if not np.all(np.isfinite(predictions[name])):
            raise ValueError(f'{name}: non-finite predictions')
    return metrics.score(model_lib.model_spec(dataset), truth,
                         predictions)['score']


def train_and_evaluate(triplet_fn: Any, splits: Splits, config: TrainConfig,
                       *, max_params: int, seed: int) -> base.EvalResult:
    """`train_and_predict` on the redacted splits and its `judge.Judge`, in
    one process: for tests and benchmarks of trusted code (no sandbox).
    Returns an EvalResult without `source_sha256`."""
    sets = {'val': splits.val, 'test': splits.test}
    judge = judge_lib.Judge(lambda split, p: score(sets[split], p),
                            ('val_score', 'test_score'), max_params,
                            config.evaluation_steps)
    trained = train_and_predict(
        triplet_fn, dataclasses.replace(
            splits, val=data_lib.redacted(splits.val),
            test=data_lib.redacted(splits.test)),
        config, judge, max_params=max_params, seed=seed)
    return judge.verdict(trained)
