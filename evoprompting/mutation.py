"""AST-level mutation and crossover of model programs, without an LM.

The variation operators of the regularized-evolution baseline (Real et al.,
2019), and of the synthetic episodes the default LM learns from. A program
has an *entry function*: the `__call__` of its `class Model(nn.Module)`
(MNIST-1D) or its top-level `get_triplet_msgs` (CLRS), whose body is a list of
statements; operators act on that body and on the literal arguments of layer
calls:

  * `resize`: scale one integer literal argument of a call (features, kernel
    size, strides, window shapes) by a random factor;
  * `swap_activation`: replace one activation function by another;
  * `duplicate`: repeat one statement of the entry function (deepens the
    network);
  * `delete`: drop one statement of the entry function that is not the return;
  * `crossover`: the first part of one parent's entry function followed by
    the rest of the other's (one-point crossover on statements); helpers come
    from the first parent, class fields from both;
  * `splice`: one statement of another program's entry function inserted into
    this one's (a layer borrowed from the other parent);
  * `reroll`: every integer literal of the layer calls and class fields
    drawn afresh (widths, kernels, strides, windows), and optionally every
    activation, which makes unusual variants of a program.

The results are only syntactically valid: they may not build. Like LM
children, they go through the sandbox, which says so. All randomness comes
from the `numpy.random.Generator` the caller passes in.
"""

from __future__ import annotations

import ast
import copy
from typing import Callable

import numpy as np

ACTIVATIONS = ('relu', 'gelu', 'silu', 'tanh', 'elu', 'sigmoid', 'swish')
SCALES = (0.25, 0.5, 0.75, 1.5, 2.0, 3.0)
# `reroll` ranges (inclusive) by keyword; every other integer is a width.
SMALL_INTS = {'kernel_size': (1, 11), 'window_shape': (1, 4), 'strides': (1, 3),
              'padding': (0, 3), 'kernel_dilation': (1, 3), 'nlayer': (1, 4)}
WIDTHS = (3, 300)


# Top-level functions that are a program's entry function when it has no
# `class Model`: the CLRS triplet-message function.
ENTRY_FUNCTIONS = ('get_triplet_msgs',)


class NotAModel(ValueError):
    """The source has no entry function: neither a `class Model` with a
    `__call__` method nor a top-level function of `ENTRY_FUNCTIONS`."""


