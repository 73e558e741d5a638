"""Regularized (aging) evolution with AST mutations, no LM: a baseline.

Real, Aggarwal, Huang & Le (2019), "Regularized Evolution for Image
Classifier Architecture Search", Algorithm 1, run in the search's rounds:

* Population: the `population_size` most recent scored candidates, in the
  search's order (seeds first, then by (round, proposal)), of everything
  evaluated before the round. Aging: a candidate leaves when
  `population_size` younger ones have been scored, however fit it is. The
  population is derived from the history each round, so nothing is saved and
  a resumed search continues exactly.
* Tournament: `tournament_size` candidates drawn uniformly with replacement
  from the population (as in Real et al.'s Algorithm 1); the fittest is the
  parent (ties: the first drawn). Fitness is the search's,
  -(params x val_error).
* Mutation: the child is the parent after `num_mutations` random operators
  of `evoprompting.mutation` (Real et al.: one).

Choices of ours (each a field of `RegularizedEvolutionConfig`):
* Batched rounds. Real et al. evolve one child at a time (asynchronously,
  many in flight); here every child of a round is drawn from the population
  of that round's start, as EvoPrompting's children are.
* Who joins the population: only scored candidates. Failed children, those
  whose validation error is not below alpha, and duplicates have no fitness
  (Real et al.'s search space has no failures, and a duplicate is not
  trained again, so it does not rejuvenate its program).
* Crossover (not in Real et al.): with probability `crossover_prob` a child
  is instead `mutation.crossover` of the winners of two tournaments, without
  further mutation. Default 0, Real et al.'s setting.
* Redrawing (`variation.draw_children`): a draw whose operators do not
  apply is replaced by a fresh draw (parents included), at most `max_tries`
  times. A child that repeats a known program is proposed, and the search
  records it as a duplicate that spends budget, as for every method.
* The child form (`variation.child_source`): the task's preamble and the
  program without docstring, as EvoPrompting's children.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from evoprompting import mutation, search
from evoprompting.baselines import variation
from evoprompting.tasks import base


@dataclasses.dataclass(frozen=True)
class RegularizedEvolutionConfig:
    """Regularized evolution's settings (defaults: Real et al.'s P and S).

    Attributes:
      children_per_round: children proposed each round (the sample budget).
      population_size: P, the scored candidates that stay alive.
      tournament_size: S, candidates drawn per tournament.
      num_mutations: mutation operators applied to make a child.
      crossover_prob: probability that a child is a crossover of two
        tournament winners instead of a mutant.
      max_tries: draws per child before giving up (no operator applied).
    """

    children_per_round: int = 160
    population_size: int = 100
    tournament_size: int = 25
    num_mutations: int = 1
    crossover_prob: float = 0.0
    max_tries: int = 20

    def __post_init__(self):
        for name in ('children_per_round', 'population_size', 'tournament_size',
                     'num_mutations', 'max_tries'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if not 0.0 <= self.crossover_prob <= 1.0:
            raise ValueError(
                f'crossover_prob must be in [0, 1], got {self.crossover_prob}')


def population(history: search.History, round_index: int,
               population_size: int) -> list[tuple[int, float]]:
    """(id, fitness) of round `round_index`'s population, oldest first."""
    seen = history.before(round_index)
    scored = [(c.id, f) for c, f in zip(seen.candidates, seen.fitness)
              if f is not None]
    return scored[-population_size:]


def tournament(members: list[tuple[int, float]], size: int,
               rng: np.random.Generator) -> int:
    """Id of the fittest of `size` members drawn uniformly with replacement
    (ties: the first drawn)."""
    drawn = rng.integers(len(members), size=size)
    return members[max(drawn, key=lambda i: members[i][1])][0]


class RegularizedEvolution:
    """Regularized evolution (a `search.Proposer`; see the module docstring).

    Raises ValueError when built for a task whose seeds are not `class Model`
    programs (`variation.require_model_seeds`).
    """

    def __init__(self, *, task: base.Task,
                 config: RegularizedEvolutionConfig = RegularizedEvolutionConfig()):
        variation.require_model_seeds(task, 'regularized evolution')
        self.task = task
        self.config = config

    def start(self, workdir: str, completed_rounds: int) -> None:
        """Nothing to restore: the population comes from the history."""
        del workdir, completed_rounds

    def propose(self, round_index: int, history: search.History,
                rng: np.random.Generator) -> list[search.Proposal]:
        cfg = self.config
        members = population(history, round_index, cfg.population_size)
        if not members:
            raise search.SearchError(
                f'round {round_index}: no scored candidate to evolve from')
        seen = history.before(round_index)

        def make(rng: np.random.Generator) -> search.Proposal:
            parent = tournament(members, cfg.tournament_size, rng)
            if rng.random() < cfg.crossover_prob:
                other = tournament(members, cfg.tournament_size, rng)
                program = mutation.crossover(seen.by_id(parent).source,
                                             seen.by_id(other).source, rng)
                parents = (parent, other)
            else:
                program = variation.mutate_times(
                    seen.by_id(parent).source, cfg.num_mutations, rng)
                parents = (parent,)
            return search.Proposal(
                variation.child_source(program, self.task.preamble), parents)

        return variation.draw_children(cfg.children_per_round, make, rng,
                                       max_tries=cfg.max_tries)

    def learn(self, round_index: int, history: search.History,
              rng: np.random.Generator) -> Mapping[str, float]:
        """Nothing is learnt; returns the next round's population statistics."""
        del rng
        members = population(history, round_index + 1,
                             self.config.population_size)
        return {'population/size': float(len(members)),
                'population/mean_fitness': float(np.mean([f for _, f in members]))
                if members else float('nan')}
