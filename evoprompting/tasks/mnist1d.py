"""MNIST-1D as a search task (Greydanus 2020; EvoPrompting section 4.1).

Program contract (the paper's Listing 1), shown verbatim in prompts:

    The program defines `class Model(nn.Module)` (flax.linen, imported as `nn`;
    `jax`, `jax.numpy as jnp` are imported too). `Model()` must be constructible
    without arguments. `Model.__call__(self, x)` maps float32 inputs of shape
    [batch, 40] to logits of shape [batch, 10]. If `__call__` has a `train`
    keyword, it receives `train=True` while training and `train=False` while
    evaluating, and a 'dropout' RNG stream is provided while training; mutable
    collections such as 'batch_stats' are updated while training.

Data: the `mnist1d` package's generator (4,000 train / 1,000 test, length
40), run offline and cached as .npz. By default it runs with this machine's
private seed, drawn once and kept beside the cache, where sandboxed programs
cannot see it: with mnist1d's public default seed (42, the published
dataset) a program could rerun the generator and look its labels up.
`generator_seed=42` gives the published dataset, for comparisons with
published figures (the benchmarks use it, `gin/mnist1d/standard_data.gin`).
As in the paper, 500 training examples are held out at random (fixed seed)
as the validation set. The search sees validation accuracy only; test accuracy is
measured at the step of best validation accuracy and reported.

Training (the paper's section 4.2, all values in `TrainConfig` and gin):
AdamW, learning rate 0.01, batch 128, 8,000 steps; validation every
`eval_every` steps; fitness uses the best validation accuracy seen.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
from typing import Any, Mapping

import numpy as np

from evoprompting import paths
from evoprompting.paths import default_cache_dir
from evoprompting.tasks import base
from seeds import read_seeds

INPUT_LENGTH = 40
NUM_CLASSES = 10

CONTRACT = (
    'The program defines `class Model(nn.Module)` (flax.linen, imported as `nn`;'
    ' `jax` and `jax.numpy as jnp` are imported too). `Model()` must be'
    ' constructible without arguments. `Model.__call__(self, x)` maps float32'
    f' inputs of shape [batch, {INPUT_LENGTH}] to logits of shape'
    f' [batch, {NUM_CLASSES}]. If `__call__` has a `train` keyword, it receives'
    ' `train=True` while training and `train=False` while evaluating, and a'
    " 'dropout' RNG stream is provided while training; mutable collections such"
    " as 'batch_stats' are updated while training.")

PREAMBLE = 'import jax\nimport jax.numpy as jnp\nimport flax.linen as nn\n'
# The line every prompt ends with and every child starts from.
PROMPT_OPENING = 'class Model(nn.Module):'


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how validation is carved out.

    Attributes:
      cache_dir: folder for the generated arrays; '' means `default_cache_dir()`.
      num_validation: training examples held out as the validation set.
      validation_seed: seed of the random hold-out.
      generator_seed: seed passed to mnist1d's generator; 42 (its default)
        gives the published dataset; None, this machine's private seed
        (`private_seed`).
    """

    cache_dir: str = ''
    num_validation: int = 500
    validation_seed: int = 0
    generator_seed: int | None = None

    @property
    def folder(self) -> str:
        return os.path.join(self.cache_dir or default_cache_dir(), 'mnist1d')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How every child is trained. Defaults are the paper's values.

    Attributes:
      num_steps: optimizer steps.
      batch_size: examples per step; batches are drawn by epoch-wise shuffling.
      learning_rate: AdamW learning rate (constant).
      weight_decay: AdamW weight decay (optax's default; the paper is silent).
      eval_every: steps between validation measurements; the step of the best
        validation accuracy also fixes the reported test accuracy.
      steps_per_call: optimizer steps unrolled into one compiled call; must
        divide `eval_every`. Fewer host round trips, longer compiles.
    """

    num_steps: int = 8000
    batch_size: int = 128
    learning_rate: float = 0.01
    weight_decay: float = 1e-4
    eval_every: int = 200
    steps_per_call: int = 1

    @property
    def evaluation_steps(self) -> tuple[int, ...]:
        return tuple(range(self.eval_every, self.num_steps + 1, self.eval_every))

    def __post_init__(self):
        for name in ('num_steps', 'batch_size', 'eval_every', 'steps_per_call'):
            if getattr(self, name) <= 0:
                raise ValueError(f'TrainConfig.{name} must be positive')
        if self.eval_every % self.steps_per_call:
            raise ValueError(
                f'TrainConfig.steps_per_call={self.steps_per_call} must divide '
                f'eval_every={self.eval_every}')
        if self.num_steps % self.eval_every:
            raise ValueError(
                f'TrainConfig.eval_every={self.eval_every} must divide '
                f'num_steps={self.num_steps}')


@dataclasses.dataclass(frozen=True)
class Splits:
    """float32 inputs [n, 40] and int32 labels [n] of each split."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _generator_args(seed: int) -> dict[str, Any]:
    from mnist1d.data import get_dataset_args  # pylint: disable=g-import-not-at-top
    args = get_dataset_args(as_dict=True)
    args.pop('url')  # Only used by mnist1d's downloader, which we never call.
    args['seed'] = seed
    return args


PRIVATE_SEED_FILE = 'private_seed'


def private_seed(folder: str) -> int:
    """This machine's private generator seed, kept in `folder`/private_seed.

    Drawn once from os.urandom (32 bits, what mnist1d's numpy seeding takes)
    by whichever process needs it first, written readable by its owner only,
    and read back by every later run, so searches and resumes on this machine
    see the same data. The folder is among the task's `private_paths`.
    """
    return int(paths.write_once(
        os.path.join(folder, PRIVATE_SEED_FILE),
        f'{int.from_bytes(os.urandom(4), "little")}\n'))


def generate_arrays(config: DataConfig) -> dict[str, np.ndarray]:
    """Generates MNIST-1D offline, or reads it from the cache.

    The cache file name holds a hash of the generator arguments, so a change of
    arguments never reads stale data. Writes are atomic (temp file + rename).
    """
    folder = config.folder
    seed = config.generator_seed
    args = _generator_args(private_seed(folder) if seed is None else seed)
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()
    path = os.path.join(folder, f'mnist1d-{key[:16]}.npz')
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    from mnist1d.data import make_dataset  # pylint: disable=g-import-not-at-top
    from mnist1d.utils import ObjectView  # pylint: disable=g-import-not-at-top
    # make_dataset seeds numpy's and random's global generators; keep ours.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {'x': raw['x'], 'y': raw['y'],
              'x_test': raw['x_test'], 'y_test': raw['y_test']}
    os.makedirs(folder, exist_ok=True)
    tmp = f'{path}.{os.getpid()}.tmp.npz'
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


