"""What the console says of a search's progress: the ETA of the whole search
(a pure function of the measured rates and phase times), the heartbeat of
long steps, and the lines of a real LM-free search and of its resume."""

import json
import logging
import re
import time

import pytest

from evoprompting import search, store
from evoprompting.baselines import random_search
from evoprompting.sandbox import evaluator, pool
from evoprompting.tasks import base, mnist1d

LIMITS = pool.Limits(wall_s=120, cpu_s=240, memory_mb=6144, startup_s=300)


def estimate(**kwargs):
    arguments = dict(evaluations_done=4, evaluations_total=164,
                     evaluations_per_min=4.0, rounds_to_propose=9,
                     propose_s=[41.0, 61.0], rounds_to_learn=9,
                     learn_s=[35.0])
    return search.estimate_remaining(**{**arguments, **kwargs})


def test_eta_is_evaluations_at_their_rate_plus_the_rounds_phases():
    eta = estimate()
    # 160 evaluations at 4 per minute, 9 rounds of (41 + 61) / 2 s sampling
    # and 9 of 35 s tuning.
    assert eta.known
    assert eta.seconds == pytest.approx(160 * 15 + 9 * 51 + 9 * 35)
    assert str(eta) == 'ETA 53 min'
    # The last round: its evaluations only.
    last = estimate(evaluations_done=160, rounds_to_propose=0, rounds_to_learn=0)
    assert last.seconds == pytest.approx(4 * 15) and str(last) == 'ETA 1 min 00 s'
    done = estimate(evaluations_done=164, rounds_to_propose=0, rounds_to_learn=0,
                    evaluations_per_min=None)
    assert done.known and done.seconds == 0


def test_eta_is_unknown_until_measured():
    # Before any round: children per round and every phase unknown.
    before = estimate(evaluations_total=None, propose_s=[], learn_s=[])
    assert not before.known and str(before) == 'ETA unknown'
    assert before.unmeasured == ('evaluating', 'proposing', 'learning')
    # No evaluation timed yet: unknown, whatever else is.
    assert str(estimate(evaluations_per_min=None)) == 'ETA unknown'
    # Round 0 sampled and evaluating, not tuned yet: a lower bound only.
    first = estimate(learn_s=[])
    assert first.unmeasured == ('learning',)
    assert str(first) == 'ETA unknown (> 48 min; learning not timed yet)'
    # Nothing left to learn: nothing to measure.
    assert estimate(learn_s=[], rounds_to_learn=0).known


@pytest.mark.parametrize('seconds, text', [
    (0.04, '0.0 s'), (3.21, '3.2 s'), (41.4, '41 s'), (59.6, '1 min 00 s'),
    (200, '3 min 20 s'), (1500, '25 min'), (7500, '2 h 05 min')])
def test_durations_are_rounded_for_people(seconds, text):
    assert search.duration(seconds) == text


def test_a_resumed_run_estimates_from_the_recorded_timings(tmp_path):
    timings = [
        {'round': 0, 'propose_s': 40.0, 'evaluate_s': 600.0, 'learn_s': 30.0,
         'evaluations': 40, 'processes': 1, 'proposed': True, 'learnt': True},
        # Resumed: its proposals were saved, its time is not sampling's.
        {'round': 1, 'propose_s': 0.01, 'evaluate_s': 600.0, 'learn_s': 50.0,
         'evaluations': 40, 'processes': 1, 'proposed': False, 'learnt': True}]
    path = tmp_path / search.TIMINGS_FILE
    path.write_text(''.join(json.dumps(t) + '\n' for t in timings)
                    + '{"round": 2, "propo')  # A line cut short by a crash.
    assert search.read_timings(str(tmp_path)) == timings
    progress = search._Progress(  # pylint: disable=protected-access
        num_rounds=4, num_seeds=4, done=84, completed_rounds=2,
        timings=search.read_timings(str(tmp_path)), children_per_round=40,
        instant=False)
    # 80 evaluations at 4 per minute, 2 rounds of 40 s sampling, 1 of 40 s
    # tuning: known before this session measured anything.
    eta = progress.estimate()
    assert eta.known and eta.seconds == pytest.approx(80 * 15 + 2 * 40 + 40)
    # This session's measurements join the recorded ones.
    progress.proposed(2, 40, 100.0)
    assert progress.estimate().seconds == pytest.approx(80 * 15 + 70 + 40)


def test_a_long_step_says_it_is_still_running(caplog):
    caplog.set_level(logging.INFO)
    with search._heartbeat('Round 3', 'sampling 160 children', 10.0, 0.05):  # pylint: disable=protected-access
        time.sleep(0.23)
    beats = [r.getMessage() for r in caplog.records
             if 'still sampling' in r.getMessage()]
    assert 3 <= len(beats) <= 5, beats
    assert re.fullmatch(r'Round 3: still sampling 160 children, 0\.\d s so '
                        r'far, about \d\.\d s left', beats[0]), beats[0]


def result(params, val_accuracy):
    return base.EvalResult(base.Status.OK, '', 'hash', params=params, metrics={
        'val_accuracy': val_accuracy, 'test_accuracy': val_accuracy})


