"""AST mutation and crossover: valid Python, validator-clean, often buildable."""

import numpy as np
import pytest
import jax

from evoprompting import mutation
from evoprompting.sandbox import validator
from evoprompting.tasks import base, classifier_training, mnist1d

SEEDS = {s.name: s.source for s in mnist1d.Mnist1dTask().seed_programs()}


def builds(source: str) -> bool:
    """Contract check in-process (these programs come from our own operators)."""
    namespace = {}
    exec(mnist1d.PREAMBLE + source, namespace)
    try:
        classifier_training._build(  # pylint: disable=protected-access
            namespace.get('Model'), jax.ShapeDtypeStruct((8, 40), 'float32'), 10)
        return True
    except base.ProgramFailure:
        return False


def test_mutations_are_valid_and_mostly_build():
    rng = np.random.default_rng(0)
    names, built = [], 0
    for i in range(60):
        source, name = mutation.mutate(SEEDS[sorted(SEEDS)[i % 4]], rng)
        assert validator.validate(source) is None, source
        names.append(name)
        built += builds(source)
    assert set(names) == set(mutation.MUTATIONS)
    assert built >= 30, built


def test_each_operator_changes_the_program():
    for name, op in mutation.MUTATIONS.items():
        tree, fn = mutation._parse(SEEDS['residual_cnn'])  # pylint: disable=protected-access
        before = mutation.ast.unparse(tree)
        assert op(tree, fn, np.random.default_rng(1)), name
        assert mutation.ast.unparse(tree) != before, name


def test_mutation_is_deterministic_given_the_generator():
    a = mutation.mutate(SEEDS['mlp'], np.random.default_rng(3))
    b = mutation.mutate(SEEDS['mlp'], np.random.default_rng(3))
    assert a == b


def test_crossover_mixes_parents():
    rng = np.random.default_rng(0)
    children = {mutation.crossover(SEEDS['greydanus_cnn'], SEEDS['mlp'], rng)
                for _ in range(20)}
    assert len(children) > 3
    assert all(validator.validate(c) is None for c in children)
    assert any('nn.Conv' in c and 'hidden' in c for c in children)
    assert sum(builds(c) for c in children) >= 3


def test_not_a_model():
    with pytest.raises(mutation.NotAModel):
        mutation.mutate('x = 1\n', np.random.default_rng(0))
    with pytest.raises(mutation.NotAModel):
        mutation.mutate('def (', np.random.default_rng(0))
