"""The LM-free baselines: regularized evolution and random search as
Proposers, on hand-built histories and in one real search (real sandbox,
tiny training budget)."""

import glob
import os
import shlex
import subprocess
import sys

import gin
import numpy as np
import pytest

from evoprompting import gin_utils, mutation, report, search, store
from evoprompting.baselines import random_search, regularized_evolution, variation
from evoprompting.sandbox import evaluator, pool
from evoprompting.tasks import base, mnist1d

TASK = mnist1d.Mnist1dTask()
SEEDS = [s.source for s in TASK.seed_programs()]
RE = regularized_evolution
REConfig = RE.RegularizedEvolutionConfig


@pytest.fixture(scope='module')
def task(tmp_path_factory):
    """MNIST-1D with 16 training steps."""
    return mnist1d.Mnist1dTask(
        data=mnist1d.DataConfig(cache_dir=str(tmp_path_factory.mktemp('cache'))),
        train=mnist1d.TrainConfig(num_steps=16, eval_every=8, steps_per_call=1))


def result(params, val_accuracy, status=base.Status.OK):
    return base.EvalResult(status, '', 'hash', params=params, metrics={
        'val_accuracy': val_accuracy, 'test_accuracy': val_accuracy})


def candidate(i, round_, source, params, acc, status=base.Status.OK,
              parents=(), proposal=None):
    return store.Candidate(id=i, round=round_, source=source,
                           result=result(params, acc, status), parents=parents,
                           proposal=i if proposal is None else proposal)


def mutant(source, seed):
    return variation.child_source(
        mutation.mutate(source, np.random.default_rng(seed))[0], TASK.preamble)


# Seeds 0-3 (fitness -1000, -2000, -3000, -4000); round 0: 4-7; round 1: 8-9.
# alpha = 0.5. Ids follow completion order, not (round, proposal).
HISTORY = search.History.of([
    candidate(0, -1, SEEDS[0], 4000, 0.75),
    candidate(1, -1, SEEDS[1], 8000, 0.75),
    candidate(2, -1, SEEDS[2], 12000, 0.75),
    candidate(3, -1, SEEDS[3], 16000, 0.75),
    candidate(5, 0, mutant(SEEDS[0], 1), 40, 0.75, parents=(0,), proposal=0),  # -10
    candidate(4, 0, mutant(SEEDS[0], 2), 200, 0.75, parents=(0,), proposal=1),  # -50
    candidate(6, 0, mutant(SEEDS[1], 3), 100, 0.1, parents=(1,), proposal=2),  # error >= alpha
    candidate(7, 0, mutant(SEEDS[2], 4), 100, 0.75, base.Status.BUILD_ERROR,
              parents=(2,), proposal=3),                                        # failed
    candidate(8, 1, mutant(SEEDS[3], 5), 24000, 0.75, parents=(3,)),            # -6000
    candidate(9, 1, mutant(SEEDS[3], 6), 28000, 0.75, parents=(3,)),            # -7000
], alpha=0.5)


def canonical(source):
    return search.canonical(source, TASK.preamble)


def test_population_is_the_youngest_scored_in_search_order():
    population = lambda t, p: RE.population(HISTORY, t, p)
    assert population(0, 10) == [(0, -1000.0), (1, -2000.0), (2, -3000.0),
                                 (3, -4000.0)]
    # Round 1 sees round 0: by proposal (5 before 4); unscored 6, 7 are out.
    assert [i for i, _ in population(1, 10)] == [0, 1, 2, 3, 5, 4]
    # Aging: the oldest leave whatever their fitness (seed 0 is the fittest seed).
    assert [i for i, _ in population(1, 3)] == [3, 5, 4]
    assert [i for i, _ in population(2, 3)] == [4, 8, 9]


def test_tournament_takes_the_fittest_of_its_sample():
    members = RE.population(HISTORY, 2, 10)   # Fitness -10 (id 5) is the best.
    for seed in range(20):
        drawn = np.random.default_rng(seed).integers(len(members), size=3)
        best = max((members[i] for i in drawn), key=lambda m: m[1])[0]
        assert RE.tournament(members, 3, np.random.default_rng(seed)) == best
    # A large sample finds the best; a sample of one is any member.
    rng = np.random.default_rng(0)
    assert RE.tournament(members, 200, rng) == 5
    assert {RE.tournament(members, 1, rng) for _ in range(200)} == {
        i for i, _ in members}


