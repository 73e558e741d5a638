"""clrs_tasks data: dm-clrs without TensorFlow, batches equal to the sampler's."""

import importlib.metadata
import os
import subprocess
import sys

import numpy as np
import pytest

from clrs_tasks import _clrs_import
from clrs_tasks import data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_installed_dm_clrs_matches_the_documented_install():
    assert importlib.metadata.version('dm-clrs') == _clrs_import.DM_CLRS_VERSION
    with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    assert (f'pip install --no-deps dm-clrs=={_clrs_import.DM_CLRS_VERSION}'
            in readme)


def test_samplers_load_without_tensorflow_or_haiku():
    code = (
        'import sys\n'
        'from clrs_tasks._clrs_import import clrs_modules\n'
        'm = clrs_modules()\n'
        "s, _ = m.samplers.build_sampler('bfs', num_samples=2, length=5, seed=0)\n"
        'assert s.next().features.inputs[0].data.shape == (2, 5)\n'
        "bad = [n for n in ('tensorflow', 'haiku', 'tensorflow_datasets')"
        ' if n in sys.modules]\n'
        'assert not bad, bad\n'
        "assert not hasattr(sys.modules['clrs'], 'models')\n")
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO,
                   timeout=120)


def _reference(key):
    """The sampler's data for `key`, built with dm-clrs' own API as run.py does."""
    clrs = _clrs_import.clrs_modules()
    sampler, spec = clrs.samplers.build_sampler(
        key.algorithm, num_samples=key.count, length=key.size, seed=key.seed,
        **data.sampler_kwargs(key))
    stream = iter([sampler.next()])
    if key.split != 'test':
        stream = clrs.samplers.process_random_pos(
            stream, np.random.default_rng((key.seed, 1)))
    if key.algorithm in data.PRED_AS_INPUT_ALGOS:
        spec, stream = clrs.samplers.process_pred_as_input(spec, stream)
    spec, stream = clrs.samplers.process_permutations(spec, stream, True)
    return next(stream), spec


@pytest.mark.parametrize('key', [
    data.DatasetKey('bfs', 'train', 7, 12, 5),
    data.DatasetKey('insertion_sort', 'val', 6, 10, 2),  # permutation + pred
    data.DatasetKey('lcs_length', 'train', 8, 10, 1),  # edge categorical
    data.DatasetKey('dfs', 'test', 9, 6, 3),  # graph hints, fixed pos
])
def test_batch_equals_sampler_feature_by_feature(key, tmp_path):
    dataset = data.load_dataset(key, str(tmp_path))
    feedback, spec = _reference(key)
    assert dict(dataset.spec) == dict(spec)
    rows = np.array([3, 0, 5, 1])
    num_graphs = 6
    batch = data.make_batch(dataset.arrays, dataset.spec, rows, num_graphs)
    n = key.size
    assert batch.num_nodes == n and batch.num_graphs == num_graphs
    senders = np.asarray(batch.inputs.senders)
    receivers = np.asarray(batch.inputs.receivers)
    edge_graph, edge_i, edge_j = senders // n, senders % n, receivers % n
    np.testing.assert_array_equal(receivers // n, edge_graph)
    node_graph, node_i = np.arange(num_graphs * n) // n, np.arange(
        num_graphs * n) % n
    real = len(rows)
    graph_rows = np.concatenate([rows, np.zeros(num_graphs - real, int)])

    def check(graphs, probes, time_axis):
        for dp in probes:
            want = np.asarray(dp.data, np.float32)
            if time_axis:
                want = np.moveaxis(want, 1, 0)  # [count, T, ...]
            loc = spec[dp.name][1]
            if loc == 'node':
                got = np.asarray(graphs.nodes[dp.name])
                if time_axis:
                    got = np.moveaxis(got, 0, 1)
                    expect = want[graph_rows[node_graph], :, node_i]
                else:
                    expect = want[graph_rows[node_graph], node_i]
                is_real = node_graph < real
            elif loc == 'edge':
                got = np.asarray(graphs.edges[dp.name])
                if time_axis:
                    got = np.moveaxis(got, 0, 1)
                    expect = want[graph_rows[edge_graph], :, edge_i, edge_j]
                else:
                    expect = want[graph_rows[edge_graph], edge_i, edge_j]
                is_real = edge_graph < real
            else:
                got = np.asarray(graphs.globals[dp.name])
                if time_axis:
                    got = np.moveaxis(got, 0, 1)
                expect = want[graph_rows]
                is_real = np.arange(num_graphs) < real
            np.testing.assert_array_equal(got[is_real], expect[is_real],
                                          err_msg=dp.name)
            assert not np.any(got[~is_real]), f'{dp.name}: padding not zero'

    check(batch.inputs, feedback.features.inputs, False)
    check(batch.outputs, feedback.outputs, False)
    check(batch.hints, feedback.features.hints, True)
    np.testing.assert_array_equal(
        np.asarray(batch.lengths),
        np.concatenate([feedback.features.lengths[rows],
                        np.zeros(num_graphs - real)]))
    np.testing.assert_array_equal(np.asarray(batch.graph_mask),
                                  np.arange(num_graphs) < real)
    assert batch.num_steps == feedback.features.hints[0].data.shape[0]
    # The dense view is dm-clrs' layout again.
    for stage, probes in (('input', feedback.features.inputs),
                          ('output', feedback.outputs)):
        dense = data.to_dense(batch, stage)
        for dp in probes:
            np.testing.assert_array_equal(
                np.asarray(dense[dp.name][1])[:real],
                np.asarray(dp.data, np.float32)[rows])
    dense_hints = data.to_dense(batch, 'hint')
    for dp in feedback.features.hints:
        np.testing.assert_array_equal(
            np.asarray(dense_hints[dp.name][1])[:, :real],
            np.asarray(dp.data, np.float32)[:, rows])


def test_cache_round_trip_and_keying(tmp_path):
    key = data.DatasetKey('bfs', 'val', 5, 8, 11)
    generated = data.load_dataset(key, str(tmp_path))
    path = data.cache_path(key, str(tmp_path))
    assert os.path.exists(path)
    cached = data.load_dataset(key, str(tmp_path))
    assert dict(cached.spec) == dict(generated.spec)
    for stage in ('inputs', 'outputs', 'hints'):
        a, b = getattr(generated, stage), getattr(cached, stage)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(generated.lengths, cached.lengths)
    other = data.load_dataset(
        data.DatasetKey('bfs', 'val', 5, 8, 12), str(tmp_path))
    assert not np.array_equal(other.inputs['adj'], generated.inputs['adj'])


def test_protocol_keys():
    config = data.DataConfig(algorithm='naive_string_matcher')
    assert [k.size for k in config.train_keys()] == [20]
    assert config.val_key().count == 64 * 64
    test = config.test_key()
    assert (test.size, test.count, test.seed) == (64, 32 * 64, 3)
    sizes = [k.size for k in data.DataConfig('bfs').train_keys()]
    assert sizes == [4, 7, 11, 13, 16]
    assert len({k.seed for k in data.DataConfig('bfs').train_keys()}) == 5
    assert data.sampler_kwargs(test) == {}
    kwargs = data.sampler_kwargs(data.DataConfig('mst_kruskal').val_key())
    assert max(kwargs['p']) == pytest.approx(0.45)
    with pytest.raises(ValueError, match='split'):
        data.DatasetKey('bfs', 'dev', 8, 1, 0)
    with pytest.raises(ValueError, match='unknown CLRS-30 algorithm'):
        data.sample(data.DatasetKey('bfss', 'val', 8, 1, 0))
