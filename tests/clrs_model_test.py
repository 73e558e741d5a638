"""clrs_tasks model, seeds, metrics and training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seeds
from clrs_tasks import _clrs_import
from clrs_tasks import data
from clrs_tasks import metrics
from clrs_tasks import model
from clrs_tasks import processors
from clrs_tasks import train
from evoprompting.sandbox import validator
from evoprompting.tasks import compiling

SEEDS = dict(seeds.read_seeds('clrs'))
REFERENCE = dict(seeds.read_seeds('clrs/reference'))
KEYS = jax.random.split(jax.random.key(0), 2)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp('clrs_cache'))


def _dataset(cache, algorithm, size=6, count=4, split='val', seed=0):
    return data.load_dataset(
        data.DatasetKey(algorithm, split, size, count, seed), cache)


def _run_once(fn, *args):
    """`fn(*args)` compiled as training compiles init and evaluation."""
    with compiling.Compiler(threads=1) as compiler:
        return compiler.run('fn', jax.jit(fn), 'once', *args)


def _num_params(dataset, source, hidden_dim=128):
    m = model.EncodeProcessDecode(
        model.model_spec(dataset),
        triplet_fn=processors.trusted_triplet_fn(source), hidden_dim=hidden_dim)
    batch = data.make_batch(dataset.arrays, dataset.spec, np.arange(2), 2)
    variables = jax.eval_shape(
        lambda: m.init({'params': KEYS[0], 'noise': KEYS[1]}, batch,
                       train=False))
    return sum(x.size for x in jax.tree.leaves(variables))


def test_seed_files():
    assert sorted(SEEDS) == [
        'v1_standard', 'v2_mlp_output', 'v3_sum_aggregation', 'v4_mlp_nodes',
        'v5_mlp_edges', 'v6_mlp_graph', 'v7_linear_nodes_no_graph',
        'v8_no_triplets', 'v9_bilinear']
    assert sorted(REFERENCE) == ['concatrep', 'div2mean', 'maxmean',
                                 'quadnodeminmax', 'tanhexpandtriplets']
    for name, source in {**SEEDS, **REFERENCE}.items():
        assert validator.validate(source) is None, name


def test_model_sizes_match_the_papers_table_3(cache):
    """Whole-model parameter counts of EvoPrompting's Table 3 (hidden 128)."""
    bfs = _dataset(cache, 'bfs')
    programs = {**SEEDS, **REFERENCE}
    sizes = {name: _num_params(bfs, programs[name])
             for name in ('v1_standard', 'maxmean', 'concatrep', 'div2mean',
                          'tanhexpandtriplets')}
    assert sizes['v1_standard'] == 523_963  # BFS, Triplet-GMPNN.
    assert sizes['maxmean'] == 522_931  # BFS, MAXMEAN.
    assert sizes['concatrep'] - sizes['v1_standard'] == 44_056
    assert sizes['div2mean'] - sizes['v1_standard'] == -1_032
    assert sizes['tanhexpandtriplets'] == sizes['v1_standard']
    articulation = _dataset(cache, 'articulation_points')
    assert _num_params(articulation, SEEDS['v1_standard']) == 531_913
    assert _num_params(articulation, REFERENCE['quadnodeminmax']) == 497_969


def test_every_seed_builds_and_predicts_every_probe(cache):
    """Abstract init and forward pass of each seed (shapes, no compile)."""
    dataset = _dataset(cache, 'bfs')
    spec = model.model_spec(dataset)
    batch = data.make_batch(dataset.arrays, dataset.spec, np.arange(3), 4)
    steps = dataset.num_steps - 1
    for name, source in SEEDS.items():
        m = model.EncodeProcessDecode(
            spec, triplet_fn=processors.trusted_triplet_fn(source),
            hidden_dim=16)
        variables = jax.eval_shape(lambda m=m: m.init(
            {'params': KEYS[0], 'noise': KEYS[1]}, batch, train=False))
        outs, hints = jax.eval_shape(
            lambda v, m=m: m.apply(v, batch, train=False), variables)
        assert outs['pi'].shape == (4, 6, 6), name
        assert hints['pi_h'].shape == (steps, 4, 6, 6), name
        assert hints['reach_h'].shape == (steps, 4, 6), name


