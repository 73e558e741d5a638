"""The search loop with the real sandbox, real training (tiny budget) and a
real (tiny, random) served LM: records, duplicates, selection, tuning, resume."""

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from evoprompting import crossmut, prompts, search, store
from evoprompting.sandbox import evaluator, pool
from evoprompting.tasks import base, mnist1d
from lm import checkpoints, prompt_tuning, testing

TINY = mnist1d.TrainConfig(num_steps=16, eval_every=8, steps_per_call=1)
LIMITS = pool.Limits(wall_s=120, cpu_s=240, memory_mb=6144, startup_s=300)
SMALL = crossmut.CrossMutConfig(num_prompts=2, samples_per_prompt=2,
                                num_parents=2, max_new_tokens=24)
MLP = mnist1d.PREAMBLE + '''
class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(16)(x)))
'''


@pytest.fixture(scope='module')
def task(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp('cache'))
    return mnist1d.Mnist1dTask(data=mnist1d.DataConfig(cache_dir=cache),
                               train=TINY)


@pytest.fixture(scope='module')
def worker_config():
    return pool.WorkerConfig()


@pytest.fixture(scope='module')
def lm():
    return testing.tiny_language_model(
        batch_size=4, stop_strings=(prompts.STOP,),
        tuning=prompt_tuning.TuningConfig(num_epochs=1, batch_size=4,
                                          buckets=(1024, 2048)))


def run(workdir, task, worker_config, lm, *, rounds=2, **kwargs):
    # 16 training steps reach ~25% validation accuracy: alpha admits that.
    config = search.SearchConfig(num_rounds=rounds, num_top=3, alpha=0.9)
    return search.run(
        task=task, proposer=crossmut.CrossMut(lm=lm, task=task, config=SMALL),
        sandbox=evaluator.Sandbox(task, limits=LIMITS, config=worker_config),
        config=config, workdir=str(workdir), **kwargs)


def read_log(workdir):
    return store.read_candidates(str(workdir))


def console(caplog):
    """The search's own log lines since the last call."""
    lines = [r.getMessage() for r in caplog.records if r.name == 'absl'
             and r.pathname.endswith(('search.py', 'crossmut.py'))]
    caplog.clear()
    return lines