def assert_new_children(proposals, history):
    """Children in the child form, most of them new programs. (A repeat,
    e.g. a crossover that keeps all of one parent, is a proposal too: the
    search records it as a duplicate that spends budget.)"""
    known = {canonical(c.source) for c in history.candidates}
    new = [p for p in proposals if canonical(p.source) not in known]
    assert len(new) >= 0.5 * len(proposals)
    for p in proposals:
        assert p.source.startswith(TASK.preamble + '\n\nclass Model(nn.Module):')
        assert p.prompt_id is None and p.temperature is None


def test_regularized_evolution_mutates_tournament_winners():
    config = REConfig(children_per_round=12, population_size=3, tournament_size=2)
    proposer = RE.RegularizedEvolution(task=TASK, config=config)
    proposals = proposer.propose(2, HISTORY, np.random.default_rng(0))
    assert len(proposals) == 12
    assert_new_children(proposals, HISTORY)
    assert all(len(p.parents) == 1 and p.parents[0] in (4, 8, 9) for p in proposals)
    # Two of {4, 8, 9} with replacement: 9 (the least fit) only wins 9-vs-9.
    counts = [sum(p.parents == (i,) for p in proposals) for i in (4, 8, 9)]
    assert counts[0] > counts[2]
    # Only the history before the round counts.
    assert proposer.propose(1, HISTORY, np.random.default_rng(0)) == \
        proposer.propose(1, HISTORY.before(1), np.random.default_rng(0))


def test_crossover_children_have_two_parents():
    config = REConfig(children_per_round=6, population_size=10,
                      tournament_size=2, crossover_prob=1.0)
    proposals = RE.RegularizedEvolution(task=TASK, config=config).propose(
        1, HISTORY, np.random.default_rng(0))
    members = {i for i, _ in RE.population(HISTORY, 1, 10)}
    assert all(len(p.parents) == 2 and set(p.parents) <= members
               for p in proposals)
    assert_new_children(proposals, HISTORY.before(1))


def test_proposals_are_deterministic_given_the_generator():
    re_ = RE.RegularizedEvolution(task=TASK, config=REConfig(
        children_per_round=8, population_size=4, tournament_size=2,
        crossover_prob=0.5))
    rs = random_search.RandomSearch(task=TASK, config=random_search.RandomSearchConfig(
        children_per_round=8, max_mutations=3))
    for proposer in (re_, rs):
        a = proposer.propose(1, HISTORY, np.random.default_rng(7))
        # A fresh proposer (as after a restart) proposes the same.
        b = type(proposer)(task=TASK, config=proposer.config).propose(
            1, HISTORY, np.random.default_rng(7))
        c = proposer.propose(1, HISTORY, np.random.default_rng(8))
        assert a == b and a != c


def test_random_search_mutates_seeds_only():
    config = random_search.RandomSearchConfig(children_per_round=16, max_mutations=3)
    proposer = random_search.RandomSearch(task=TASK, config=config)
    proposals = proposer.propose(2, HISTORY, np.random.default_rng(0))
    assert_new_children(proposals, HISTORY)
    assert {p.parents for p in proposals} == {(0,), (1,), (2,), (3,)}
    assert proposer.learn(1, HISTORY, np.random.default_rng(0)) == {}


def test_learn_reports_the_next_population():
    proposer = RE.RegularizedEvolution(task=TASK, config=REConfig(population_size=3))
    proposer.start('/nonexistent', completed_rounds=1)   # Nothing to restore.
    assert proposer.learn(1, HISTORY, np.random.default_rng(0)) == {
        'population/size': 3.0, 'population/mean_fitness': -13050 / 3}


def test_only_draws_that_give_no_program_are_redrawn():
    # One budget rule for every method: a repeated program is a proposal (the
    # search records it as a duplicate, spending budget); a mutation that
    # gives no program is not, and is drawn again.
    parent = HISTORY.candidates[0]
    itself = search.Proposal(parent.source, (parent.id,))
    repeat = search.Proposal(HISTORY.candidates[4].source, (parent.id,))
    new = search.Proposal(mutant(parent.source, 11), (parent.id,))

    def draw(sequence, count=1):
        draws = iter(sequence)

        def make(rng):
            del rng
            made = next(draws)
            if isinstance(made, Exception):
                raise made
            return made

        return variation.draw_children(count, make, np.random.default_rng(0),
                                       max_tries=3)

    assert draw([mutation.NotAModel('no'), itself]) == [itself]
    assert draw([repeat, new, new], count=3) == [repeat, new, new]
    with pytest.raises(search.SearchError, match='no operator applied in 3'):
        draw([mutation.NotAModel('no')] * 3)


