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


def test_reroll_redraws_widths_kernels_and_activations_but_not_the_output():
    rng = np.random.default_rng(0)
    variants = [mutation.reroll(SEEDS['greydanus_cnn'], rng) for _ in range(10)]
    assert len(set(variants)) == 10
    for source in variants:
        assert 'nn.Dense(features=10)' in source
        assert validator.validate(source) is None
    assert sum(builds(s) for s in variants) >= 5
    kept = mutation.reroll(SEEDS['mlp'], rng, activations=False)
    assert kept.count('nn.relu') == SEEDS['mlp'].count('nn.relu')


def test_splice_borrows_a_statement_of_the_other_program():
    rng = np.random.default_rng(0)
    child = mutation.splice(SEEDS['mlp'], SEEDS['greydanus_cnn'], rng)
    donor_lines = {l.strip() for l in SEEDS['greydanus_cnn'].splitlines()}
    own_lines = {l.strip() for l in SEEDS['mlp'].splitlines()}
    added = [l.strip() for l in child.splitlines()
             if l.strip() and l.strip() not in own_lines]
    assert len(added) == 1 and added[0] in donor_lines
    assert child.rstrip().endswith('return x')
