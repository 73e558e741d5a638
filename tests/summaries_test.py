"""Per-round statistics by hand, and TensorBoard event files read back."""

import glob
import os
import struct

from matplotlib import text as mpl_text
import numpy as np
import pytest
from tensorboardX import record_writer
from tensorboardX.proto import event_pb2

from evoprompting import store, summaries
from evoprompting.tasks import base

ALPHA = 0.5
REFERENCE = (1.0, 7.0)


def result(status, params=None, val=None, test=None):
    metrics = {} if val is None else {'val_accuracy': val, 'test_accuracy': test,
                                      'best_step': 100}
    return base.EvalResult(base.Status(status), 'msg', 'sha', params=params,
                           metrics=metrics)


# (round, result, duplicate_of). Fitness = -(params * val error) if val error < 0.5.
RECORDS = [
    (-1, result('ok', 1000, 0.8, 0.75), None),       # 0: fitness -200, (0.25, 3)
    (-1, result('ok', 10000, 0.9, 0.9), None),       # 1: fitness -1000, (0.1, 4)
    (0, result('ok', 100, 0.6, 0.6), None),          # 2: fitness -40, (0.4, 2)
    (0, result('syntax_error'), None),               # 3
    (0, result('ok', 100000, 0.4, 0.45), None),      # 4: not scored, (0.55, 5)
    (0, result('ok', 100, 0.6, 0.6), 2),             # 5: duplicate of 2
    (1, result('ok', 1000, 0.95, 0.92), None),       # 6: fitness -50, (0.08, 3)
    (1, result('timeout'), None),                    # 7
    (1, result('too_large', 10**7), None),           # 8
]


def make_candidates():
    return [store.Candidate(id=i, round=r, source=f'x = {i}\n', result=res,
                            parents=() if r < 0 else (0, 1),
                            prompt_id=None if r < 0 else i % 2,
                            temperature=None if r < 0 else 0.6, duplicate_of=dup)
            for i, (r, res, dup) in enumerate(RECORDS)]


def counts(**nonzero):
    return {k: nonzero.get(k, 0) for k in summaries.STATUS_KEYS}


def test_round_stats_by_hand():
    stats = summaries.all_round_stats(make_candidates(), alpha=ALPHA,
                                      reference=REFERENCE)
    assert [s.round for s in stats] == [-1, 0, 1]
    seeds, r0, r1 = stats
    # Seeds: front (0.1, 4), (0.25, 3): 0.9 * 3 + 0.75 * 1.
    assert seeds == summaries.RoundStats(
        round=-1, num_children=2, children_so_far=0, status_counts=counts(ok=2),
        num_scored=2, round_best_fitness=pytest.approx(-200.0),
        best_fitness=pytest.approx(-200.0), best_id=0,
        hypervolume_test=pytest.approx(3.45), hypervolume_val=pytest.approx(3.5),
        front_size=2, mean_params=5500.0, mean_test_error=pytest.approx(0.175))
    # Round 0 adds (0.4, 2) to the front; (0.55, 5) is dominated.
    assert r0 == summaries.RoundStats(
        round=0, num_children=4, children_so_far=4,
        status_counts=counts(ok=2, syntax_error=1, duplicate=1), num_scored=1,
        round_best_fitness=pytest.approx(-40.0), best_fitness=pytest.approx(-40.0),
        best_id=2,
        hypervolume_test=pytest.approx(4.05), hypervolume_val=pytest.approx(4.1),
        front_size=3, mean_params=50050.0, mean_test_error=pytest.approx(0.475))
    assert r0.status_fractions['duplicate'] == 0.25
    assert r0.status_fractions['ok'] == 0.5
    assert sum(r0.status_fractions.values()) == pytest.approx(1.0)
    # Round 1: (0.08, 3) dominates both seeds; front (0.08, 3), (0.4, 2).
    assert r1 == summaries.RoundStats(
        round=1, num_children=3, children_so_far=7,
        status_counts=counts(ok=1, timeout=1, too_large=1), num_scored=1,
        round_best_fitness=pytest.approx(-50.0), best_fitness=pytest.approx(-40.0),
        best_id=2,
        hypervolume_test=pytest.approx(0.92 * 4 + 0.6),
        hypervolume_val=pytest.approx(0.95 * 4 + 0.6),
        front_size=2, mean_params=1000.0, mean_test_error=pytest.approx(0.08))