def test_repeats_by_every_method_spend_budget_untrained(tmp_path, task):
    """The search's rule for a baseline's repeats: each is recorded as a
    duplicate of the known program, untrained, and counts as a proposal."""
    seed = task.seed_programs()[0].source
    copy = variation.child_source(seed, task.preamble)
    with evaluator.Sandbox(task, limits=pool.Limits(
            wall_s=120, cpu_s=240, memory_mb=6144, startup_s=300)) as sandbox:
        s = search.Search(task=task, proposer=None, sandbox=sandbox,
                          config=search.SearchConfig(), workdir=str(tmp_path))
        s.evaluate(search.SEED_ROUND, [search.Proposal(seed)])
        s.evaluate(0, [search.Proposal(copy, (0,)), search.Proposal(copy, (0,))])
        s.close()
    log = store.read_candidates(str(tmp_path))
    assert [(c.round, c.proposal, c.duplicate_of) for c in log] == [
        (-1, 0, None), (0, 0, 0), (0, 1, 0)]
    assert all(c.result == log[0].result for c in log)


@pytest.mark.parametrize('kwargs, words', [
    (dict(tournament_size=0), 'tournament_size must be >= 1'),
    (dict(crossover_prob=1.5), r'crossover_prob must be in \[0, 1\]'),
])
def test_bad_config_is_a_clear_error(kwargs, words):
    with pytest.raises(ValueError, match=words):
        REConfig(**kwargs)
    with pytest.raises(ValueError, match='max_mutations must be >= 1'):
        random_search.RandomSearchConfig(max_mutations=0)


def probe(*, proposer):
    return proposer


@pytest.mark.parametrize('path, expected', [
    ('gin/search/regularized_evolution.gin', REConfig(
        children_per_round=16, population_size=16, tournament_size=4)),
    ('gin/search/random_search.gin', random_search.RandomSearchConfig(
        children_per_round=16, max_mutations=4)),
])
def test_gin_files_build_the_proposers_at_the_budget(path, expected):
    gin_utils.parse(['gin/mnist1d/quick.gin', path], [], entry_config='''
from __gin__ import dynamic_registration
import baselines_test
baselines_test.probe.proposer = %PROPOSER
''')
    proposer = gin.get_configurable(probe)()
    assert proposer.config == expected and proposer.task.name == 'mnist1d'


@pytest.mark.parametrize('path', ['gin/search/regularized_evolution.gin',
                                  'gin/search/random_search.gin'])
def test_a_task_without_model_seeds_is_refused_when_built(path, tmp_path):
    (tmp_path / 'script.py').write_text('def main():\n    return 1\n')
    gin_utils.parse(['gin/clrs/quick.gin', path],
                    [f"task.ClrsTask.seeds_dir = '{tmp_path}'",
                     'task.ClrsTask.seeds = ()'], entry_config='''
from __gin__ import dynamic_registration
import baselines_test
baselines_test.probe.proposer = %PROPOSER
''')
    with pytest.raises(ValueError, match=r'varies programs with a `class Model` '
                       r'or a `get_triplet_msgs`.*with neither: script.*LM method'):
        gin.get_configurable(probe)()


@pytest.mark.parametrize('path', ['gin/search/regularized_evolution.gin',
                                  'gin/search/random_search.gin'])
def test_clrs_seeds_are_varied_as_triplet_functions(path):
    gin_utils.parse(['gin/clrs/quick.gin', path], [], entry_config='''
from __gin__ import dynamic_registration
import baselines_test
baselines_test.probe.proposer = %PROPOSER
''')
    proposer = gin.get_configurable(probe)()
    seeds = proposer.task.seed_programs()
    history = search.History.of([store.Candidate(
        id=i, round=-1, source=s.source, parents=(), proposal=i,
        result=base.EvalResult(base.Status.OK, '', 'hash', params=1000 * (i + 1),
                               metrics={'val_score': 0.8, 'test_score': 0.7}))
        for i, s in enumerate(seeds)], alpha=0.5, score_key='val_score')
    proposals = proposer.propose(0, history, np.random.default_rng(0))
    assert proposals
    known = {canonical(s.source) for s in seeds}
    for proposal in proposals:
        assert 'def get_triplet_msgs(' in proposal.source
        assert mutation.is_model(proposal.source)
    # A mutation may leave a program as it was (e.g. axis=1 scaled by 0.75);
    # the search skips such duplicates.
    assert any(canonical(p.source) not in known for p in proposals)


