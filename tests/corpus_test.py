"""The default LM's corpus: episodes in the search's exact prompt format, true headers."""

import ast
import json
import os

import jax
import numpy as np
import pytest

from clrs_tasks import _clrs_import
from evoprompting import architectures, corpus, mutation, prompts, styles
from evoprompting.sandbox import validator
from evoprompting.tasks import classifier_training, mnist1d, training


@pytest.fixture(scope='module')
def episodes():
    return list(corpus.episodes(6, np.random.default_rng(0), pool_size=6))


def contract_params(code: str) -> int:
    """Parameter count by the task's own contract check (not corpus.build)."""
    namespace = {}
    exec(mnist1d.PREAMBLE + code, namespace)  # Our own operators' output.
    built = classifier_training._build(  # pylint: disable=protected-access
        namespace['Model'], jax.ShapeDtypeStruct((8, 40), 'float32'), 10)
    return training.count_params(built.variables)


def test_episode_text_is_the_search_prompt_plus_the_child(episodes):
    for episode in episodes:
        text = episode.render()
        prompt = prompts.few_shot_prompt(episode.parents, episode.header,
                                         corpus.OPENING)
        assert text.startswith(prompt)
        completion = text[len(prompt):]
        # The search's own extraction gives back the child.
        assert prompts.child_source(corpus.OPENING, completion) == episode.child.code
        assert text.count(prompts.METRICS_HEADER) == 3
        assert episode.header.val_accuracy == prompts.target_metrics(
            [p.metrics for p in episode.parents]).val_accuracy


def test_programs_parse_validate_and_headers_are_true_sizes(episodes):
    programs = [(p.code, p.metrics.num_params) for e in episodes for p in e.parents]
    programs += [(e.child.code, e.header.num_params) for e in episodes]
    for code, num_params in programs:
        ast.parse(code)
        assert validator.validate(mnist1d.PREAMBLE + code) is None, code
        assert code == corpus.shown(code)  # Shown as prompts show programs.
        assert contract_params(code) == num_params, code


def test_children_copy_their_parents_in_their_style(episodes):
    for episode in episodes:
        assert corpus.canonical(episode.child.code) not in [
            corpus.canonical(p.code) for p in episode.parents]
        parent_lines = {line for p in episode.parents for line in p.code.splitlines()}
        lines = episode.child.code.splitlines()
        assert sum(line in parent_lines for line in lines) >= len(lines) // 2
        # Written as one of its parents (indentation, quotes).
        assert styles.style_of(episode.child.code) in [
            styles.style_of(p.code) for p in episode.parents]


def test_parents_are_varied_not_seeds():
    rng = np.random.default_rng(3)
    seeds = {corpus.canonical(corpus.shown(s)) for _, s in corpus.read_seeds('mnist1d')}
    parents = [corpus.random_parent(rng) for _ in range(24)]
    assert not seeds & {corpus.canonical(p.code) for p in parents}
    # Programs of evoprompting.architectures, and in more than one style.
    assert any('nn.RNN(' in p.code or 'Attention(' in p.code
               or 'def setup(self)' in p.code for p in parents)
    assert len({styles.style_of(p.code) for p in parents}) > 1


def test_architectures_validate_and_build():
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(30):
        code = architectures.random_program(rng)
        assert code.startswith(corpus.OPENING)
        assert validator.validate(mnist1d.PREAMBLE + code) is None, code
        sizes.append(corpus.build(code))
        assert sizes[-1] is not None, code
        assert mutation.is_model(code)
    assert len(set(sizes)) > 20


@pytest.mark.skipif(not _clrs_import.installed(),
                    reason='dm-clrs (the clrs extra) is not installed')
def test_clrs_episodes_are_triplet_functions_with_true_whole_model_sizes():
    from clrs_tasks import processors  # pylint: disable=g-import-not-at-top
    task = corpus.task_programs('clrs')
    episodes = list(corpus.episodes(4, np.random.default_rng(0), task=task,
                                    pool_size=6))
    for episode in episodes:
        text = episode.render()
        assert episode.task == 'clrs'
        assert text.rstrip().endswith(episode.child.code.rstrip()[
            len(processors.TRIPLET_OPENING):].rstrip())
        for example in episode.parents:
            assert example.code.startswith(processors.TRIPLET_OPENING)
            assert validator.validate(processors.PREAMBLE + example.code) is None
            assert corpus.build_clrs(example.code) == example.metrics.num_params
        assert corpus.build_clrs(episode.child.code) == episode.header.num_params
    standard = dict(corpus.read_seeds('clrs'))['v1_standard']
    assert corpus.build_clrs(corpus.shown(standard)) == 523_963
    assert corpus.build_clrs(corpus.shown(standard).replace('axis=1', 'axis=7')) is None