def test_best_candidates_skip_duplicates_and_unscored():
    best = summaries.best_candidates(make_candidates(), 4, alpha=ALPHA)
    assert [c.id for c in best] == [2, 6, 0, 1]
    assert summaries.candidate_fitness(make_candidates()[5], alpha=ALPHA) is None


def test_bootstrap_max_fitness():
    fitnesses = [None, -5.0, None, -1.0]
    rng = np.random.default_rng(0)
    samples = summaries.bootstrap_max_fitness(fitnesses, [1, 2, 4], rng=rng)
    assert samples.shape == (3, 100)
    assert np.isnan(samples[0]).all()  # Nothing scored among the first child.
    assert (samples[1] == -5.0).all()
    assert (samples[2] == -1.0).all()  # 20 draws from two values: -1 is drawn.
    single = summaries.bootstrap_max_fitness(fitnesses, [4], rng=rng,
                                             num_samples=2000, sample_size=1)
    assert set(np.unique(single)) == {-5.0, -1.0}
    assert single.mean() == pytest.approx(-3.0, abs=0.2)
    with pytest.raises(ValueError, match='outside 1..4'):
        summaries.bootstrap_max_fitness(fitnesses, [5], rng=rng)


def test_program_markdown_has_metrics_lineage_and_source():
    text = summaries.program_markdown(make_candidates()[6], alpha=ALPHA)
    assert '### #6 (round 1)' in text
    assert '| 1,000 | 0.9500 | 0.9200 | -50.0 | 100 |' in text
    assert 'parents #0, #1; prompt 0; temperature 0.6.' in text
    assert '```python\nx = 6\n```' in text


def read_events(logdir):
    """Every Event of the logdir's event files, checking the TFRecord framing."""
    events = []
    for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
        data = open(path, 'rb').read()
        pos = 0
        while pos < len(data):
            header = data[pos:pos + 8]
            (length,) = struct.unpack('<Q', header)
            (header_crc,) = struct.unpack('<I', data[pos + 8:pos + 12])
            assert header_crc == record_writer.masked_crc32c(header)
            body = data[pos + 12:pos + 12 + length]
            (body_crc,) = struct.unpack('<I', data[pos + 12 + length:pos + 16 + length])
            assert body_crc == record_writer.masked_crc32c(body)
            events.append(event_pb2.Event.FromString(body))
            pos += 16 + length
    return events


def test_tensorboard_writer_writes_readable_events(tmp_path):
    candidates = make_candidates()
    stats = summaries.all_round_stats(candidates, alpha=ALPHA, reference=REFERENCE)
    with summaries.TensorBoardWriter(str(tmp_path), alpha=ALPHA, num_best=2,
                                     purge_step=-1) as w:
        for s in stats:
            w.write_round(s, candidates=candidates, extra_scalars={
                'speed/evaluations_per_min': 10.0 + s.round,
                'prompt_tuning/loss': 2.0})
        with pytest.raises(ValueError, match='clashes'):
            w.write_round(stats[0], candidates=candidates,
                          extra_scalars={'search/best_fitness': 1.0})
    scalars, images, texts = {}, {}, {}
    # The run is named after the workdir.
    assert w.logdir == str(tmp_path / 'tensorboard' / tmp_path.name)
    events = read_events(w.logdir)
    # A resumed run makes TensorBoard drop the interrupted run's later events.
    assert any(e.HasField('session_log') and e.step == -1
               and e.session_log.status == e.session_log.START for e in events)
    for event in events:
        for v in event.summary.value:
            if v.HasField('simple_value'):
                scalars[(v.tag, event.step)] = v.simple_value
            elif v.HasField('image'):
                images[(v.tag, event.step)] = v.image
            elif v.metadata.plugin_data.plugin_name == 'text':
                texts[(v.tag.removesuffix('/text_summary'), event.step)] = v.tensor.string_val[0].decode()
    assert scalars[('search/best_fitness', -1)] == pytest.approx(-200.0)
    assert scalars[('search/best_fitness', 1)] == pytest.approx(-40.0)
    assert scalars[('search/hypervolume_test', 0)] == pytest.approx(4.05)
    assert scalars[('status/duplicate', 0)] == 0.25
    assert scalars[('status/timeout', 1)] == pytest.approx(1 / 3)
    assert scalars[('round/mean_params', 0)] == 50050.0
    assert scalars[('speed/evaluations_per_min', 1)] == 11.0
    assert scalars[('prompt_tuning/loss', 0)] == 2.0
    assert {step for tag, step in scalars if tag == 'status/ok'} == {-1, 0, 1}
    for step in (-1, 0, 1):
        image = images[('pareto_front', step)]
        assert image.encoded_image_string.startswith(b'\x89PNG')
        assert image.width > 300 and image.height > 200
    assert '#2 (round 0)' in texts[('best_programs', 1)]
    assert '#6 (round 1)' in texts[('best_programs', 1)]
    assert '#0 (seed)' in texts[('best_programs', -1)]


