"""CLRS-30 datasets from the dm-clrs samplers, batched as padded jraph.GraphsTuples.

Protocol (the Generalist-learner recipe of Ibarz et al. 2022, `clrs/examples/
run.py`; see ../shared/reference/clrs.md):

  * train: sizes 4, 7, 11, 13, 16 (string matchers: one size, 20); graph
    samplers draw p from {0.1, ..., 0.9} (halved for articulation_points,
    bridges, mst_kruskal, bipartite_matching); string matchers draw the needle
    length from 1..8; the `pos` input is randomized.
  * val: size 16 (string matchers 20), 64 x multiplier samples, as train.
  * test (out of distribution): the CLRS-30 benchmark split, regenerated
    exactly as dm-clrs' dataset builder does: size 64, 32 x multiplier
    samples, sampler seed 3, the samplers' default arguments, `pos` not
    randomized.
  * every split: static `pred_h` hints become a `pred` input for
    `PRED_AS_INPUT_ALGOS`, and sorting outputs become `permutation_pointer`
    plus a `<name>_mask` (`mask_one`), with dm-clrs' own preprocessing
    functions.

One deliberate difference: run.py trains on an infinite on-line sampler; we
train on a finite pool per size (`count` samples, generated once and cached),
because sampling in Python on a 2-core CPU costs as much as training.

A `Dataset` holds one (algorithm, split, size, count, seed) set as dm-clrs
returns it (features batch-major, hints time-major `[T, S, ...]` padded to the
longest trajectory, with `lengths`); it is cached as .npz under
`<cache>/clrs/`. `make_batch` turns rows of it into a `GraphBatch`: three
`jraph.GraphsTuple`s (inputs, outputs, hints) over the same graphs, each graph
complete with self-loops on exactly `num_nodes` nodes, padded with whole
all-zero graphs to a fixed graph count, with a graph mask and hint lengths
(0 for padding graphs). A bucket is (graphs per batch, nodes, hint steps):
every batch of one dataset has the same shapes, so a compiled step is reused.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from clrs_tasks._clrs_import import DM_CLRS_VERSION, clrs_modules
from evoprompting.paths import default_cache_dir

SPLITS = ('train', 'val', 'test')
TRAIN_SIZES = (4, 7, 11, 13, 16)
TEST_SIZE = 64
TEST_SEED = 3  # The CLRS-30 benchmark's test split (samplers.CLRS30['test']).
STRING_MATCHERS = ('naive_string_matcher', 'kmp_matcher')
LOW_P_ALGORITHMS = ('articulation_points', 'bridges', 'mst_kruskal',
                    'bipartite_matching')
PRED_AS_INPUT_ALGOS = (
    'binary_search', 'minimum', 'find_maximum_subarray',
    'find_maximum_subarray_kadane', 'matrix_chain_order', 'lcs_length',
    'optimal_bst', 'activity_selector', 'task_scheduling',
    'naive_string_matcher', 'kmp_matcher', 'jarvis_march')
LENGTH_NEEDLE = -8  # run.py's default: needle length random in 1..8.
# Bump when the protocol or the file layout changes, so stale caches are
# never read.
_PROTOCOL_VERSION = 2

# A spec maps a probe name to (stage, location, type), as dm-clrs' specs do.
Spec = Mapping[str, tuple[str, str, str]]


def algorithms() -> tuple[str, ...]:
    """The 30 CLRS-30 algorithm names."""
    return tuple(clrs_modules().specs.CLRS_30_ALGS)


def train_sizes(algorithm: str) -> tuple[int, ...]:
    """Training sizes: 4..16, or one size of 16 * 5 / 4 for string matchers."""
    if algorithm in STRING_MATCHERS:
        return (max(TRAIN_SIZES) * 5 // 4,)
    return TRAIN_SIZES


def val_size(algorithm: str) -> int:
    return max(train_sizes(algorithm))


def samples_multiplier(algorithm: str) -> int:
    """dm-clrs' `num_samples_multiplier` (more samples where signals are few)."""
    return clrs_modules().specs.CLRS_30_ALGS_SETTINGS[algorithm][
        'num_samples_multiplier']


def default_count(algorithm: str, split: str) -> int:
    """Samples of the val (64 x multiplier) and test (32 x multiplier) sets."""
    base = {'val': 64, 'test': 32}.get(split)
    if base is None:
        raise ValueError(f'no default sample count for split {split!r}')
    return base * samples_multiplier(algorithm)


