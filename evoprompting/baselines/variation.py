"""Children by program variation without an LM: what the baselines share.

* The child form. A child is the task's preamble followed by the varied
  program without its module docstring and without the imports the
  preamble provides (`prompts.prompt_code`): the form of EvoPrompting's
  children, so the seeds' docstrings (which describe the seed, not the
  child) are not inherited.
* The programs. The operators act on `class Model` programs (MNIST-1D's);
  `require_model_seeds` refuses a task whose seeds are not, such as CLRS's
  `get_triplet_msgs` functions, when the baseline is built, not rounds later.
* Redrawing. `draw_children` calls a maker until its operators apply
  (`mutation.NotAModel` otherwise): a mutation that gives no program is not
  a proposal and costs nothing. A child that repeats a known program
  (a parent, or any earlier candidate) is proposed like any other: the
  search records it as a duplicate that spends budget untrained, the same
  rule as for an LM's copies.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from evoprompting import mutation, prompts, search
from evoprompting.tasks import base

# Makes one child from the generator, or raises mutation.NotAModel.
Maker = Callable[[np.random.Generator], search.Proposal]


def require_model_seeds(task: base.Task, method: str) -> None:
    """Raises ValueError unless every seed of `task` is a program the
    operators apply to (`mutation.is_model`: a `class Model` or a
    `get_triplet_msgs` function)."""
    others = [s.name for s in task.seed_programs() if not mutation.is_model(s.source)]
    if others:
        raise ValueError(
            f'{method} varies programs with a `class Model` or a '
            '`get_triplet_msgs` function (evoprompting/mutation.py), '
            f'but task {task.name!r} has seeds with neither: {", ".join(others)}. '
            'Search this task with an LM method (gin/search/evoprompting.gin, '
            'naive_few_shot.gin, no_prompt_tuning.gin, random_parents.gin).')


def child_source(program: str, preamble: str) -> str:
    """`program` in the child form (see the module docstring)."""
    return preamble + '\n\n' + prompts.prompt_code(program, preamble)


def mutate_times(program: str, times: int, rng: np.random.Generator) -> str:
    """`program` after `times` successive `mutation.mutate` steps.

    Raises:
      mutation.NotAModel: `program` is not a model, or at some step no
        mutation applies.
    """
    for _ in range(times):
        program, _ = mutation.mutate(program, rng)
    return program


def draw_children(count: int, make: Maker, rng: np.random.Generator, *,
                  max_tries: int) -> list[search.Proposal]:
    """`count` children of `make`, each redrawn up to `max_tries` times until
    its operators apply (see the module docstring).

    Raises:
      search.SearchError: none of `max_tries` draws gave a program.
    """
    children = []
    for i in range(count):
        for _ in range(max_tries):
            try:
                children.append(make(rng))
                break
            except mutation.NotAModel:
                continue
        else:
            raise search.SearchError(
                f'child {i}: no operator applied in {max_tries} draws; raise '
                'max_tries')
    return children
