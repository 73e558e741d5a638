"""Few-shot crossover prompts (EvoPrompting section 3.3, Listing 1).

A prompt shows k parent programs, each under a `Metrics:` header, then a
header of *target* metrics, then the opening line of a new program; the LM
writes the rest. Everything here is a pure function of structured inputs, and
the exact text is pinned by golden tests (tests/prompts_test.py): a template
that drifts silently ruins a search and the LM's training corpus alike.

    \"\"\"Metrics:
    {'num_params': '4800', 'val_accuracy': '0.865'}
    \"\"\"
    class Model(nn.Module):
        ...

    \"\"\"Metrics:
    {'num_params': '4300', 'val_accuracy': '0.880'}
    \"\"\"
    class Model(nn.Module):

Target metrics follow the paper: 90% of the smallest parent's parameter count
rounded to the nearest 100, and 102% of the best parent's validation accuracy
rounded to 3 decimals. The paper is silent on targets above 1.0; we cap the
accuracy target at `max_accuracy` (1.0 by default).
"""

from __future__ import annotations

import ast
import dataclasses
import math
from typing import Sequence

METRICS_HEADER = '"""Metrics:\n'
STOP = '"""Metrics:'  # A child ends where the LM starts another example.


@dataclasses.dataclass(frozen=True)
class Metrics:
    """The metrics a prompt shows for one program."""

    num_params: int
    val_accuracy: float

    def render(self) -> str:
        """The header block, e.g. \"\"\"Metrics:\\n{'num_params': ...}\\n\"\"\"."""
        fields = {'num_params': str(self.num_params),
                  'val_accuracy': f'{self.val_accuracy:.3f}'}
        return f'{METRICS_HEADER}{fields!r}\n"""\n'


@dataclasses.dataclass(frozen=True)
class Example:
    """A program with its measured metrics, as shown in a prompt."""

    code: str  # The program as shown: no module docstring, no preamble imports.
    metrics: Metrics

    def render(self) -> str:
        return self.metrics.render() + self.code.rstrip('\n') + '\n'


def target_metrics(parents: Sequence[Metrics], *,
                   size_factor: float = 0.9, size_rounding: int = 100,
                   accuracy_factor: float = 1.02,
                   max_accuracy: float = 1.0) -> Metrics:
    """The paper's targets: smaller than the smallest, better than the best."""
    if not parents:
        raise ValueError('a prompt needs at least one parent')
    size = min(p.num_params for p in parents) * size_factor
    size = max(size_rounding, int(round(size / size_rounding)) * size_rounding)
    accuracy = min(max_accuracy, max(p.val_accuracy for p in parents)
                   * accuracy_factor)
    return Metrics(num_params=size, val_accuracy=round(accuracy, 3))


def nearest_target_last(parents: Sequence[Example],
                        target: Metrics) -> list[Example]:
    """`parents` from the farthest to the nearest to the target size (by the
    ratio of parameter counts; ties keep their order). An LM whose copy prior
    prefers what the prompt shows last (`lm.sampler`, `copy_half_life`) then
    mostly copies the parent whose size the target asks for."""
    distance = lambda p: abs(math.log(max(p.metrics.num_params, 1)
                                      / max(target.num_params, 1)))
    return sorted(parents, key=distance, reverse=True)


def few_shot_prompt(parents: Sequence[Example], target: Metrics,
                    opening: str) -> str:
    """Parents in the given order, then the target header and `opening`."""
    shots = '\n'.join(p.render() for p in parents)
    return f'{shots}\n{target.render()}{opening}'


def child_source(opening: str, completion: str) -> str:
    """The child program: `opening` + the completion up to the next header."""
    body = completion.split(STOP, 1)[0]
    return (opening + body).rstrip() + '\n'


def prompt_code(source: str, preamble: str) -> str:
    """A program as prompts show it: without its module docstring and without
    the imports the task's preamble already provides.

    Other lines (comments, other imports, helper functions) are kept verbatim.
    A source that does not parse is returned unchanged.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    provided = {ast.dump(node) for node in ast.parse(preamble).body}
    drop = set()
    for i, node in enumerate(tree.body):
        is_docstring = (i == 0 and isinstance(node, ast.Expr)
                        and isinstance(node.value, ast.Constant)
                        and isinstance(node.value.value, str))
        if is_docstring or ast.dump(node) in provided:
            drop.update(range(node.lineno, node.end_lineno + 1))
    lines = source.splitlines()
    kept = [line for n, line in enumerate(lines, start=1) if n not in drop]
    return '\n'.join(kept).strip('\n') + '\n'