@dataclasses.dataclass(frozen=True)
class DatasetKey:
    """Identifies one generated dataset; also its cache file name.

    Attributes:
      algorithm: a CLRS-30 algorithm name.
      split: 'train', 'val' or 'test' (decides the sampler arguments).
      size: number of nodes of every sample.
      count: number of samples.
      seed: the dm-clrs sampler seed (the `pos` randomization of train and val
        draws from a generator seeded with (seed, 1)).
    """

    algorithm: str
    split: str
    size: int
    count: int
    seed: int

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {self.split!r}')
        if self.size < 4 or self.count < 1:
            raise ValueError(f'need size >= 4 and count >= 1, got {self}')

    @property
    def file_name(self) -> str:
        return (f'{self.algorithm}-{self.split}-n{self.size}-c{self.count}'
                f'-s{self.seed}.npz')


def sampler_kwargs(key: DatasetKey) -> dict[str, Any]:
    """The extra sampler arguments of the protocol (none for the test split)."""
    if key.split == 'test':
        return {}
    p = tuple(0.1 + 0.1 * i for i in range(9))
    if key.algorithm in LOW_P_ALGORITHMS:
        p = tuple(np.array(p) / 2)
    wanted = {'p': p, 'length_needle': LENGTH_NEEDLE}
    sampler_class = clrs_modules().samplers.SAMPLERS[key.algorithm]
    accepted = inspect.signature(sampler_class._sample_data).parameters  # pylint: disable=protected-access
    return {k: v for k, v in wanted.items() if k in accepted}


