"""Children by program variation without an LM: what the baselines share.

* The child form. A child is the task's preamble followed by the varied
  program without its module docstring and without the imports the
  preamble provides (`prompts.prompt_code`): the form of EvoPrompting's
  children, so the seeds' docstrings (which describe the seed, not the
  child) are not inherited.
* The programs. The operators act on `class Model` programs (MNIST-1D's);
  `require_model_seeds` refuses a task whose seeds are not, such as CLRS's
  `get_triplet_msgs` functions, when the baseline is built, not rounds later.
* Redrawing. `draw_children` calls a maker until it gives a usable child:
  one whose operators applied (`mutation.NotAModel` otherwise), that differs
  from each of its parents, and (with `avoid_duplicates`) from every earlier
  candidate and every child drawn before it in the round, all compared in
  the child form after `search.normalise`. The search would record a
  repeated program as a duplicate that spends budget without being trained.
"""

from __future__ import annotations

from typing import Callable

from absl import logging
import numpy as np

from evoprompting import mutation, prompts, search
from evoprompting.tasks import base

# Makes one child from the generator, or raises mutation.NotAModel.
Maker = Callable[[np.random.Generator], search.Proposal]


def require_model_seeds(task: base.Task, method: str) -> None:
    """Raises ValueError unless every seed of `task` is a `class Model`
    program the operators apply to (`mutation.is_model`)."""
    others = [s.name for s in task.seed_programs() if not mutation.is_model(s.source)]
    if others:
        raise ValueError(
            f'{method} varies `class Model` programs (evoprompting/mutation.py), '
            f'but task {task.name!r} has seeds without one: {", ".join(others)}. '
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
                  history: search.History, preamble: str,
                  avoid_duplicates: bool, max_tries: int
                  ) -> list[search.Proposal]:
    """`count` children of `make`, each redrawn up to `max_tries` times until
    usable (see the module docstring).

    Args:
      count: children to return.
      make: builds one child (in the child form) with its parents' ids.
      rng: passed to every call of `make`.
      history: the candidates evaluated so far; parents are looked up here.
      preamble: the task's preamble (the child form).
      avoid_duplicates: also redraw children equal to an earlier candidate or
        to an earlier child of this call.
      max_tries: draws per child. When none of them is new, the last one
        that differs from its parents is used (the search then records it as
        a duplicate), with a warning.

    Raises:
      search.SearchError: no draw of `max_tries` gave a program that differs
        from its parents.
    """
    form = lambda source: search.normalise(child_source(source, preamble))
    known = {c.id: form(c.source) for c in history.candidates}
    seen = set(known.values())
    children = []
    for i in range(count):
        fallback = None
        for _ in range(max_tries):
            try:
                child = make(rng)
            except mutation.NotAModel:
                continue
            key = form(child.source)
            if any(known[p] == key for p in child.parents):
                continue
            fallback = (child, key)
            if not (avoid_duplicates and key in seen):
                break
        else:
            if fallback is None:
                raise search.SearchError(
                    f'child {i}: none of {max_tries} draws gave a program that '
                    'differs from its parents; raise max_tries')
            logging.warning('Child %d: no new program in %d draws; proposing a '
                            'repeated one', i, max_tries)
        child, key = fallback
        seen.add(key)
        children.append(child)
    return children
