r"""Pretraining tokens/s of the default LM's recipe, by how the batch is split,
and how full its packed rows are.

    python benchmarks/pretrain_speed.py [--devices=1,2] [--steps=8] \
        [--rounds=3] [--gin_file=gin/lm/pretrain_default.gin] \
        [--gin_bindings='SEQ_LEN = 2048'] [--corpus_dir=DIR --tokenizer=FILE]

Each setting runs `lm.pretrain.train_step` (the jitted step `python -m
lm.pretrain` runs, with the model, batch and optimizer of the gin file) on
random token rows in its own process (a CPU host is split into JAX devices
only at start-up), `--steps` timed steps after one warm-up step; settings
alternate, `--rounds` times, and the median counts. Tokens/s counts every
token of the `batch_size x (seq_len + 1)` rows. Ends with one SUMMARY line:
the speed of each setting and their ratio to the first.

With --corpus_dir (a corpus of `python -m evoprompting.corpus`) and
--tokenizer (a run's tokenizer.json), it also packs the corpus' training
documents as `lm.pretrain.pack` does (best-fit decreasing) and as they come
(each appended to the last row while it fits, the packing it replaced) and
prints the share of slots that hold tokens for each: real tokens per step
scale with it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

import machine  # pylint: disable=g-import-not-at-top  (benchmarks/machine.py)

FLAGS = flags.FLAGS
flags.DEFINE_list('devices', ['1', '2'], 'CPU device counts to compare.')
flags.DEFINE_integer('steps', 8, 'Timed steps per measurement.')
flags.DEFINE_integer('rounds', 3, 'Measurements per setting (interleaved).')
flags.DEFINE_string('gin_file', 'gin/lm/pretrain_default.gin',
                    'The pretraining recipe (model, batch, optimizer).')
flags.DEFINE_multi_string('gin_bindings', [], 'Bindings after the gin file.')
flags.DEFINE_string('corpus_dir', '', 'Also compare packings of this corpus.')
flags.DEFINE_string('tokenizer', '', '--corpus_dir: the tokenizer.json to use.')
flags.DEFINE_integer('child', 0, 'Internal: measure with this many devices.')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(num_devices: int) -> dict[str, float]:
    """Seconds per step of the recipe's train_step over `num_devices`."""
    from lm import partitioning  # pylint: disable=g-import-not-at-top
    partitioning.set_cpu_device_count(num_devices)
    import functools  # pylint: disable=g-import-not-at-top
    import gin  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from lm import model as model_lib  # pylint: disable=g-import-not-at-top
    from lm import pretrain  # pylint: disable=g-import-not-at-top

    gin.add_config_file_search_path(ROOT)
    gin.parse_config_files_and_bindings([os.path.join(ROOT, FLAGS.gin_file)],
                                        FLAGS.gin_bindings)
    bound = lambda fn, name: gin.query_parameter(f'{fn}.{name}')
    config = gin.get_configurable(model_lib.TransformerConfig)()
    optimizer_config = gin.get_configurable(pretrain.OptimizerConfig)()
    batch_size = bound('pretrain.train', 'batch_size')
    seq_len = config.max_len
    rng = np.random.default_rng(0)
    rows = (rng.integers(3, config.vocab_size, (256, seq_len + 1), dtype=np.int32),
            np.ones((256, seq_len + 1), np.int32))
    mesh = partitioning.make_mesh(num_devices)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    optimizer = pretrain.make_optimizer(optimizer_config, 1000)
    params = partitioning.strip_boxes(model_lib.init_params(config, jax.random.key(0)))
    state = jax.device_put(pretrain.TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32), params=params,
        opt_state=optimizer.init(params)), replicated)
    step = jax.jit(functools.partial(
        pretrain.train_step, model=model_lib.Transformer(config),
        optimizer=optimizer, batch_size=batch_size,
        batch_sharding=batch if num_devices > 1 else None), donate_argnums=0)
    rows = jax.device_put(rows, replicated)
    key = jax.random.key(1)
    state, metrics = step(state, rows, key)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        state, metrics = step(state, rows, key)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / FLAGS.steps
    return {'seconds_per_step': seconds,
            'tokens_per_s': batch_size * (seq_len + 1) / seconds}


def in_order_rows(lengths: list[int], width: int) -> int:
    """Rows of `width` when each piece is appended to the last row while it
    fits, else starts a new one."""
    rows, used = 0, width
    for n in lengths:
        if used + n > width:
            rows, used = rows + 1, 0
        used += n
    return rows


def packing(corpus_dir: str, tokenizer: str, seq_len: int) -> str:
    """The share of slots that hold tokens, best-fit decreasing vs in order."""
    from lm import pretrain  # pylint: disable=g-import-not-at-top
    from lm import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    vocab = vocab_lib.TokenizerVocabulary.from_file(
        tokenizer, eos_token='<eos>', pad_token='<pad>')
    documents = pretrain.read_documents(os.path.join(corpus_dir, 'train-*.txt'),
                                        '<|endoftext|>')
    width = seq_len + 1
    lengths = [len(p) for d in documents
               for ids in [vocab.encode(d) + [vocab.eos_id]]
               for p in (ids[i:i + width] for i in range(0, len(ids), width))]
    _, segments = pretrain.pack(documents, vocab, seq_len)
    best_fit = float((segments > 0).mean())
    in_order = sum(lengths) / (in_order_rows(lengths, width) * width)
    return (f'packing: {best_fit:.1%} of slots hold tokens best-fit decreasing, '
            f'{in_order:.1%} in order ({best_fit / in_order:.2f}x real tokens '
            'per step)')


def main(argv):
    del argv
    if FLAGS.child:
        print(json.dumps(measure(FLAGS.child)))
        return
    print(machine.describe())
    packed = ''
    if FLAGS.corpus_dir:
        if not FLAGS.tokenizer:
            raise app.UsageError('--corpus_dir needs --tokenizer')
        import gin  # pylint: disable=g-import-not-at-top
        gin.add_config_file_search_path(ROOT)
        gin.parse_config_files_and_bindings(
            [os.path.join(ROOT, FLAGS.gin_file)], FLAGS.gin_bindings)
        packed = packing(FLAGS.corpus_dir, FLAGS.tokenizer,
                         gin.query_parameter('%SEQ_LEN'))
        gin.clear_config()
        print(packed, flush=True)
    counts = [int(d) for d in FLAGS.devices]
    speeds: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(FLAGS.rounds):
        for n in counts:
            out = subprocess.run(
                [sys.executable, __file__, f'--child={n}', f'--steps={FLAGS.steps}',
                 f'--gin_file={FLAGS.gin_file}',
                 *[f'--gin_bindings={b}' for b in FLAGS.gin_bindings]],
                cwd=ROOT, check=True,
                capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            speeds[n].append(result['tokens_per_s'])
            print(f'round {r + 1}: {n} device(s): {result["tokens_per_s"]:.0f} '
                  f'tokens/s ({result["seconds_per_step"]:.2f} s/step)', flush=True)
    medians = {n: statistics.median(v) for n, v in speeds.items()}
    first = medians[counts[0]]
    print('SUMMARY pretraining tokens/s (median of %d): %s%s' % (
        FLAGS.rounds, ', '.join(f'{n} device(s) {m:.0f} ({m / first:.2f}x)'
                                for n, m in medians.items()),
        f'; {packed}' if packed else ''))


if __name__ == '__main__':
    app.run(main)