def sample(key: DatasetKey) -> tuple[Any, dict[str, tuple[str, str, str]]]:
    """Runs the dm-clrs sampler and preprocessing for `key`.

    Returns:
      (feedback, spec): a `clrs.Feedback` holding all `key.count` samples
      (inputs and outputs [count, ...], hints [T, count, ...], lengths
      [count]) after the protocol's preprocessing, and the matching spec.
    """
    clrs = clrs_modules()
    if key.algorithm not in clrs.specs.CLRS_30_ALGS:
        raise ValueError(f'unknown CLRS-30 algorithm {key.algorithm!r}')
    sampler, spec = clrs.samplers.build_sampler(
        key.algorithm, num_samples=key.count, length=key.size, seed=key.seed,
        **sampler_kwargs(key))
    stream = iter([sampler.next()])
    if key.split != 'test':
        stream = clrs.samplers.process_random_pos(
            stream, np.random.default_rng((key.seed, 1)))
    if key.algorithm in PRED_AS_INPUT_ALGOS:
        spec, stream = clrs.samplers.process_pred_as_input(spec, stream)
    spec, stream = clrs.samplers.process_permutations(
        spec, stream, enforce_permutations=True)
    return next(stream), dict(spec)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One generated dataset, laid out as dm-clrs returns it (float32).

    Attributes:
      key: what was generated.
      spec: probe name -> (stage, location, type), after preprocessing.
      inputs, outputs: name -> [count, N] (node), [count, N, N] (edge) or
        [count] (graph) arrays, with a trailing class axis for categorical
        and mask_one probes. Pointers hold node indices.
      hints: name -> [T, count, ...], zero after each trajectory's end.
      lengths: int32 [count], the number of hint steps of each sample.
    """

    key: DatasetKey
    spec: Mapping[str, tuple[str, str, str]]
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    hints: Mapping[str, np.ndarray]
    lengths: np.ndarray

    @property
    def num_samples(self) -> int:
        return len(self.lengths)

    @property
    def num_nodes(self) -> int:
        return self.key.size

    @property
    def num_steps(self) -> int:
        """T: hint steps every batch of this dataset is padded to."""
        return next(iter(self.hints.values())).shape[0]

    @property
    def arrays(self) -> DatasetArrays:
        return DatasetArrays(inputs=dict(self.inputs),
                             outputs=dict(self.outputs),
                             hints=dict(self.hints), lengths=self.lengths)


@flax.struct.dataclass
class DatasetArrays:
    """The arrays of a `Dataset` as a pytree (to place them on devices)."""

    inputs: dict[str, Any]
    outputs: dict[str, Any]
    hints: dict[str, Any]
    lengths: Any


def _from_feedback(key: DatasetKey, feedback: Any, spec: Spec) -> Dataset:
    def arrays(probes):
        return {dp.name: np.asarray(dp.data, np.float32) for dp in probes}
    return Dataset(key=key, spec=spec, inputs=arrays(feedback.features.inputs),
                   outputs=arrays(feedback.outputs),
                   hints=arrays(feedback.features.hints),
                   lengths=np.asarray(feedback.features.lengths, np.int32))


def cache_path(key: DatasetKey, cache_dir: str = '') -> str:
    return os.path.join(cache_dir or default_cache_dir(), 'clrs',
                        f'dm-clrs-{DM_CLRS_VERSION}-p{_PROTOCOL_VERSION}',
                        key.algorithm, key.file_name)


def to_arrays(dataset: Dataset, prefix: str = '') -> dict[str, np.ndarray]:
    """`dataset` as flat named arrays (no pickle: the spec and key as JSON
    text), under `prefix`; `from_arrays` reads them back."""
    arrays = {f'{prefix}spec': np.array(json.dumps(dataset.spec, sort_keys=True)),
              f'{prefix}key': np.array(json.dumps(dataclasses.asdict(dataset.key))),
              f'{prefix}lengths': dataset.lengths}
    for stage, probes in (('input', dataset.inputs),
                          ('output', dataset.outputs),
                          ('hint', dataset.hints)):
        arrays.update({f'{prefix}{stage}/{k}': v for k, v in probes.items()})
    return arrays


def from_arrays(arrays: Mapping[str, np.ndarray], prefix: str = '') -> Dataset:
    """The dataset `to_arrays` wrote under `prefix`."""
    spec = {k: tuple(v) for k, v in json.loads(str(arrays[f'{prefix}spec'])).items()}
    stage = {'input': {}, 'output': {}, 'hint': {}}
    for name in arrays:
        if name.startswith(prefix):
            kind, _, probe = name[len(prefix):].partition('/')
            if kind in stage and probe:
                stage[kind][probe] = np.asarray(arrays[name])
    return Dataset(key=DatasetKey(**json.loads(str(arrays[f'{prefix}key']))),
                   spec=spec, inputs=stage['input'], outputs=stage['output'],
                   hints=stage['hint'],
                   lengths=np.asarray(arrays[f'{prefix}lengths']))


def redacted(dataset: Dataset) -> Dataset:
    """`dataset` without its answers, for evaluation by untrusted code:
    outputs zero, and hints zero after step 0 (the algorithm's initial
    state, which the model is fed at evaluation; later steps it predicts)."""
    return dataclasses.replace(
        dataset,
        outputs={k: np.zeros_like(v) for k, v in dataset.outputs.items()},
        hints={k: np.concatenate([v[:1], np.zeros_like(v[1:])])
               for k, v in dataset.hints.items()})


def load_dataset(key: DatasetKey, cache_dir: str = '') -> Dataset:
    """Generates the dataset of `key`, or reads it from the .npz cache.

    Writes are atomic (temp file + rename), so concurrent workers at worst
    generate the same file twice.
    """
    path = cache_path(key, cache_dir)
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            return from_arrays({k: f[k] for k in f.files})
    dataset = _from_feedback(key, *sample(key))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.{os.getpid()}.tmp.npz'
    np.savez(tmp, **to_arrays(dataset))
    os.replace(tmp, path)
    return dataset


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which datasets a CLRS task trains, validates and tests on.

    Attributes:
      algorithm: a CLRS-30 algorithm name.
      train_count: training samples per training size (a finite pool; see
        the module docstring).
      train_seed: training pools use sampler seeds derived from
        (train_seed, size).
      val_seed: sampler seed of the validation set.
      val_count, test_count: 0 means the protocol's default (64 and 32 times
        the algorithm's multiplier).
      test_size: nodes of the out-of-distribution test set.
      cache_dir: '' means `default_cache_dir()`.
    """

    algorithm: str = 'bfs'
    train_count: int = 1000
    train_seed: int = 1
    val_seed: int = 2
    val_count: int = 0
    test_count: int = 0
    test_size: int = TEST_SIZE
    cache_dir: str = ''

    def __post_init__(self):
        if self.algorithm not in algorithms():
            raise ValueError(
                f'unknown CLRS-30 algorithm {self.algorithm!r}; the algorithms '
                f'are {", ".join(sorted(algorithms()))}')

    def train_keys(self) -> tuple[DatasetKey, ...]:
        return tuple(
            DatasetKey(self.algorithm, 'train', size, self.train_count,
                       int(np.random.SeedSequence(
                           (self.train_seed, size)).generate_state(1)[0]))
            for size in train_sizes(self.algorithm))

    def val_key(self) -> DatasetKey:
        return DatasetKey(self.algorithm, 'val', val_size(self.algorithm),
                          self.val_count or default_count(self.algorithm, 'val'),
                          self.val_seed)

    def test_key(self) -> DatasetKey:
        return DatasetKey(self.algorithm, 'test', self.test_size,
                          self.test_count or default_count(self.algorithm,
                                                           'test'),
                          TEST_SEED)