def test_read_candidates_leaves_the_log_alone(tmp_path):
    with store.CandidateStore.open(str(tmp_path)) as s:
        for c in make_candidates()[:3]:
            s.append(c)
    path = tmp_path / store.CANDIDATES_FILE
    cut = path.read_bytes()[:-10]  # A write in progress.
    path.write_bytes(cut)
    assert [c.id for c in store.read_candidates(str(tmp_path))] == [0, 1]
    assert path.read_bytes() == cut
    with pytest.raises(FileNotFoundError, match='no candidate log'):
        store.read_candidates(str(tmp_path / 'missing'))



# TensorBoard fits an image to its card: 215 px tall, and at most 326 px
# wide, in the Time Series tab at its default card width (measured in
# Chromium, TensorBoard 2.21, 1280-1920 px windows).
CARD_PX = (326, 215)


def test_pareto_image_is_legible_at_tensorboard_card_size():
    fig = summaries.pareto_figure(make_candidates(), title='run: after round 1')
    fig.canvas.draw()
    scale = min(CARD_PX[0] / fig.get_figwidth(),  # Displayed px per point.
                CARD_PX[1] / fig.get_figheight()) / 72
    texts = [t for t in fig.findobj(mpl_text.Text)
             if t.get_visible() and t.get_text().strip()]
    assert {'run: after round 1', 'seeds', 'round'} <= {t.get_text() for t in texts}
    small = {t.get_text(): round(t.get_fontsize() * scale, 1) for t in texts
             if t.get_fontsize() * scale < 8}
    assert not small, f'text under 8 px in a {CARD_PX} px card: {small}'
    # Rounds are whole numbers: one colour and one tick per round.
    assert colorbar_ticks(fig) == [0, 1]
    summaries.plots.plt.close('all')
    one_round = [c for c in make_candidates() if c.round <= 0]
    assert colorbar_ticks(summaries.pareto_figure(one_round, title='t')) == [0]
    summaries.plots.plt.close('all')


def colorbar_ticks(fig):
    fig.canvas.draw()
    colorbar = fig.axes[1]
    low, high = colorbar.get_ylim()
    return [float(t) for t in colorbar.get_yticks() if low <= t <= high]


def test_pareto_image_title_names_the_run(tmp_path, monkeypatch):
    titles = []
    figure = summaries.pareto_figure

    def recording(candidates, *, title, **kwargs):
        titles.append(title)
        return figure(candidates, title=title, **kwargs)

    monkeypatch.setattr(summaries, 'pareto_figure', recording)
    candidates = make_candidates()
    workdir = tmp_path / 'evoprompting_seed_3'
    with summaries.TensorBoardWriter(str(workdir), alpha=ALPHA) as w:
        for s in summaries.all_round_stats(candidates, alpha=ALPHA,
                                           reference=REFERENCE)[:2]:
            w.write_round(s, candidates=candidates)
    # Several runs' images side by side, under truncated run names, say
    # whose they are.
    assert titles == ['evoprompting_seed_3: after the seeds',
                      'evoprompting_seed_3: after round 0']