def test_search_records_everything_and_resumes_without_redoing(
        tmp_path, task, worker_config, lm, caplog):
    caplog.set_level(logging.INFO)
    # What the workdir holds each time the search says it wrote to it.
    written = []
    run(tmp_path, task, worker_config, lm,
        on_change=lambda: written.append(len(read_log(tmp_path))))
    log = read_log(tmp_path)
    # The console says what each phase does as it starts, then its time;
    # the ETA is unknown until a round has been timed.
    lines = console(caplog)
    patterns = [
        r'Evaluating 4 of 4 seed programs of mnist1d',
        r'\[#####\.+\] 1/4 seed 0: ok .* evals/min \| ETA unknown',
        r'Seeds done: 4 children, .*; ETA unknown',
        r'Round 0 \(1 of 2\): sampling 4 children of up to 24 tokens from 2 '
        r'prompts with the LM\.\.\.',
        r'Round 0: 4 proposals sampled in \d+(\.\d)? s \(\d+(\.\d)? s each\), '
        r'saved; ETA unknown \(> \d.*; learning not timed yet\)',
        r'\[#+\.+\] 5/12 round 0 child \d: .* \| ETA unknown \(> .*\)',
        r'Round 0 done: 4 children, .*; ETA \d.*',
        r'Round 1 \(2 of 2\): sampling 4 children .* with the LM\.\.\.',
        r'Round 1: 4 proposals sampled in .*, saved; ETA \d.*',
        r'\[#+\.*\] 9/12 round 1 child \d: .* \| ETA \d.*',
        r'Round 1 done: 4 children, .*']
    at = [next((i for i, l in enumerate(lines) if re.fullmatch(p, l)), None)
          for p in patterns]
    assert None not in at and at == sorted(at), (at, lines)
    # Called after every recorded candidate (a mirror copies each).
    assert set(range(1, len(log) + 1)) <= set(written)
    # Where each round's time went.
    with open(tmp_path / search.TIMINGS_FILE) as f:
        timings = [json.loads(line) for line in f]
    assert [t['round'] for t in timings] == [0, 1]
    assert all(t['processes'] == 1 and t['evaluations'] == 4 and
               t['propose_s'] > 0 and t['evaluate_s'] > 0 for t in timings)
    assert timings[0]['learn_s'] > 0 and timings[1]['learn_s'] < 1
    seeds = [c for c in log if c.round == search.SEED_ROUND]
    assert [c.proposal for c in seeds] == [0, 1, 2, 3]
    assert all(c.result.ok for c in seeds)
    for t in (0, 1):
        children = [c for c in log if c.round == t]
        assert sorted(c.proposal for c in children) == [0, 1, 2, 3]
        assert all(c.temperature in SMALL.temperature_choices for c in children)
        assert all(len(c.parents) == SMALL.num_shots for c in children)
        assert all(c.source.startswith(task.preamble) for c in children)
        # Children of the random LM fail; each failure is a status.
        assert all(isinstance(c.result.status, base.Status) for c in children)
    # Round 0's parents are the seeds.
    assert {p for c in log if c.round == 0 for p in c.parents} <= {
        c.id for c in seeds}
    assert store.read_state(str(tmp_path)) == {'completed_rounds': 2}
    with open(tmp_path / search.ROUNDS_DIR / 'round_1.json') as f:
        saved = [search.Proposal.from_json(d) for d in json.load(f)]
    assert [p.source for p in saved] == [c.source for c in sorted(
        (c for c in log if c.round == 1), key=lambda c: c.proposal)]

    # TensorBoard events and a report of the run.
    assert any(name.startswith('events.out.tfevents')
               for name in os.listdir(tmp_path / 'tensorboard' / tmp_path.name))
    out = subprocess.run(
        [sys.executable, '-m', 'evoprompting.report', f'--workdir={tmp_path}',
         f'--out={tmp_path / "report"}'], capture_output=True, text=True,
        timeout=300)
    assert out.returncode == 0, out.stderr
    assert 'evoprompting' in (tmp_path / 'report' / 'report.md').read_text()

    # The same search again: complete, nothing evaluated again.
    run(tmp_path, task, worker_config, lm)
    assert len(read_log(tmp_path)) == len(log)

    # Other settings are refused unless allowed; then the run goes on.
    with pytest.raises(search.SearchError, match='num_rounds: 2 -> 3'):
        run(tmp_path, task, worker_config, lm, rounds=3)
    console(caplog)
    run(tmp_path, task, worker_config, lm, rounds=3, allow_config_change=True)
    # The resumed run's ETA is known at once, from timings.jsonl.
    assert any(re.fullmatch(r'Resuming .*: 12 candidates recorded, 2 of 3 '
                            r'rounds complete; ETA \d.*', l)
               for l in console(caplog))
    longer = read_log(tmp_path)
    assert len(longer) == len(log) + 4
    assert [c.to_json() for c in longer[:len(log)]] == [c.to_json() for c in log]


def test_duplicates_are_recorded_not_retrained(tmp_path, task, worker_config, lm):
    seed = task.seed_programs()[0].source
    proposals = [search.Proposal('# A comment changes nothing.\n' + seed),
                 search.Proposal(MLP),
                 search.Proposal(MLP.replace('Dense(10)', 'Dense( 10 )'))]
    with evaluator.Sandbox(task, limits=LIMITS, config=worker_config) as sandbox:
        s = search.Search(task=task, proposer=None, sandbox=sandbox,
                          config=search.SearchConfig(), workdir=str(tmp_path))
        s.evaluate(search.SEED_ROUND, [search.Proposal(seed)])
        s.evaluate(0, proposals)
        s.close()
    log = read_log(tmp_path)
    by_proposal = {c.proposal: c for c in log if c.round == 0}
    assert by_proposal[0].duplicate_of == 0
    assert by_proposal[0].result == log[0].result
    assert by_proposal[1].duplicate_of is None and by_proposal[1].result.ok
    assert by_proposal[2].duplicate_of == by_proposal[1].id
    assert by_proposal[2].result == by_proposal[1].result
    # Duplicates are not scored again.
    history = search.History.of(log, alpha=0.95)
    scored = {c.id for c, f in zip(history.candidates, history.fitness)
              if f is not None}
    assert by_proposal[1].id in scored and by_proposal[2].id not in scored


def result(params, val_accuracy, status=base.Status.OK):
    return base.EvalResult(status, '', 'hash', params=params, metrics={
        'val_accuracy': val_accuracy, 'test_accuracy': val_accuracy})


def candidate(i, round_, params, acc, status=base.Status.OK, parents=()):
    source = mnist1d.PREAMBLE + (
        f'\nclass Model(nn.Module):\n    @nn.compact\n    def __call__(self, x):\n'
        f'        return nn.Dense(10)(nn.Dense({i + 1})(x))\n')
    return store.Candidate(id=i, round=round_, source=source,
                           result=result(params, acc, status), parents=parents,
                           proposal=i)