@functools.lru_cache(maxsize=16)
def load_splits(config: DataConfig) -> tuple[tuple[Dataset, ...], Dataset,
                                              Dataset]:
    """(train pools by size, validation set, test set) of `config`."""
    return (tuple(load_dataset(k, config.cache_dir)
                  for k in config.train_keys()),
            load_dataset(config.val_key(), config.cache_dir),
            load_dataset(config.test_key(), config.cache_dir))


@flax.struct.dataclass
class GraphBatch:
    """A padded batch of G graphs of N nodes each (G - B of them padding).

    Every graph is complete with self-loops: edge e = g*N*N + i*N + j goes
    from node i (sender) to node j (receiver) of graph g; edge features are
    dm-clrs' [.., i, j] entries. Feature leaves are dicts by probe name.

    Attributes:
      inputs: node features [G*N, ...], edge features [G*N*N, ...], graph
        features [G, ...]; also holds `n_node`, `n_edge`, senders, receivers.
      outputs: the targets, laid out as `inputs` (senders/receivers None).
      hints: time-major: every feature leaf is [T, G*N | G*N*N | G, ...],
        step t being the graphs' hint at time t (senders/receivers None).
      lengths: int32 [G] hint steps of each graph; 0 for padding graphs.
      graph_mask: bool [G], False for padding graphs.
    """

    inputs: jraph.GraphsTuple
    outputs: jraph.GraphsTuple
    hints: jraph.GraphsTuple
    lengths: jax.Array
    graph_mask: jax.Array

    @property
    def num_graphs(self) -> int:
        return self.graph_mask.shape[0]

    @property
    def num_nodes(self) -> int:
        """N, the node count of every graph (static)."""
        return _isqrt(self.inputs.senders.shape[0] // self.num_graphs)

    @property
    def num_steps(self) -> int:
        leaves = jax.tree.leaves((self.hints.nodes, self.hints.edges,
                                  self.hints.globals))
        return leaves[0].shape[0]


def _locations(spec: Spec, stage: str) -> dict[str, str]:
    return {name: loc for name, (st, loc, _) in spec.items() if st == stage}


def make_batch(arrays: DatasetArrays, spec: Spec, indices: Any,
               num_graphs: int) -> GraphBatch:
    """Rows `indices` of a dataset as a `GraphBatch` of `num_graphs` graphs.

    Works on numpy arrays and under `jax.jit` (arrays on devices, `indices`
    traced); the result's shapes depend only on the dataset's shapes,
    `len(indices)` and `num_graphs`.

    Args:
      arrays: `Dataset.arrays`, numpy or jax.
      spec: the dataset's spec.
      indices: int [B] sample indices, B <= num_graphs.
      num_graphs: G; graphs B..G-1 are all-zero padding graphs.
    """
    indices = jnp.asarray(indices, jnp.int32)
    num_real = indices.shape[0]
    if num_real > num_graphs:
        raise ValueError(f'{num_real} samples do not fit {num_graphs} graphs')
    num_pad = num_graphs - num_real
    lengths = jnp.asarray(arrays.lengths)[indices]
    num_nodes = None

    def gather(x, axis):
        x = jnp.take(jnp.asarray(x), indices, axis=axis)
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, num_pad)
        return jnp.pad(x, pad)

    def features(probes, stage, axis):
        nonlocal num_nodes
        out = {'node': {}, 'edge': {}, 'graph': {}}
        for name, loc in _locations(spec, stage).items():
            x = gather(probes[name], axis)  # [(T,) G, ...]
            lead = x.shape[:axis + 1]
            if loc == 'node':
                num_nodes = x.shape[axis + 1]
                x = x.reshape(lead[:-1] + (-1,) + x.shape[axis + 2:])
            elif loc == 'edge':
                x = x.reshape(lead[:-1] + (-1,) + x.shape[axis + 3:])
            out[loc][name] = x
        return out

    inputs = features(arrays.inputs, 'input', 0)
    outputs = features(arrays.outputs, 'output', 0)
    hints = features(arrays.hints, 'hint', 1)
    if num_nodes is None:
        raise ValueError('the spec has no node-level probe to size the graphs')
    n = num_nodes
    edge = jnp.arange(num_graphs * n * n, dtype=jnp.int32)
    graph_of_edge, within = edge // (n * n), edge % (n * n)
    senders = graph_of_edge * n + within // n
    receivers = graph_of_edge * n + within % n
    n_node = jnp.full((num_graphs,), n, jnp.int32)
    n_edge = jnp.full((num_graphs,), n * n, jnp.int32)

    def graphs(f, with_structure):
        return jraph.GraphsTuple(
            nodes=f['node'], edges=f['edge'], globals=f['graph'],
            senders=senders if with_structure else None,
            receivers=receivers if with_structure else None,
            n_node=n_node, n_edge=n_edge)

    graph_mask = jnp.arange(num_graphs) < num_real
    return GraphBatch(
        inputs=graphs(inputs, True), outputs=graphs(outputs, False),
        hints=graphs(hints, False),
        lengths=jnp.where(graph_mask, jnp.pad(lengths, (0, num_pad)), 0),
        graph_mask=graph_mask)