def _call_method(tree: ast.Module) -> ast.FunctionDef:
    """The entry function: `Model.__call__`, else a top-level function of
    `ENTRY_FUNCTIONS`."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == 'Model':
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == '__call__':
                    return item
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in ENTRY_FUNCTIONS:
            return node
    raise NotAModel('no `class Model` with a `__call__` method and no '
                    f'top-level {" or ".join(ENTRY_FUNCTIONS)} function')


def _parse(source: str) -> tuple[ast.Module, ast.FunctionDef]:
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise NotAModel(f'does not parse: {e}') from None
    return tree, _call_method(tree)


def is_model(source: str) -> bool:
    """Whether the operators apply to `source`: it parses and has an entry
    function (`Model.__call__` or `get_triplet_msgs`)."""
    try:
        _parse(source)
    except NotAModel:
        return False
    return True


def _int_constants(fn: ast.FunctionDef) -> list[ast.Constant]:
    """Positive int literals inside call arguments (incl. tuples) in `fn`."""
    found = []
    for call in ast.walk(fn):
        if not isinstance(call, ast.Call):
            continue
        values = [*call.args, *(k.value for k in call.keywords)]
        for value in values:
            items = value.elts if isinstance(value, (ast.Tuple, ast.List)) else [value]
            found += [c for c in items if isinstance(c, ast.Constant)
                      and type(c.value) is int and c.value > 0]
    return found


def _int_sites(tree: ast.Module, fn: ast.FunctionDef
               ) -> list[tuple[ast.Constant, str]]:
    """Positive int literals of `fn`'s call keywords and of the Model class
    fields, each with its keyword or field name ('' for positional)."""
    found = []
    for call in ast.walk(fn):
        if not isinstance(call, ast.Call):
            continue
        named = [('', a) for a in call.args] + [(k.arg or '', k.value)
                                              for k in call.keywords]
        for name, value in named:
            items = value.elts if isinstance(value, (ast.Tuple, ast.List)) else [value]
            found += [(c, name) for c in items if isinstance(c, ast.Constant)
                      and type(c.value) is int and c.value > 0]
    _, fields = _class_fields(tree)
    for name, field in fields.items():
        if (isinstance(field.value, ast.Constant) and type(field.value.value) is int
                and field.value.value > 0):
            found.append((field.value, name))
    return found


def _activations(fn: ast.FunctionDef) -> list[ast.Attribute]:
    return [n for n in ast.walk(fn) if isinstance(n, ast.Attribute)
            and n.attr in ACTIVATIONS and isinstance(n.value, ast.Name)
            and n.value.id in ('nn', 'jax')]


def _body_statements(fn: ast.FunctionDef) -> list[int]:
    """Indices of statements of `fn` that are neither docstring nor return."""
    return [i for i, s in enumerate(fn.body) if not isinstance(s, ast.Return)
            and not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]


def resize(tree: ast.Module, fn: ast.FunctionDef, rng: np.random.Generator) -> bool:
    constants = _int_constants(fn)
    if not constants:
        return False
    node = constants[rng.integers(len(constants))]
    node.value = max(1, int(round(node.value * SCALES[rng.integers(len(SCALES))])))
    return True


def swap_activation(tree: ast.Module, fn: ast.FunctionDef,
                    rng: np.random.Generator) -> bool:
    found = _activations(fn)
    if not found:
        return False
    node = found[rng.integers(len(found))]
    others = [a for a in ACTIVATIONS if a != node.attr]
    node.attr = others[rng.integers(len(others))]
    node.value.id = 'nn'
    return True


def duplicate(tree: ast.Module, fn: ast.FunctionDef,
              rng: np.random.Generator) -> bool:
    candidates = _body_statements(fn)
    if not candidates:
        return False
    i = candidates[rng.integers(len(candidates))]
    fn.body.insert(i + 1, copy.deepcopy(fn.body[i]))
    return True


def delete(tree: ast.Module, fn: ast.FunctionDef, rng: np.random.Generator) -> bool:
    candidates = _body_statements(fn)
    if len(candidates) < 2:
        return False
    del fn.body[candidates[rng.integers(len(candidates))]]
    return True


MUTATIONS: dict[str, Callable[[ast.Module, ast.FunctionDef, np.random.Generator],
                              bool]] = {
    'resize': resize, 'swap_activation': swap_activation,
    'duplicate': duplicate, 'delete': delete}


def mutate(source: str, rng: np.random.Generator) -> tuple[str, str]:
    """One random applicable mutation. Returns (new source, mutation name).

    Raises:
      NotAModel: the source has no entry function, or no mutation applies
        to it.
    """
    tree, fn = _parse(source)
    for name in rng.permutation(sorted(MUTATIONS)):
        if MUTATIONS[name](tree, fn, rng):
            return ast.unparse(ast.fix_missing_locations(tree)) + '\n', str(name)
    raise NotAModel('no mutation applies')


def splice(first: str, second: str, rng: np.random.Generator) -> str:
    """`first` with one statement of `second`'s entry function (not its return)
    inserted at a random place before `first`'s return.

    Raises:
      NotAModel: either source is not a model, or `second` has no statement
        to give.
    """
    tree, fn_a = _parse(first)
    _, fn_b = _parse(second)
    donors = _body_statements(fn_b)
    if not donors:
        raise NotAModel('the second program has no statement to give')
    statement = copy.deepcopy(fn_b.body[donors[rng.integers(len(donors))]])
    places = [i for i, s in enumerate(fn_a.body) if not isinstance(s, ast.Return)]
    at = int(rng.integers(0, len(places) + 1))
    fn_a.body.insert(places[at - 1] + 1 if at else 0, statement)
    return ast.unparse(ast.fix_missing_locations(tree)) + '\n'


def reroll(source: str, rng: np.random.Generator, *,
           activations: bool = True) -> str:
    """Every integer literal of the layer calls and class fields redrawn
    uniformly: from `SMALL_INTS[keyword]` if its keyword is there, else from
    `WIDTHS`, except the classifier's output width (a literal 10 in the last
    call that has one) and 1-element literals of positional arguments. With
    `activations`, every activation is redrawn from `ACTIVATIONS` too.

    Raises:
      NotAModel: the source has no entry function.
    """
    tree, fn = _parse(source)
    sites = _int_sites(tree, fn)
    outputs = [c for c, name in sites if c.value == 10 and name == 'features']
    keep = {id(outputs[-1])} if outputs else set()
    for node, name in sites:
        if id(node) in keep or name == '':
            continue
        low, high = SMALL_INTS.get(name, WIDTHS)
        node.value = int(rng.integers(low, high + 1))
    if activations:
        for node in _activations(fn):
            node.attr = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]
            node.value.id = 'nn'
    return ast.unparse(ast.fix_missing_locations(tree)) + '\n'


def _class_fields(tree: ast.Module
                  ) -> tuple[ast.ClassDef | None, dict[str, ast.stmt]]:
    """The Model class and its field statements (`name: type = value`);
    (None, {}) for a program without one (a triplet function)."""
    cls = next((n for n in tree.body
                if isinstance(n, ast.ClassDef) and n.name == 'Model'), None)
    if cls is None:
        return None, {}
    fields = {s.target.id: s for s in cls.body
              if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return cls, fields


def crossover(first: str, second: str, rng: np.random.Generator) -> str:
    """One-point crossover of the two entry functions' bodies (see module
    docstring).

    Fields of the second parent's class that the first lacks are added, so
    its statements find their `self.<field>`.
    """
    tree, fn_a = _parse(first)
    tree_b, fn_b = _parse(second)
    cut_a = int(rng.integers(0, len(fn_a.body)))
    cut_b = int(rng.integers(0, len(fn_b.body)))
    fn_a.body = fn_a.body[:cut_a] + fn_b.body[cut_b:]
    cls_a, fields_a = _class_fields(tree)
    _, fields_b = _class_fields(tree_b)
    missing = [f for name, f in fields_b.items() if name not in fields_a]
    if cls_a is not None:
        cls_a.body[:0] = missing
    return ast.unparse(ast.fix_missing_locations(tree)) + '\n'
