"""The report binary on small real stores: sections, figures, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from evoprompting import report, store
from evoprompting.tasks import base

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
FAILURES = ('syntax_error', 'build_error', 'too_large', 'nan', 'timeout', 'crash')


def write_search(workdir, *, method, seed, rounds=3, children=16, gain=1.0,
                 completed=None):
    """A search log shaped like a real one: 4 seeds, then rounds whose ok
    children drift smaller and more accurate by `gain` per round, a mix of
    failures and duplicates, parents drawn from the best so far."""
    rng = np.random.default_rng(seed)
    os.makedirs(workdir)
    with open(os.path.join(workdir, store.SEARCH_CONFIG_FILE), 'w') as f:
        json.dump({'method': method, 'task': 'mnist1d', 'alpha': 0.5,
                   'hypervolume_reference': [1.0, 7.0], 'num_rounds': rounds}, f)
    seeds = [(5210, 0.88), (60_000, 0.80), (41_000, 0.70), (100_000, 0.60)]
    with store.CandidateStore.open(workdir) as s:
        def add(rnd, res, source, **kwargs):
            s.append(store.Candidate(id=len(s), round=rnd, source=source,
                                     result=res, **kwargs))

        for i, (params, acc) in enumerate(seeds):
            add(-1, base.EvalResult(base.Status.OK, 'ok', f'seed{i}', params=params,
                                    metrics={'val_accuracy': acc, 'test_accuracy': acc - 0.01,
                                             'best_step': 4000}),
                f'class Model:  # seed {i}\n    pass\n')
        for r in range(rounds):
            ok = [c for c in s if c.result.ok and c.duplicate_of is None]
            ok.sort(key=lambda c: c.result.params * (1 - c.result.metrics['val_accuracy']))
            for j in range(children):
                parents = tuple(int(p) for p in rng.choice([c.id for c in ok[:4]], 2))
                extra = dict(parents=parents, prompt_id=j // 4,
                             temperature=float(rng.choice([0.2, 0.6, 0.8, 1.0])))
                u = rng.random()
                if u < 0.1 and ok:
                    add(r, ok[0].result, ok[0].source, duplicate_of=ok[0].id, **extra)
                elif u < 0.35:
                    status = FAILURES[int(rng.integers(len(FAILURES)))]
                    add(r, base.EvalResult(base.Status(status), 'failed', f'{r}-{j}'),
                        f'# failed {r}-{j}\n', **extra)
                else:
                    params = int(5210 * 10 ** (rng.normal(0, 0.5) - 0.25 * gain * r))
                    acc = float(np.clip(0.86 + 0.06 * np.log10(params / 5210)
                                        + 0.02 * gain * r + rng.normal(0, 0.04),
                                        0.1, 0.995))
                    add(r, base.EvalResult(base.Status.OK, 'ok', f'{r}-{j}', params=params,
                                           metrics={'val_accuracy': acc,
                                                    'test_accuracy': acc - 0.01,
                                                    'best_step': 3000}),
                        f'class Model:  # round {r} child {j}\n    width = {params}\n',
                        **extra)
    store.write_state(workdir, {
        'completed_rounds': rounds if completed is None else completed})


def run_report(*args):
    return subprocess.run([sys.executable, '-m', 'evoprompting.report', *args],
                          capture_output=True, text=True, timeout=300)


def test_report_of_several_methods(tmp_path):
    runs = [('evoprompting', 0, 1.0), ('evoprompting', 1, 1.0),
            ('random_search', 2, 0.0)]
    workdirs = []
    for method, seed, gain in runs:
        workdirs.append(str(tmp_path / f'{method}-{seed}'))
        write_search(workdirs[-1], method=method, seed=seed, gain=gain)
    out = tmp_path / 'out'
    # Both spellings: repeated --workdir and positional workdirs.
    proc = run_report(f'--workdir={workdirs[0]}', f'--out={out}', *workdirs[1:])
    assert proc.returncode == 0, proc.stderr
    text = (out / report.REPORT_FILE).read_text()
    for section in ('## Runs', '## Summary per method', '## Figure 2a',
                    '## Figure 2b', '## Figure 4', '## Hypervolume per round',
                    '## Status breakdown', '## Rounds of each run',
                    '## Best programs'):
        assert section in text
    for name in report.FIGURES.values():
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
        assert f']({name})' in text
    assert '| evoprompting | 2 | 48, 48 |' in text
    assert text.count('| 3 of 3 |') == 3  # Rounds done, from state.json.
    assert '| random_search | 1 | 48 |' in text
    assert 'Lineage: parents #' in text and 'Ancestry' in text
    assert '```python\nclass Model:' in text
    # Every run's candidates are in its rounds table; the log is unchanged.
    assert text.count('| seeds | 4 | 4 | 0 | 4 |') == 3
    assert '| 2 | 16 |' in text
    for workdir in workdirs:
        assert len(store.read_candidates(workdir)) == 4 + 3 * 16


def test_bootstrap_curves_pool_runs_of_a_method(tmp_path):
    runs = []
    for seed in (0, 1):
        write_search(str(tmp_path / f'r{seed}'), method='evoprompting', seed=seed)
        runs.append(report.load_run(str(tmp_path / f'r{seed}')))
    curves = report.bootstrap_curves({'evoprompting': runs},
                                     rng=np.random.default_rng(0),
                                     num_samples=100, sample_size=20)
    (curve,) = curves
    assert curve.label == 'evoprompting (2 runs)'
    assert curve.x[-1] == 48
    # The best of everything can only be reached, never exceeded, and the
    # running maximum of a growing pool does not fall by much on average.
    best = max(f for run in runs for c in run.children
               if (f := report.summaries.candidate_fitness(c, alpha=0.5)) is not None)
    assert np.all(curve.high <= best + 1e-9)
    assert curve.mean[-1] > curve.mean[0]
    assert np.all(curve.low <= curve.mean) and np.all(curve.mean <= curve.high)


@pytest.mark.parametrize('setup, words', [
    ('missing', 'does not exist'),
    ('no_config', 'has no search_config.json'),
    ('bad_config', 'unreadable search config'),
    ('no_log', 'holds no candidate log'),
    ('empty_log', 'empty candidate log'),
])
def test_bad_workdirs_fail_clearly(tmp_path, setup, words):
    workdir = tmp_path / 'run'
    if setup != 'missing':
        workdir.mkdir()
    if setup in ('bad_config', 'no_log', 'empty_log'):
        config = {'method': 'evoprompting'} if setup == 'bad_config' else {
            'method': 'evoprompting', 'task': 'mnist1d', 'alpha': 0.5,
            'hypervolume_reference': [1.0, 7.0], 'num_rounds': 2}
        (workdir / store.SEARCH_CONFIG_FILE).write_text(json.dumps(config))
    if setup == 'empty_log':
        (workdir / store.CANDIDATES_FILE).write_text('')
    with pytest.raises(report.ReportError, match=words):
        report.load_run(str(workdir))


def test_dominated_seeds_are_those_the_best_child_beats_on_both_axes(tmp_path):
    workdir = str(tmp_path / 'run')
    write_search(workdir, method='evoprompting', seed=0, rounds=0)
    def ok(params, acc):
        return base.EvalResult(base.Status.OK, 'ok', f'{params}', params=params,
                               metrics={'val_accuracy': acc, 'test_accuracy': acc,
                                        'best_step': 1})

    with store.CandidateStore.open(workdir) as s:
        # Fitness -(params x val error): 45,000 x 0.05 = -2,250 is the best;
        # the 3,000-parameter child is over alpha (error 0.8) and not scored.
        for params, acc in ((45_000, 0.95), (3_000, 0.20)):
            s.append(store.Candidate(id=len(s), round=0, source=f'# {params}\n',
                                     result=ok(params, acc), parents=(0,)))
    run = report.load_run(workdir)
    # Seeds (params, test accuracy): (5,210, .87), (60k, .79), (41k, .69),
    # (100k, .59). The best child is larger than two of them.
    assert [c.result.params for c in report.dominated_seeds(run)] == [
        60_000, 100_000]
    # The sample standard deviation, with n.
    assert report.mean_std([1.0, None, 3.0], '.1f') == '2.0 ± 1.4 (n=2)'
    assert report.mean_std([5.0], '.1f') == '5.0 (n=1)'
    assert report.mean_std([None], '.1f') == 'n/a'


def test_binary_usage_errors(tmp_path):
    proc = run_report(str(tmp_path))
    assert proc.returncode != 0 and '--out is required' in proc.stderr
    proc = run_report(f'--out={tmp_path / "out"}')
    assert proc.returncode != 0 and 'at least one workdir' in proc.stderr
    proc = run_report(f'--out={tmp_path / "out"}', str(tmp_path / 'nope'))
    assert proc.returncode != 0 and 'does not exist' in proc.stderr
    write_search(str(tmp_path / 'a'), method='evoprompting', seed=0, rounds=1)
    write_search(str(tmp_path / 'b'), method='evoprompting', seed=1, rounds=1)
    config = tmp_path / 'b' / store.SEARCH_CONFIG_FILE
    config.write_text(config.read_text().replace('mnist1d', 'clrs'))
    proc = run_report(f'--out={tmp_path / "out"}', str(tmp_path / 'a'),
                      str(tmp_path / 'b'))
    assert proc.returncode != 0 and 'different tasks' in proc.stderr


def test_report_of_a_run_that_has_scored_no_child(tmp_path):
    workdir = str(tmp_path / 'run')
    write_search(workdir, method='evoprompting', seed=0, rounds=0)
    with store.CandidateStore.open(workdir) as s:  # One round, all failures.
        for i in range(3):
            s.append(store.Candidate(
                id=len(s), round=0, source='class Model(\n', parents=(0, 1),
                result=base.EvalResult(base.Status.SYNTAX_ERROR, 'bad', 'x')))
    path = report.write_report([report.load_run(workdir)], str(tmp_path / 'out'),
                               rng=np.random.default_rng(0))
    text = open(path).read()
    assert 'No child was scored.' in text
    assert '| run | evoprompting | 3 | 3 (100%) |' in text
    for name in report.FIGURES.values():
        assert (tmp_path / 'out' / name).read_bytes().startswith(PNG_MAGIC)


def test_curves_read_right():
    # A fitness plateau: the ticks resolve it (a log axis had two ticks,
    # -10^3 and -10^4); every point is marked, so one point still shows.
    curve = report.plots.Curve('fitness', [8, 16, 24], [-3907, -3438, -3438],
                               [-4000, -3500, -3500], [-3800, -3400, -3400])
    fig = report.plots.curves([curve], title='t', xlabel='x', ylabel='y',
                              reference=('best seed', -3907.5))
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if low <= t <= high]
    assert ax.get_yscale() == 'linear' and len(ticks) >= 4
    assert ax.lines[0].get_marker() == 'o'
    # Rounds: whole-number ticks only.
    rounds = report.plots.Curve('hv', [-1, 0, 1], [0.94, 0.94, 0.95],
                                [0.94, 0.94, 0.95], [0.94, 0.94, 0.95])
    fig = report.plots.curves([rounds], title='t', xlabel='round', ylabel='hv',
                              integer_x=True)
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())
    report.plots.plt.close('all')


def test_figure_2a_names_the_seeds():
    groups = [report.plots.PointGroup('seeds', [5210, 15210], [0.1, 0.3],
                                      marker='*', front=False,
                                      names=['greydanus_cnn', 'mlp'])]
    fig = report.plots.error_vs_size(groups, title='t')
    assert {t.get_text() for t in fig.axes[0].texts} == {'greydanus_cnn', 'mlp'}
    report.plots.plt.close('all')


def test_an_interrupted_run_says_how_far_it_got(tmp_path):
    # All 3 rounds have records, but the search finished only one of them.
    write_search(str(tmp_path / 'run'), method='evoprompting', seed=0,
                 completed=1)
    proc = run_report(f'--workdir={tmp_path / "run"}', f'--out={tmp_path / "out"}')
    assert proc.returncode == 0, proc.stderr
    assert '| 1 of 3 |' in (tmp_path / 'out' / report.REPORT_FILE).read_text()


def test_figure_2b_zooms_on_the_plateau():
    # Early maxima of a few children set the full range (-8,000); the
    # plateau the methods reach (-420 to -350) is a line there, so a second
    # panel frames the second half's means.
    x = np.arange(1, 65)
    fast = np.where(x < 8, -8000.0, -350.0)
    slow = np.where(x < 16, -6000.0, -420.0)
    curves = [report.plots.Curve(name, x, mean, mean - 50, mean + 50)
              for name, mean in (('fast', fast), ('slow', slow))]
    zoom_from = report.fig2b_zoom_from(curves)
    assert zoom_from == 32
    fig = report.plots.curves(curves, title='t', xlabel='children', ylabel='f',
                              reference=('best seed', -400.0), integer_x=True,
                              zoom_from=zoom_from)
    full, zoom = fig.axes
    assert full.get_ylim()[0] < -8000
    low, high = zoom.get_ylim()
    assert -440 < low < -420 and -350 < high < -330
    assert zoom.get_xlim()[0] > 30
    assert report.fig2b_zoom_from([]) is None
    report.plots.plt.close('all')


def test_empty_figures_say_so():
    # A run whose children all failed: no curve and no round mean to draw.
    fig = report.plots.curves([], title='t', xlabel='x', ylabel='y',
                              reference=('best seed', -400.0),
                              empty_note='no scored child')
    assert [t.get_text() for t in fig.axes[0].texts] == ['no scored child']
    empty = report.plots.Trajectory('evoprompting', [], [], [])
    fig = report.plots.round_trajectories([empty], title='t',
                                          empty_note='no ok child')
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ['no ok child']
    assert not ax.lines and ax.get_legend() is None
    report.plots.plt.close('all')