def graph_axis_shardings(batch: GraphBatch, split: Callable[[int], Any]
                         ) -> GraphBatch:
    """A tree like `batch` giving each leaf `split(axis)`, `axis` being the
    leaf's graph axis: 1 for the time-major hint features, 0 for every other
    leaf (node, edge and graph features, senders, receivers, counts, lengths,
    mask). Graphs lie in consecutive blocks along that axis, so splitting it
    in equal parts gives each part whole graphs."""

    def graphs(g: jraph.GraphsTuple, feature_axis: int) -> jraph.GraphsTuple:
        along = lambda tree, axis: jax.tree.map(lambda _: split(axis), tree)
        return g._replace(
            nodes=along(g.nodes, feature_axis),
            edges=along(g.edges, feature_axis),
            globals=along(g.globals, feature_axis),
            senders=along(g.senders, 0), receivers=along(g.receivers, 0),
            n_node=along(g.n_node, 0), n_edge=along(g.n_edge, 0))

    return batch.replace(inputs=graphs(batch.inputs, 0),
                         outputs=graphs(batch.outputs, 0),
                         hints=graphs(batch.hints, 1),
                         lengths=split(0), graph_mask=split(0))


def _isqrt(x: int) -> int:
    root = int(round(x ** 0.5))
    if root * root != x:
        raise ValueError(f'{x} edges per graph is not a square')
    return root


def to_dense(batch: GraphBatch, stage: str) -> dict[str, tuple[str, jax.Array]]:
    """Features of one stage in dm-clrs' dense layout.

    Returns:
      name -> (location, array): inputs/outputs as [G, N, ...] (node),
      [G, N, N, ...] (edge), [G, ...] (graph); hints time-major
      [T, G, N, ...] etc.
    """
    graphs = {'input': batch.inputs, 'output': batch.outputs,
              'hint': batch.hints}[stage]
    g, n = batch.num_graphs, batch.num_nodes
    lead = 1 if stage == 'hint' else 0
    out = {}
    for loc, probes, shape in (('node', graphs.nodes, (g, n)),
                               ('edge', graphs.edges, (g, n, n)),
                               ('graph', graphs.globals, (g,))):
        for name, x in probes.items():
            out[name] = (loc, x.reshape(x.shape[:lead] + shape
                                        + x.shape[lead + 1:]))
    return out


def eval_batches(num_samples: int, batch_size: int) -> list[np.ndarray]:
    """Consecutive index blocks covering all samples (the last may be short)."""
    return [np.arange(s, min(s + batch_size, num_samples), dtype=np.int32)
            for s in range(0, num_samples, batch_size)]

