"""Nothing lost: the main binary killed with SIGKILL at several moments, then
run again, ends with exactly the records of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from evoprompting import gin_utils

# One round of 2 x 2 children from the tiny random LM, 16 training steps.
SEARCH = ['--gin_file=gin/mnist1d/quick.gin', '--gin_file=gin/lm/tiny_random.gin',
          '--gin_bindings=mnist1d.TrainConfig.num_steps = 16',
          '--gin_bindings=mnist1d.TrainConfig.eval_every = 8',
          '--gin_bindings=ROUNDS = 2', '--gin_bindings=PROMPTS = 2',
          '--gin_bindings=SAMPLES = 2', '--gin_bindings=MAX_NEW_TOKENS = 24',
          '--gin_bindings=search.SearchConfig.alpha = 0.9']


def command(workdir, *extra):
    return [sys.executable, '-m', 'evoprompting.main', *SEARCH, *extra,
            f'--workdir={workdir}']


def run_to_end(workdir, *extra):
    out = subprocess.run(command(workdir, *extra), capture_output=True,
                         text=True, timeout=900, cwd=gin_utils.REPO_ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr


def run_until(workdir, marker: str, sig=signal.SIGKILL) -> str:
    """Starts the binary and sends `sig` when `marker` appears in its log.

    The binary gets the default SIGINT handling, as from a terminal (a
    background job's children inherit SIGINT ignored)."""
    process = subprocess.Popen(
        command(workdir), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True, cwd=gin_utils.REPO_ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    timer = threading.Timer(900, process.kill)
    timer.start()
    log = []
    try:
        for line in process.stderr:
            log.append(line)
            if marker in line:
                process.send_signal(sig)
                sent = time.monotonic()
                break
        log.extend(process.stderr)
        process.wait()
    finally:
        timer.cancel()
    assert any(marker in line for line in log), ''.join(log[-40:])
    run_until.stop_s = time.monotonic() - sent
    return ''.join(log)


def records(workdir):
    """The log in the search's order, without ids and timings: parents are
    named by (round, proposal), since ids follow the order evaluations end."""
    with open(os.path.join(workdir, 'candidates.jsonl')) as f:
        log = [json.loads(line) for line in f]
    name = {c['id']: (c['round'], c['proposal']) for c in log}
    out = []
    for c in log:
        r = c['result']
        out.append((c['round'], c['proposal'], c['source'],
                    [name[p] for p in c['parents']], c['temperature'],
                    r['status'], r['params'], r['metrics'].get('val_accuracy')))
    return sorted(out, key=lambda r: (r[0], r[1]))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('uninterrupted'))
    run_to_end(workdir)
    return records(workdir)


def test_killed_mid_round_resumes_to_the_same_records(tmp_path, uninterrupted):
    """The default suite's kill: partway through round 0's evaluations."""
    run_until(str(tmp_path), 'round 0 child 1:')
    before = records(str(tmp_path))
    assert 2 <= sum(r[0] == 0 for r in before) < 4, before
    proposals = (tmp_path / 'rounds' / 'round_0.json').read_text()
    run_to_end(str(tmp_path))
    after = records(str(tmp_path))
    assert after[:len(before)] == before  # Nothing lost.
    assert after == uninterrupted  # Nothing evaluated twice, same result.
    # The saved proposals were evaluated, not sampled again.
    assert (tmp_path / 'rounds' / 'round_0.json').read_text() == proposals


def test_two_workers_record_what_one_records(tmp_path, uninterrupted):
    """Two sandbox workers evaluate concurrently (one forced CPU device
    each); the records, by round and proposal, equal one worker's."""
    run_to_end(str(tmp_path), '--gin_bindings=NUM_WORKERS = 2')
    with open(os.path.join(tmp_path, 'run_metadata.json')) as f:
        plan = json.load(f)['device_plan']
    assert [w['description'] for w in plan['workers']] == [
        'cpu, 1 host device'] * 2
    assert records(str(tmp_path)) == uninterrupted


@pytest.mark.slow
@pytest.mark.parametrize('marker', [
    '2/4 seed 1:',            # While the seeds are evaluated.
    'Round 0: 4 proposals',   # Between sampling and evaluation.
    'Round 0 done',           # Between the summaries and the state.
])
def test_killed_run_resumes_to_the_same_records(tmp_path, uninterrupted, marker):
    run_until(str(tmp_path), marker)
    before = records(str(tmp_path))
    log = run_to_end(str(tmp_path))
    after = records(str(tmp_path))
    assert after[:len(before)] == before  # Nothing lost.
    assert after == uninterrupted  # Nothing evaluated twice, same result.
    resumed_seeds = (f'Evaluating {4 - sum(r[0] == -1 for r in before)} of 4 '
                     'seed programs' if marker.startswith('2/4') else
                     'All 4 seed programs of mnist1d are recorded')
    assert resumed_seeds in log and 'Resuming ' in log


def test_ctrl_c_stops_within_seconds_and_keeps_what_finished(tmp_path):
    """SIGINT while a seed trains: the running evaluation is killed, not
    waited for nor recorded; the finished ones are kept; a rerun finishes."""
    log = run_until(str(tmp_path), '1/4 seed 0:', signal.SIGINT)
    assert run_until.stop_s < 10, run_until.stop_s
    assert 'run the same command to resume' in log
    before = records(str(tmp_path))
    assert 1 <= len(before) < 4 and all(r[0] == -1 for r in before)
    run_to_end(str(tmp_path))
    after = records(str(tmp_path))
    assert after[:len(before)] == before
    assert [(r[0], r[1]) for r in after] == (
        [(-1, i) for i in range(4)] + [(t, i) for t in (0, 1) for i in range(4)])


@pytest.mark.slow
def test_sigint_stops_cleanly_and_says_how_to_resume(tmp_path, uninterrupted):
    log = run_until(str(tmp_path), '1/4 seed 0:', signal.SIGINT)
    assert 'run the same command to resume' in log
    run_to_end(str(tmp_path))
    assert records(str(tmp_path)) == uninterrupted
