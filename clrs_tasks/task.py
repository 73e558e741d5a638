"""CLRS-30 as a search task (EvoPrompting section 4.2).

Candidates are triplet-message functions (`processors.TRIPLET_CONTRACT`),
plugged into a Triplet-GMPNN and trained on one algorithm with the recipe of
`train.py` (the paper's search budget: 2,000 steps per child). Metrics:
`val_score` (the best validation score, in-distribution size 16) decides
fitness; `test_score` is the out-of-distribution score at size 64 with the
parameters of the best validation score.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from clrs_tasks import data as data_lib
from clrs_tasks import processors
from clrs_tasks import train as train_lib
from evoprompting.paths import default_cache_dir
from evoprompting.tasks import base
from seeds import read_seeds


@dataclasses.dataclass(frozen=True)
class ClrsTask:
    """One CLRS-30 algorithm; fitness from the best validation score.

    Attributes:
      data: the algorithm and its datasets.
      train: training budget and model settings.
      max_params: programs whose whole model has more parameters are
        `too_large`, decided from the abstract initialisation.
      seeds: names of the seed programs that start the search (file names
        in the seeds folder without .py); empty: all of them (the shipped
        nine, as in the paper).
      seeds_dir: a folder of the user's own seed programs (`*.py`, each a
        `get_triplet_msgs`); '' for the shipped seeds/clrs.
    """

    data: data_lib.DataConfig = data_lib.DataConfig()
    train: train_lib.TrainConfig = train_lib.TrainConfig()
    max_params: int = 5_000_000
    seeds: tuple[str, ...] = ()
    seeds_dir: str = ''
    name: str = 'clrs'

    def __post_init__(self):
        try:
            known = [name for name, _ in read_seeds('clrs', self.seeds_dir)]
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
        unknown = sorted(set(self.seeds) - set(known))
        if unknown:
            raise ValueError(f'unknown CLRS seeds {unknown}; the seeds are '
                             f'{", ".join(known)}')

    @property
    def contract(self) -> str:
        return processors.TRIPLET_CONTRACT

    @property
    def preamble(self) -> str:
        return processors.PREAMBLE

    @property
    def prompt_opening(self) -> str:
        return processors.TRIPLET_OPENING

    @property
    def objectives(self) -> tuple[str, str]:
        return ('val_score', 'test_score')

    def seed_programs(self) -> list[base.SeedProgram]:
        return [base.SeedProgram(name, source)
                for name, source in read_seeds('clrs', self.seeds_dir)
                if not self.seeds or name in self.seeds]

    def private_paths(self) -> tuple[str, ...]:
        # The data cache only: workers need dm-clrs' specs, and a CLRS answer
        # is a known function of its inputs anyway. What hiding the answers
        # guards is the score, which the parent computes.
        return (self.data.cache_dir or default_cache_dir(),)

    def host_files(self) -> dict[str, str]:
        return {}  # Every dataset comes from fixed sampler seeds.

    def prepare(self) -> None:
        data_lib.load_splits(self.data)

    def worker_inputs(self) -> dict[str, np.ndarray]:
        """The training pools whole; validation and test sets redacted."""
        train_pools, val, test = data_lib.load_splits(self.data)
        arrays = {}
        for i, pool in enumerate(train_pools):
            arrays.update(data_lib.to_arrays(pool, f'train{i}/'))
        arrays.update(data_lib.to_arrays(data_lib.redacted(val), 'val/'))
        arrays.update(data_lib.to_arrays(data_lib.redacted(test), 'test/'))
        return arrays

    def run_program(self, program: dict[str, Any], seed: int,
                    inputs: Mapping[str, np.ndarray],
                    report_validation: base.ReportValidation) -> base.Trained:
        """Trains a model with `program['get_triplet_msgs']`. Workers only."""
        return train_lib.train_and_predict(
            program.get('get_triplet_msgs'), self._splits(inputs), self.train,
            report_validation, max_params=self.max_params, seed=seed)

    def build_program(self, program: dict[str, Any],
                      inputs: Mapping[str, np.ndarray]
                      ) -> tuple[tuple[int, ...], ...]:
        """Builds the model with `program['get_triplet_msgs']` abstractly.
        Workers only."""
        return train_lib.build_params(
            program.get('get_triplet_msgs'), self._splits(inputs), self.train,
            max_params=self.max_params)

    def _splits(self, inputs: Mapping[str, np.ndarray]) -> train_lib.Splits:
        pools = len(self.data.train_keys())
        return train_lib.Splits(
            train=[data_lib.from_arrays(inputs, f'train{i}/')
                   for i in range(pools)],
            val=data_lib.from_arrays(inputs, 'val/'),
            test=data_lib.from_arrays(inputs, 'test/'))

    @property
    def evaluation_steps(self) -> tuple[int, ...]:
        return self.train.evaluation_steps

    def score_predictions(self, split: str,
                          predictions: Mapping[str, np.ndarray]) -> float:
        _, val, test = data_lib.load_splits(self.data)
        return train_lib.score({'val': val, 'test': test}[split], predictions)