# Seeds 0-1; round 0 children 2-5; round 1 children 6-7.
HISTORY = search.History.of([
    candidate(0, -1, 5000, 0.9), candidate(1, -1, 90000, 0.95),
    candidate(2, 0, 3000, 0.9, parents=(0, 1)),     # fitness -300
    candidate(3, 0, 1000, 0.8, parents=(0, 0)),     # -200
    candidate(4, 0, 2000, 0.4, parents=(1, 0)),     # error 0.6 >= alpha
    candidate(5, 0, 100, 0.1, base.Status.NAN),     # not scored
    candidate(6, 1, 500, 0.9, parents=(3, 2)),      # -50
    candidate(7, 1, 800, 0.9, parents=(3, 3)),      # -80
], alpha=0.5)


def test_parents_are_gettop_with_retirement():
    select = lambda t, p: crossmut.select_parents(
        HISTORY, t, num_parents=p, random_parents=False, seed=0)
    assert select(0, 10) == [0, 1]
    assert select(1, 1) == [3]
    assert select(2, 1) == [6]          # 3 retired; 6 is the best left.
    assert select(1, 10) == [3, 2]
    assert select(2, 10) == [6, 7]      # Seeds, 2 and 3 retired.
    # Nothing left: the best ones again, with a warning.
    assert select(3, 10) == [6, 7, 3, 2, 0, 1]
    random = crossmut.select_parents(HISTORY, 1, num_parents=1,
                                     random_parents=True, seed=0)
    assert len(random) == 1 and random[0] in (2, 3)
    assert random == crossmut.select_parents(HISTORY, 1, num_parents=1,
                                             random_parents=True, seed=0)


def test_learn_tunes_on_the_round_minus_next_parents(tmp_path, task, lm):
    config = dataclasses.replace(SMALL, num_parents=1, soft_prompt_length=4)
    proposer = crossmut.CrossMut(lm=lm, task=task, config=config)
    proposer.start(str(tmp_path), completed_rounds=0)
    assert proposer.soft_prompt is None
    # What the console says of the steps (search.Narrating).
    assert proposer.learn_phase(0, HISTORY) == search.Phase(
        'tuning the soft prompt on 1 child (1 epoch)',
        'soft prompt tuned on 1 child')
    assert proposer.propose_phase(1) == search.Phase(
        'sampling 4 children of up to 24 tokens from 2 prompts with the LM',
        '4 proposals sampled')
    metrics = proposer.learn(0, HISTORY, np.random.default_rng(0))
    # Round 0's scored children are 2 and 3; 3 is round 1's parent.
    assert metrics['prompt_tuning/examples'] == 1.0
    assert np.isfinite(metrics['prompt_tuning/loss'])
    with checkpoints.CheckpointManager(
            str(tmp_path / crossmut.SOFT_PROMPTS_DIR)) as saved:
        assert saved.steps() == [0]
        assert saved.restore(0)['soft_prompt'].shape == (4, lm.config.embed_dim)

    restarted = crossmut.CrossMut(lm=lm, task=task, config=config)
    restarted.start(str(tmp_path), completed_rounds=1)
    np.testing.assert_array_equal(restarted.soft_prompt, proposer.soft_prompt)
    assert restarted.propose_phase(1).doing.endswith(
        'with the LM and its tuned soft prompt')
    # Proposals then sample with the soft prompt.
    proposals = restarted.propose(1, HISTORY, np.random.default_rng(1))
    assert len(proposals) == config.num_prompts * config.samples_per_prompt
    # The round's prompts are kept as text, by prompt_id.
    saved = json.loads(
        (tmp_path / crossmut.PROMPTS_DIR / 'round_1.json').read_text())
    assert [p['prompt_id'] for p in saved] == list(range(config.num_prompts))
    for proposal in proposals:
        prompt = saved[proposal.prompt_id]
        assert tuple(prompt['parents']) == proposal.parents
        assert prompt['text'].endswith(task.prompt_opening)

    frozen = crossmut.CrossMut(lm=lm, task=task, config=crossmut.CrossMutConfig(
        tune_prompt=False))
    frozen.start(str(tmp_path / 'frozen'), completed_rounds=0)
    assert frozen.learn_phase(0, HISTORY) is None
    assert frozen.learn(0, HISTORY, np.random.default_rng(0)) == {}
    assert not os.path.exists(tmp_path / 'frozen' / crossmut.SOFT_PROMPTS_DIR)


