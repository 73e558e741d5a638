"""Hand-written held-out prompt sets (benchmarks/prompt_sets): every program
meets its task's contract, states its true size, and is not a seed.

These programs are written by hand, independently of `evoprompting.corpus`,
to measure whether the LM generalises beyond its synthetic corpus; they are
trusted, so they are built in this process.
"""

import ast
import math
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import seeds
from clrs_tasks import _clrs_import
from clrs_tasks import processors
from evoprompting import corpus
from evoprompting.sandbox import validator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT_SETS = os.path.join(REPO, 'benchmarks', 'prompt_sets')
MNIST1D = seeds.read_seeds('mnist1d', os.path.join(PROMPT_SETS, 'mnist1d'))
CLRS = seeds.read_seeds('clrs', os.path.join(PROMPT_SETS, 'clrs'))
# clrs_tasks.processors needs only flax; its data side needs the clrs extra.
HAS_DM_CLRS = _clrs_import.installed()


def _dump(source: str) -> str:
    """The program's AST without its docstring (formatting and comments gone)."""
    tree = ast.parse(source)
    body = tree.body
    if (body and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        body = body[1:]
    return ast.dump(ast.Module(body=body, type_ignores=[]))


def _stated_params(source: str) -> int:
    docstring = ast.get_docstring(ast.parse(source)) or ''
    found = re.findall(r'([\d,]+) parameters\.', docstring)
    assert len(found) == 1, 'the docstring must state "N parameters." once'
    return int(found[0].replace(',', ''))


def test_set_sizes_and_spread():
    assert len(MNIST1D) >= 24
    assert len(CLRS) >= 10
    sizes = sorted(_stated_params(s) for _, s in MNIST1D)
    assert 2_000 <= sizes[0] and sizes[-1] <= 400_000
    for low, high in ((2_000, 10_000), (10_000, 100_000), (100_000, 400_000)):
        assert sum(low <= n < high for n in sizes) >= 4, (low, high)
    for a, b in zip(sizes, sizes[1:]):  # every program has a neighbour within 3x
        assert b <= 3 * a


@pytest.mark.parametrize('name,source', MNIST1D, ids=[n for n, _ in MNIST1D])
def test_mnist1d_program(name, source):
    assert validator.validate(source) is None, name
    assert corpus.build(corpus.shown(source)) == _stated_params(source), name


def test_mnist1d_programs_are_not_seeds_and_are_distinct():
    seed_sources = [s for _, s in seeds.read_seeds('mnist1d')]
    seed_dumps = {_dump(s) for s in seed_sources}
    seed_layers = set().union(
        *(corpus.layer_calls(corpus.shown(s)) for s in seed_sources))
    dumps = [_dump(s) for _, s in MNIST1D]
    assert len(set(dumps)) == len(dumps)
    assert not seed_dumps & set(dumps)
    for name, source in MNIST1D:
        assert corpus.layer_calls(corpus.shown(source)) - seed_layers, name


def test_clrs_programs_are_not_seeds_and_are_distinct():
    seed_dumps = {_dump(s) for _, s in seeds.read_seeds('clrs')}
    dumps = [_dump(s) for _, s in CLRS]
    assert len(set(dumps)) == len(dumps)
    assert not seed_dumps & set(dumps)
    for name, source in CLRS:
        assert validator.validate(source) is None, name
        assert '\n' + processors.TRIPLET_OPENING + '\n' in source, name
        assert ast.get_docstring(ast.parse(source)), name


class _Triplets(nn.Module):
    fn: processors.TripletFn

    @nn.compact
    def __call__(self, z, edge_fts, graph_fts):
        return self.fn(z, edge_fts, graph_fts, 8, 128)


@pytest.mark.parametrize('name,source', CLRS, ids=[n for n, _ in CLRS])
def test_clrs_program_called_directly(name, source):
    """Called inside a flax module on the contract's input shapes (abstractly)."""
    fn = processors.trusted_triplet_fn(source)
    args = (jax.ShapeDtypeStruct((2, 5, 256), jnp.float32),   # z
            jax.ShapeDtypeStruct((2, 5, 5, 128), jnp.float32),  # edge_fts
            jax.ShapeDtypeStruct((2, 128), jnp.float32))      # graph_fts
    out, _ = jax.eval_shape(
        lambda *a: _Triplets(fn).init_with_output(jax.random.key(0), *a), *args)
    assert out.shape[:3] == (2, 5, 5) and out.ndim == 4, (name, out.shape)
    assert out.dtype == jnp.float32, name


@pytest.fixture(scope='module')
def clrs_splits(tmp_path_factory):
    if not HAS_DM_CLRS:
        pytest.skip('dm-clrs (the clrs extra) is not installed; install it '
                    f'with: {_clrs_import.INSTALL_HINT}')
    from clrs_tasks import data as data_lib  # pylint: disable=g-import-not-at-top
    from clrs_tasks import train as train_lib  # pylint: disable=g-import-not-at-top
    cfg = data_lib.DataConfig(
        algorithm='bfs', train_count=8, val_count=8, test_count=8,
        cache_dir=str(tmp_path_factory.mktemp('clrs_prompt_sets')))
    tr, val, te = data_lib.load_splits(cfg)
    return train_lib.Splits(train=list(tr), val=val, test=te)


@pytest.mark.parametrize('name,source', CLRS, ids=[n for n, _ in CLRS])
def test_clrs_program_builds_under_the_contract(name, source, clrs_splits):
    from clrs_tasks import train as train_lib  # pylint: disable=g-import-not-at-top
    shapes = train_lib.build_params(processors.trusted_triplet_fn(source),
                                    clrs_splits, train_lib.TrainConfig(),
                                    max_params=5_000_000)
    total = sum(math.prod(s) for s in shapes)
    assert 100_000 <= total <= 1_500_000, (name, total)