def test_padding_graphs_change_nothing(cache):
    dataset = _dataset(cache, 'insertion_sort', size=5, count=4)  # perms
    spec = model.model_spec(dataset)
    m = model.EncodeProcessDecode(
        spec, triplet_fn=processors.trusted_triplet_fn(SEEDS['v1_standard']),
        hidden_dim=16)
    rows = np.array([2, 0])
    small = data.make_batch(dataset.arrays, dataset.spec, rows, 2)
    padded = data.make_batch(dataset.arrays, dataset.spec, rows, 5)
    variables = _run_once(lambda b: m.init(
        {'params': KEYS[0], 'noise': KEYS[1]}, b, train=False), small)
    apply = lambda v, b: m.apply(v, b, train=False)
    out_small, hints_small = _run_once(apply, variables, small)
    out_padded, hints_padded = _run_once(apply, variables, padded)
    assert all(bool(jnp.all(jnp.isfinite(x)))
               for x in jax.tree.leaves((out_padded, hints_padded)))
    for name in out_small:
        np.testing.assert_allclose(out_padded[name][:2], out_small[name],
                                   rtol=1e-5, atol=1e-5)
    for name in hints_small:
        np.testing.assert_allclose(hints_padded[name][:, :2],
                                   hints_small[name], rtol=1e-5, atol=1e-5)
    loss = lambda b, o, h: train.loss_fn(spec, b, o, h)
    loss_small = _run_once(loss, small, out_small, hints_small)
    loss_padded = _run_once(loss, padded, out_padded, hints_padded)
    np.testing.assert_allclose(loss_padded, loss_small, rtol=1e-5)
    assert np.isfinite(loss_small) and loss_small > 0


def test_processor_factory(cache):
    dataset = _dataset(cache, 'bfs')
    spec = model.model_spec(dataset)
    batch = data.make_batch(dataset.arrays, dataset.spec, np.arange(2), 2)
    for kind in ('mpnn', 'pgn', 'gpgn', 'deepsets'):
        m = model.EncodeProcessDecode(spec, processor_kind=kind, hidden_dim=8)
        variables = jax.eval_shape(lambda m=m: m.init(
            {'params': KEYS[0], 'noise': KEYS[1]}, batch, train=False))
        assert 'triplet' not in str(jax.tree_util.tree_structure(variables))
    with pytest.raises(ValueError, match='unknown processor'):
        processors.make_processor('gat', 8)
    with pytest.raises(ValueError, match='needs a triplet_fn'):
        processors.make_processor('triplet_gmpnn', 8)


def test_edge_messages_of_the_wrong_shape_are_a_clear_error(cache):
    dataset = _dataset(cache, 'bfs')
    m = model.EncodeProcessDecode(
        model.model_spec(dataset),
        triplet_fn=lambda z, e, g, k, out: jnp.zeros(z.shape[:2] + (out,)),
        hidden_dim=8)
    batch = data.make_batch(dataset.arrays, dataset.spec, np.arange(2), 2)
    with pytest.raises(ValueError, match='edge messages of shape'):
        jax.eval_shape(lambda: m.init({'params': KEYS[0], 'noise': KEYS[1]},
                                      batch, train=False))


def _random_hard_predictions(spec, truth, rng):
    preds = {}
    for name, stage, _, typ, _ in spec:
        if stage != 'output':
            continue
        want = truth[name]
        if typ == 'mask':
            preds[name] = (rng.random(want.shape) < 0.5).astype(np.float32)
        elif typ in ('mask_one', 'categorical'):
            preds[name] = np.eye(want.shape[-1], dtype=np.float32)[
                rng.integers(0, want.shape[-1], want.shape[:-1])]
        elif typ == 'pointer':
            # Half right, half random.
            guess = rng.integers(0, want.shape[1], want.shape)
            preds[name] = np.where(rng.random(want.shape) < 0.5, want,
                                   guess).astype(np.float32)
        else:  # permutation_pointer: a random permutation matrix per row.
            perms = np.stack([np.eye(want.shape[-1])[rng.permutation(
                want.shape[-1])] for _ in range(want.shape[0])])
            preds[name] = perms.astype(np.float32)
    return preds


@pytest.mark.parametrize('algorithm,size', [
    ('bfs', 6), ('insertion_sort', 6), ('articulation_points', 8),
    ('lcs_length', 8), ('minimum', 6), ('segments_intersect', 4),
    ('find_maximum_subarray_kadane', 6)])
