"""The default LM's corpus: episodes in the search's exact prompt format, true headers."""

import ast
import json
import os

import jax
import numpy as np
import pytest

from evoprompting import corpus, prompts
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


def test_children_copy_their_parents(episodes):
    for episode in episodes:
        assert episode.child.code not in [p.code for p in episode.parents]
        parent_lines = {line for p in episode.parents for line in p.code.splitlines()}
        lines = episode.child.code.splitlines()
        assert sum(line in parent_lines for line in lines) >= len(lines) // 2


def test_parents_are_rerolled_not_seeds(episodes):
    seeds = {corpus.shown(s) for _, s in corpus.read_seeds('mnist1d')}
    assert not seeds & {p.code for e in episodes for p in e.parents}


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
    assert sorted(os.listdir(tmp_path)) == ['stats.json', 'train-00000.txt',
                                            'valid.txt']
    assert json.loads((tmp_path / 'stats.json').read_text()) == stats
    assert stats['num_episodes'] == 4 and stats['num_code_documents'] >= 1
    assert 0.1 < stats['code_share'] < 0.6
    train = (tmp_path / 'train-00000.txt').read_text().split(
        corpus.DOCUMENT_SEPARATOR)
    valid = (tmp_path / 'valid.txt').read_text().split(corpus.DOCUMENT_SEPARATOR)
    assert train[-1] == '' and valid[-1] == ''  # Every document is terminated.
    assert not set(train[:-1]) & set(valid[:-1])
    assert sum(d.startswith(prompts.METRICS_HEADER) for d in train + valid) == 4
    assert any('def ' in d and prompts.METRICS_HEADER not in d for d in train)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='num_episodes'):
        corpus.write_corpus(str(tmp_path), num_episodes=0, seed=0)
    with pytest.raises(ValueError, match='code_share'):
        corpus.write_corpus(str(tmp_path), num_episodes=1, seed=0, code_share=1.0)