def test_held_out_programs_and_their_layers_never_appear():
    layer = "nn.Conv(features=8, kernel_size=(3,), padding='SAME')"
    held_out = corpus.HeldOut(programs=frozenset(), layers=frozenset(
        {'nn.LayerNorm()', layer}))
    assert not held_out.allows(f'x = {layer}(x)')
    assert not held_out.allows(f'x = {layer.replace("8", "8 ")}(x)')
    assert held_out.allows('x = nn.Conv(features=9, kernel_size=(3,))(x)')
    rng = np.random.default_rng(0)
    task = corpus.task_programs('mnist1d', generated_share=1.0)
    for episode in corpus.episodes(6, rng, task=task, held_out=held_out,
                                   pool_size=6):
        assert 'LayerNorm' not in episode.render()


def test_the_benchmark_prompt_sets_are_held_out():
    """Every hand-written prompt program (benchmarks/prompt_sets) is refused
    by the corpus' default held-out set, and most have a layer configuration
    that is not common vocabulary (so conditioning on it can be measured)."""
    held_out = corpus.read_held_out(corpus.DEFAULT_HELD_OUT)
    sources = [s for task in corpus.TASKS for _, s in corpus.read_seeds(
        task, os.path.join(corpus.DEFAULT_HELD_OUT, task))]
    assert len(sources) == len(held_out.programs) >= 34
    common = corpus.common_layers()
    for source in sources:
        assert not held_out.allows(corpus.shown(source))
    mnist = [s for _, s in corpus.read_seeds(
        'mnist1d', os.path.join(corpus.DEFAULT_HELD_OUT, 'mnist1d'))]
    assert sum(bool(corpus.layer_calls(corpus.shown(s)) - common)
               for s in mnist) >= 24


def test_layer_calls_inline_fields():
    code = corpus.shown(dict(corpus.read_seeds('mnist1d'))['greydanus_cnn'])
    assert corpus.layer_calls(code) == {
        'nn.Conv(features=25, kernel_size=(5,), strides=(2,), padding=1)',
        'nn.Conv(features=25, kernel_size=(3,), strides=(2,), padding=1)',
        'nn.Dense(features=10)'}


def test_build_refuses_wrong_output_and_broken_code():
    mlp = corpus.shown(dict(corpus.read_seeds('mnist1d'))['mlp'])
    assert corpus.build(mlp) == 15_210
    assert corpus.build(mlp.replace('features=10', 'features=7')) is None
    assert corpus.build(mlp.replace('nn.Dense', 'nn.reshape', 1)) is None
    assert corpus.build('class Model(nn.Module):\n    x =\n') is None


def test_write_corpus(tmp_path):
    stats = corpus.write_corpus(str(tmp_path), num_episodes=4, seed=1,
                                code_share=0.3, valid_fraction=0.25)
    assert sorted(os.listdir(tmp_path)) == [
        'stats.json', 'train-00000.txt', 'valid-code.txt', 'valid-mnist1d.txt']
    assert json.loads((tmp_path / 'stats.json').read_text()) == stats
    assert stats['mnist1d']['num_episodes'] == 4 and 'clrs' not in stats
    assert stats['num_code_documents'] >= 1
    assert 0.1 < stats['code_share'] < 0.6
    train = (tmp_path / 'train-00000.txt').read_text().split(
        corpus.DOCUMENT_SEPARATOR)
    valid = [(tmp_path / f'valid-{k}.txt').read_text().split(
        corpus.DOCUMENT_SEPARATOR) for k in ('mnist1d', 'code')]
    for documents in (train, *valid):
        assert documents[-1] == ''  # Every document is terminated.
    valid = valid[0][:-1] + valid[1][:-1]
    assert not set(train[:-1]) & set(valid)
    assert sum(d.startswith(prompts.METRICS_HEADER) for d in train + valid) == 4
    assert any('def ' in d and prompts.METRICS_HEADER not in d for d in train)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='num_episodes'):
        corpus.write_corpus(str(tmp_path), num_episodes=0, seed=0)
    with pytest.raises(ValueError, match='code_share'):
        corpus.write_corpus(str(tmp_path), num_episodes=1, seed=0, code_share=1.0)