def test_scores_agree_with_clrs_evaluate(cache, algorithm, size):
    clrs = _clrs_import.clrs_modules()
    dataset = _dataset(cache, algorithm, size=size, count=24, split='train')
    spec = model.model_spec(dataset)
    preds = _random_hard_predictions(spec, dataset.outputs,
                                     np.random.default_rng(0))
    ours = metrics.score(spec, dataset.outputs, preds)

    def points(arrays):
        return {name: clrs.probing.DataPoint(
            name=name, location=dataset.spec[name][1],
            type_=dataset.spec[name][2], data=arrays[name])
            for name in arrays}
    reference = clrs.evaluation.evaluate(
        tuple(points(dataset.outputs).values()), points(preds))
    assert ours.keys() == reference.keys()
    for name, value in reference.items():
        assert ours[name] == pytest.approx(float(value), abs=1e-6), name
    assert 0.0 < ours['score'] < 1.0


def test_postprocess_then_score_of_the_truth_is_perfect(cache):
    dataset = _dataset(cache, 'insertion_sort', size=6, count=8)
    spec = model.model_spec(dataset)
    # Logits that peak at the truth (a permutation matrix and its mask).
    logits = {name: x * 20.0 - 10.0 for name, x in dataset.outputs.items()}
    hard = metrics.postprocess(spec, logits)
    assert metrics.score(spec, dataset.outputs,
                         jax.device_get(hard))['score'] == 1.0


@pytest.mark.slow
def test_training_does_not_depend_on_compile_threads(cache):
    """Two training sizes, programs compiled one at a time or all at once."""
    splits = train.Splits(
        train=[_dataset(cache, 'bfs', size=n, count=8, split='train', seed=n)
               for n in (4, 5)],
        val=_dataset(cache, 'bfs', size=5, count=4, seed=2),
        test=_dataset(cache, 'bfs', size=6, count=4, split='test', seed=3))

    def run(threads):
        config = train.TrainConfig(num_steps=3, eval_every=2, batch_size=4,
                                   eval_batch_size=4, hidden_dim=8,
                                   compile_threads=threads)
        return train.train_and_evaluate(
            processors.trusted_triplet_fn(SEEDS['v1_standard']), splits,
            config, max_params=10**6, seed=0)

    serial, parallel = run(1), run(0)
    assert serial.ok and serial.compile_s > 0 and serial.train_s > 0
    assert parallel.metrics == serial.metrics
    assert parallel.params == serial.params
    with pytest.raises(ValueError, match='compile_threads'):
        train.TrainConfig(compile_threads=-1)


@pytest.mark.slow
def test_short_training_run(cache):
    """A few steps on two small sizes end to end: typed result, finite scores."""
    splits = train.Splits(
        train=[_dataset(cache, 'bfs', size=5, count=16, split='train', seed=1)],
        val=_dataset(cache, 'bfs', size=5, count=8, seed=2),
        test=_dataset(cache, 'bfs', size=7, count=8, split='test', seed=3))
    config = train.TrainConfig(num_steps=4, eval_every=2, batch_size=8,
                               eval_batch_size=6, hidden_dim=8)
    result = train.train_and_evaluate(
        processors.trusted_triplet_fn(SEEDS['v1_standard']), splits, config,
        max_params=10**6, seed=0)
    assert result.ok and result.params > 0
    assert 0 <= result.metrics['val_score'] <= 1
    assert 0 <= result.metrics['test_score'] <= 1
    assert result.metrics['best_step'] in (2, 4)
    with pytest.raises(Exception, match='exceed the cap'):
        train.train_and_evaluate(
            processors.trusted_triplet_fn(SEEDS['v1_standard']), splits,
            config, max_params=100, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize('seed_name', sorted(SEEDS))
def test_every_seed_trains_on_bfs_and_beats_an_untrained_model(cache, seed_name):
    splits = train.Splits(
        train=[_dataset(cache, 'bfs', size=n, count=200, split='train',
                        seed=10 + n) for n in (5, 8)],
        val=_dataset(cache, 'bfs', size=8, count=32, seed=2),
        test=_dataset(cache, 'bfs', size=12, count=32, split='test', seed=3))
    fn = processors.trusted_triplet_fn(SEEDS[seed_name])

    def run(steps):
        config = train.TrainConfig(num_steps=steps, eval_every=steps,
                                   batch_size=16, hidden_dim=32)
        return train.train_and_evaluate(fn, splits, config,
                                        max_params=10**7, seed=0)
    untrained, trained = run(1), run(300)
    assert trained.metrics['val_score'] > untrained.metrics['val_score'] + 0.3
    assert trained.metrics['test_score'] > untrained.metrics['test_score'] + 0.3
    assert trained.metrics['test_score'] > 0.9