def test_is_model_tells_the_programs_the_operators_apply_to():
    assert all(mutation.is_model(s) for s in SEEDS)
    assert mutation.is_model('def get_triplet_msgs(z):\n    return z\n')
    assert not mutation.is_model('def get_other_msgs(z):\n    return z\n')
    assert not mutation.is_model('class Model(nn.Module):\n    x = 1\n')
    assert not mutation.is_model('class Model(')


def test_regularized_evolution_search_end_to_end(tmp_path_factory, task):
    """Seeds and 2 rounds of 3 children, each trained 16 steps."""
    workdir = tmp_path_factory.mktemp('run')
    proposer = RE.RegularizedEvolution(task=task, config=REConfig(
        children_per_round=3, population_size=4, tournament_size=2))
    sandbox = evaluator.Sandbox(
        task, limits=pool.Limits(wall_s=120, cpu_s=240, memory_mb=6144,
                                 startup_s=300),
        config=pool.WorkerConfig())
    # 16 training steps reach ~25% validation accuracy: alpha admits that.
    config = search.SearchConfig(method='regularized_evolution', num_rounds=2,
                                 alpha=0.9, num_top=3)
    top = search.run(task=task, proposer=proposer, sandbox=sandbox,
                     config=config, workdir=str(workdir))
    log = store.read_candidates(str(workdir))
    history = search.History.of(log, alpha=0.9)
    children = [c for c in log if c.round >= 0]
    assert sorted((c.round, c.proposal) for c in children) == [
        (t, i) for t in (0, 1) for i in range(3)]
    for c in children:
        population = {i for i, _ in RE.population(history, c.round, 4)}
        assert len(c.parents) == 1 and c.parents[0] in population
    # Some mutants build, train and are scored; the best are returned.
    fitness = dict(zip((c.id for c in history.candidates), history.fitness))
    scored = [c for c in children if fitness[c.id] is not None]
    assert scored and top and {c.id for c in top} <= {c.id for c in scored}
    assert store.read_state(str(workdir)) == {'completed_rounds': 2}
    # The benchmark's README table of this run.
    sys.path.insert(0, os.path.join(gin_utils.REPO_ROOT, 'benchmarks'))
    import search_mnist1d  # pylint: disable=g-import-not-at-top
    run = report.load_run(str(workdir))
    lines = search_mnist1d.markdown_table(
        {'regularized_evolution': [run]}, SEEDS[0], ['--seeds=0'])
    assert lines[0].startswith('`python benchmarks/search_mnist1d.py --seeds=0`'
                               ', at commit unknown, on ')
    ok = sum(c.result.ok and c.duplicate_of is None for c in children)
    assert lines[-1].startswith('| regularized_evolution | 1 | 6 | ')
    assert lines[-1].endswith(f'| {ok / 6:.0%}-{ok / 6:.0%} |')
    assert '(n=1)' in lines[-1]


def test_benchmark_script_runs_every_method_file(tmp_path):
    """benchmarks/search_mnist1d.py's plan (--dry_run): one main command per
    method and seed, covering every method file of gin/search."""
    script = os.path.join(gin_utils.REPO_ROOT, 'benchmarks', 'search_mnist1d.py')
    out = subprocess.run(
        [sys.executable, script, '--dry_run', '--seeds=3,4',
         f'--workdir_root={tmp_path}', '--gin_file=gin/lm/tiny_random.gin',
         '--gin_bindings=ROUNDS = 1'], capture_output=True, text=True,
        timeout=120, check=True)
    commands = [shlex.split(line) for line in out.stdout.splitlines()]
    assert len(commands) == 2 * 6
    files = {arg.split('=', 1)[1] for c in commands for arg in c
             if arg.startswith('--gin_file=')}
    shipped = {os.path.relpath(p, gin_utils.REPO_ROOT) for p in glob.glob(
        os.path.join(gin_utils.REPO_ROOT, 'gin', 'search', '*.gin'))}
    # evoprompting.gin comes with the budget file.
    assert files == shipped - {'gin/search/evoprompting.gin'} | {
        'gin/mnist1d/quick.gin', 'gin/lm/tiny_random.gin',
        'gin/mnist1d/standard_data.gin'}
    for c in commands:
        assert c[1:3] == ['-m', 'evoprompting.main']
        assert 'ROUNDS = 1' in ' '.join(c)
    assert {c[-2] for c in commands} == {'--gin_bindings=SEARCH_SEED = 3',
                                         '--gin_bindings=SEARCH_SEED = 4'}
    assert os.path.join(str(tmp_path), 'random_search', 'seed_4') in ' '.join(
        commands[-1])
    assert not os.listdir(tmp_path)   # A dry run writes nothing.