def test_prompts_show_parents_and_targets(task, lm):
    proposer = crossmut.CrossMut(lm=lm, task=task, config=SMALL)
    text = proposer._prompt(HISTORY, [2, 3])  # pylint: disable=protected-access
    assert text.count(prompts.METRICS_HEADER) == 3
    assert "{'num_params': '3000', 'val_accuracy': '0.900'}" in text
    # Targets: 90% of the smallest parent, 102% of the best accuracy.
    assert "{'num_params': '900', 'val_accuracy': '0.918'}" in text
    assert text.endswith(task.prompt_opening)
    assert 'import' not in text


def test_prompts_show_the_parent_nearest_the_target_last(task, lm):
    sizes = lambda text: [int(line.split("'")[3]) for line in text.splitlines()
                          if line.startswith("{'num_params'")]
    nearest_last = crossmut.CrossMut(lm=lm, task=task, config=SMALL)
    drawn = crossmut.CrossMut(lm=lm, task=task, config=dataclasses.replace(
        SMALL, nearest_parent_last=False))
    for parents in ([3, 2], [2, 3]):
        assert sizes(nearest_last._prompt(HISTORY, parents)) == [3000, 1000, 900]  # pylint: disable=protected-access
    assert sizes(drawn._prompt(HISTORY, [3, 2])) == [1000, 3000, 900]  # pylint: disable=protected-access
    # A tuning example's target is the child's size: its nearest parent last.
    child = prompts.Metrics(num_params=2500, val_accuracy=0.9)
    assert sizes(nearest_last._prompt(HISTORY, [2, 3], target=child)) == [1000, 3000, 2500]  # pylint: disable=protected-access


def _as_an_lm_repeats_it(source, preamble, opening):
    """`source` as a child that copies it from a prompt, laid out anew:
    the prompt's form, 2-space indentation, comments, a docstring."""
    copy = prompts.prompt_code(source, preamble).replace('    ', '  ')
    first, rest = copy.split(opening, 1)
    return (f'{first}# Copied.\n{opening}  # the same program\n'
            f'  """A docstring the seed does not have."""\n{rest}\n\n')


@pytest.mark.parametrize('task_name', ['mnist1d', 'clrs'])
def test_copies_of_every_seed_share_its_canonical_form(task_name):
    if task_name == 'mnist1d':
        task = mnist1d.Mnist1dTask()
    else:
        task = pytest.importorskip('clrs_tasks.task').ClrsTask()
    forms = set()
    for seed in task.seed_programs():
        form = search.canonical(seed.source, task.preamble)
        copy = _as_an_lm_repeats_it(seed.source, task.preamble,
                                    task.prompt_opening)
        assert copy != seed.source
        assert search.canonical(copy, task.preamble) == form, seed.name
        # Imports the preamble does not provide are part of the program.
        assert search.canonical('import math\n' + copy, task.preamble) != form
        forms.add(form)
    assert len(forms) == len(task.seed_programs())  # Seeds differ.
    assert search.canonical('x = (\n', task.preamble) == 'x = ('



def test_a_users_seed_folder_is_checked_before_anything_trains(
        tmp_path, task, worker_config, lm):
    mine = tmp_path / 'my_seeds'
    mine.mkdir()
    (mine / 'small_mlp.py').write_text(MLP)
    (mine / 'wrong_output.py').write_text(MLP.replace('Dense(10)', 'Dense(3)'))
    (mine / 'not_python.py').write_text('class Model(\n')
    (mine / '_helper.py').write_text('x = 1\n')  # Not a seed.
    users = dataclasses.replace(task, seeds_dir=str(mine))
    assert [s.name for s in users.seed_programs()] == [
        'not_python', 'small_mlp', 'wrong_output']
    with pytest.raises(search.SearchError) as info:
        run(tmp_path / 'run', users, worker_config, lm)
    message = str(info.value)
    assert f'{mine}/not_python.py: syntax_error' in message
    assert f'{mine}/wrong_output.py: build_error' in message
    assert 'small_mlp' not in message
    assert not read_log(tmp_path / 'run')  # Nothing was trained.
    # A folder that is not there, or holds no seed, is a clear error too.
    for folder in (tmp_path / 'missing', tmp_path / 'run'):
        with pytest.raises(search.SearchError, match='seed'):
            run(tmp_path / 'other', dataclasses.replace(
                task, seeds_dir=str(folder)), worker_config, lm)
    # Good seeds start a search.
    (mine / 'wrong_output.py').unlink()
    (mine / 'not_python.py').unlink()
    run(tmp_path / 'good', users, worker_config, lm, rounds=1)
    assert [c.round for c in read_log(tmp_path / 'good')][0] == -1
