"""Random search over mutants of the seeds, no LM and no selection: a baseline.

Each child is a seed program drawn uniformly, after a number of random
`evoprompting.mutation` operators drawn uniformly from 1..`max_mutations`.
Nothing evaluated is ever used again: children are independent of each other
and of every result, so the rounds only batch the sample budget.

Choices of ours (each a field of `RandomSearchConfig`):
* The search space. Our programs have no explicit space to sample from;
  "random" is a random walk of random length from a random seed. The gin
  file sets `max_mutations` to the number of rounds, so random search
  reaches as far from the seeds as an evolutionary search mutating once per
  round can.
* Every seed is a starting point, scored or not (no selection at all); a
  seed no operator applies to is redrawn.
* Redrawing and the child form as in regularized evolution
  (`variation.draw_children`, `variation.child_source`): only a draw no
  operator applies to is redrawn; a repeated program is a duplicate that
  spends budget, as for every method.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from evoprompting import search
from evoprompting.baselines import variation
from evoprompting.tasks import base


@dataclasses.dataclass(frozen=True)
class RandomSearchConfig:
    """Random search's settings.

    Attributes:
      children_per_round: children proposed each round (the sample budget).
      max_mutations: most mutation operators applied to a seed.
      max_tries: draws per child before giving up (no operator applied).
    """

    children_per_round: int = 160
    max_mutations: int = 10
    max_tries: int = 20

    def __post_init__(self):
        for name in ('children_per_round', 'max_mutations', 'max_tries'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')


class RandomSearch:
    """Random search (a `search.Proposer`; see the module docstring).

    Raises ValueError when built for a task whose seeds are not `class Model`
    programs (`variation.require_model_seeds`).
    """

    def __init__(self, *, task: base.Task,
                 config: RandomSearchConfig = RandomSearchConfig()):
        variation.require_model_seeds(task, 'random search')
        self.task = task
        self.config = config

    def start(self, workdir: str, completed_rounds: int) -> None:
        """Nothing to restore."""
        del workdir, completed_rounds

    def propose(self, round_index: int, history: search.History,
                rng: np.random.Generator) -> list[search.Proposal]:
        cfg = self.config
        seeds = [c for c in history.candidates
                 if c.round == search.SEED_ROUND and c.duplicate_of is None]
        if not seeds:
            raise search.SearchError('random search needs the seeds in the history')

        def make(rng: np.random.Generator) -> search.Proposal:
            seed = seeds[rng.integers(len(seeds))]
            times = int(rng.integers(1, cfg.max_mutations + 1))
            program = variation.mutate_times(seed.source, times, rng)
            return search.Proposal(
                variation.child_source(program, self.task.preamble), (seed.id,))

        return variation.draw_children(cfg.children_per_round, make, rng,
                                       max_tries=cfg.max_tries)

    def learn(self, round_index: int, history: search.History,
              rng: np.random.Generator) -> Mapping[str, float]:
        """Nothing is learnt."""
        del round_index, history, rng
        return {}