class Narrated:
    """Random search that announces its steps as an LM proposer does (a
    forced fake of `search.Narrating`; the real one, CrossMut, is in
    search_test)."""

    def __init__(self, proposer):
        self.proposer = proposer

    def start(self, workdir, completed_rounds):
        self.proposer.start(workdir, completed_rounds)

    def propose(self, round_index, history, rng):
        time.sleep(0.05)
        return self.proposer.propose(round_index, history, rng)

    def learn(self, round_index, history, rng):
        time.sleep(0.05)
        return self.proposer.learn(round_index, history, rng)

    def propose_phase(self, round_index):
        return search.Phase(f'drawing round {round_index}\'s child',
                            '1 proposal drawn')

    def learn_phase(self, round_index, history):
        del round_index, history
        return search.Phase('learning nothing', 'nothing learnt')


def test_the_console_says_what_each_phase_does_and_the_eta(tmp_path, caplog):
    """Random search with the seeds already recorded (their results are
    made up; only their sources are used): 2 rounds of one child each,
    trained for real; then 2 rounds more on the resumed workdir, announced."""
    caplog.set_level(logging.INFO)
    task = mnist1d.Mnist1dTask(
        data=mnist1d.DataConfig(cache_dir=str(tmp_path / 'cache')),
        train=mnist1d.TrainConfig(num_steps=8, eval_every=8, steps_per_call=1))
    workdir = str(tmp_path / 'run')
    with store.CandidateStore.open(workdir) as seeds:
        for i, seed in enumerate(task.seed_programs()):
            seeds.append(store.Candidate(
                id=i, round=search.SEED_ROUND, source=seed.source,
                result=result(5000 * (i + 1), 0.5), proposal=i))

    def run(rounds, narrated=False, **kwargs):
        caplog.clear()
        proposer = random_search.RandomSearch(
            task=task, config=random_search.RandomSearchConfig(
                children_per_round=1, max_mutations=1))
        search.run(
            task=task, proposer=Narrated(proposer) if narrated else proposer,
            sandbox=evaluator.Sandbox(task, limits=LIMITS),
            config=search.SearchConfig(method='random_search',
                                       num_rounds=rounds, alpha=0.99),
            workdir=workdir, **kwargs)
        return [r.getMessage() for r in caplog.records
                if r.name == 'absl' and r.pathname.endswith('search.py')]

    def in_order(lines, *patterns):
        at = [next((i for i, l in enumerate(lines) if re.fullmatch(p, l)), None)
              for p in patterns]
        assert None not in at and at == sorted(at), (at, lines)

    # An LM-free method: one short line per round's proposals, nothing on
    # an LM or on tuning.
    lines = run(2)
    in_order(lines,
             r'Resuming .*: 4 candidates recorded, 0 of 2 rounds complete; '
             r'ETA unknown',
             r'Round 0 \(1 of 2\): 1 proposal from random_search in \d\.\d s, '
             r'saved; ETA unknown',
             r'\[#+\.*\] 5/6 round 0 child 0: .* \d+\.\d evals/min \| ETA .*',
             r'Round 0 done: 1 child, .*; ETA \d.*',
             # Round 0 timed each phase: the ETA is known.
             r'Round 1 \(2 of 2\): 1 proposal from random_search in \d\.\d s, '
             r'saved; ETA \d+(\.\d)? s',
             r'Round 1 done: 1 child, .*evaluations_per_min=[\d.]+, '
             r'speed/round_minutes=[\d.]+')
    assert not any('LM' in l or 'tun' in l or 'still ' in l
                   or l.endswith('...') for l in lines), lines

    # Resumed with 2 rounds more by a proposer that announces its steps:
    # the ETA comes from timings.jsonl at once, and each step is said when
    # it starts and with its time when done.
    lines = run(4, narrated=True, allow_config_change=True)
    in_order(lines,
             r'Resuming .*: 6 candidates recorded, 2 of 4 rounds complete; '
             r'ETA \d+(\.\d)? s',
             r"Round 2 \(3 of 4\): drawing round 2's child\.\.\.",
             r'Round 2: 1 proposal drawn in 0\.\d s \(0\.\d s each\), saved; '
             r'ETA \d.*',
             r'\[#+\.*\] 7/8 round 2 child 0: .*',
             r'Round 2: learning nothing\.\.\.',
             r'Round 2: nothing learnt in 0\.\d s',
             r'Round 2 done: .*; ETA \d.*',
             r"Round 3 \(4 of 4\): drawing round 3's child\.\.\.",
             r'Round 3: 1 proposal drawn in .*',
             r'\[#+\] 8/8 round 3 child 0: .*',
             r'Round 3 done: .*')
    # The last round learns nothing.
    assert not any(l.startswith('Round 3: learning') for l in lines)
    # The timings say which rounds proposed and learnt.
    timings = search.read_timings(workdir)
    assert [(t['round'], t['proposed'], t['learnt']) for t in timings] == [
        (0, True, True), (1, True, False), (2, True, True), (3, True, False)]