@functools.lru_cache(maxsize=4)
def load_splits(config: DataConfig) -> Splits:
    """Train / validation / test splits; validation is a seeded random hold-out."""
    arrays = generate_arrays(config)
    x, y = arrays['x'].astype(np.float32), arrays['y'].astype(np.int32)
    if not 0 < config.num_validation < len(x):
        raise ValueError(f'num_validation must be in (0, {len(x)})')
    order = np.random.default_rng(config.validation_seed).permutation(len(x))
    val, train = order[:config.num_validation], order[config.num_validation:]
    return Splits(train_x=x[train], train_y=y[train], val_x=x[val],
                  val_y=y[val], test_x=arrays['x_test'].astype(np.float32),
                  test_y=arrays['y_test'].astype(np.int32))


@dataclasses.dataclass(frozen=True)
class Mnist1dTask:
    """MNIST-1D classification; fitness from best validation accuracy.

    Attributes:
      data: dataset and split configuration.
      train: training budget and optimizer.
      max_params: programs with more parameters are `too_large`, decided from
        the abstract initialisation before any training.
      seeds_dir: a folder of the user's own seed programs (`*.py`, each a
        program under the contract); '' for the shipped seeds/mnist1d.
    """

    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    max_params: int = 5_000_000
    seeds_dir: str = ''
    name: str = 'mnist1d'

    @property
    def contract(self) -> str:
        return CONTRACT

    @property
    def preamble(self) -> str:
        return PREAMBLE

    @property
    def prompt_opening(self) -> str:
        return PROMPT_OPENING

    @property
    def objectives(self) -> tuple[str, str]:
        return ('val_accuracy', 'test_accuracy')

    def seed_programs(self) -> list[base.SeedProgram]:
        return [base.SeedProgram(name, source)
                for name, source in read_seeds('mnist1d', self.seeds_dir)]

    def private_paths(self) -> tuple[str, ...]:
        return (self.data.cache_dir or default_cache_dir(),
                *base.package_dirs('mnist1d'))

    def host_files(self) -> dict[str, str]:
        if self.data.generator_seed is not None:
            return {}
        path = os.path.join(self.data.folder, PRIVATE_SEED_FILE)
        return {os.path.relpath(path, self.private_paths()[0]):
                f'{private_seed(self.data.folder)}\n'}

    def prepare(self) -> None:
        load_splits(self.data)

    def worker_inputs(self) -> dict[str, np.ndarray]:
        from evoprompting.tasks import classifier_training  # pylint: disable=g-import-not-at-top
        return classifier_training.worker_inputs(load_splits(self.data))

    def run_program(self, program: dict[str, Any], seed: int,
                    inputs: Mapping[str, np.ndarray],
                    report_validation: base.ReportValidation) -> base.Trained:
        """Builds `program['Model']`, trains it, predicts. Workers only."""
        from evoprompting.tasks import classifier_training  # pylint: disable=g-import-not-at-top
        return classifier_training.train_and_predict(
            program.get('Model'), inputs, self.train, report_validation,
            max_params=self.max_params, seed=seed, num_classes=NUM_CLASSES)

    def build_program(self, program: dict[str, Any],
                      inputs: Mapping[str, np.ndarray]
                      ) -> tuple[tuple[int, ...], ...]:
        """Builds `program['Model']` abstractly. Workers only."""
        from evoprompting.tasks import classifier_training  # pylint: disable=g-import-not-at-top
        return classifier_training.build_params(
            program.get('Model'), inputs, self.train,
            max_params=self.max_params, num_classes=NUM_CLASSES)

    @property
    def evaluation_steps(self) -> tuple[int, ...]:
        return self.train.evaluation_steps

    def score_predictions(self, split: str,
                          predictions: Mapping[str, np.ndarray]) -> float:
        from evoprompting.tasks import classifier_training  # pylint: disable=g-import-not-at-top
        splits = load_splits(self.data)
        labels = {'val': splits.val_y, 'test': splits.test_y}[split]
        return classifier_training.accuracy(predictions, labels)
