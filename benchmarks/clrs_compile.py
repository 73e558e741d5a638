r"""Compile time of one CLRS evaluation, programs compiled serially or at once.

  python benchmarks/clrs_compile.py [--program=v1_standard] [--algorithm=bfs]
      [--threads=1,2] [--repeats=3] [--hidden_dim=128] [--cache_dir=DIR]

A CLRS evaluation compiles init, one training step per training size (five
for most algorithms) and a prediction for the validation and the test sets
(`evoprompting.tasks.compiling.Compiler`); on a CPU those compiles are most
of a short evaluation. This trains the program for one step per training
size (so every program compiles and runs) with each
`TrainConfig.compile_threads` setting (0: the default, one per two CPU
cores, at most 4), interleaved over `--repeats` rounds in this process with
the persistent compilation cache off, and prints the median `compile_s` of
each setting, its ratio to the first setting, and one SUMMARY line.
"""

from __future__ import annotations

import os
import statistics
import sys

from absl import app, flags

import machine  # pylint: disable=g-import-not-at-top  (benchmarks/machine.py)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

import seeds  # pylint: disable=g-import-not-at-top,wrong-import-position
from clrs_tasks import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from clrs_tasks import processors  # pylint: disable=g-import-not-at-top,wrong-import-position
from clrs_tasks import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from evoprompting.tasks import compiling  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('program', 'v1_standard',
                    'A triplet function of seeds/clrs or seeds/clrs/reference.')
flags.DEFINE_string('algorithm', 'bfs', 'A CLRS-30 algorithm.')
flags.DEFINE_list('threads', ['1', '2'],
                  'compile_threads settings to compare; the first is the '
                  'reference of the ratios.')
flags.DEFINE_integer('repeats', 3, 'Interleaved rounds.')
flags.DEFINE_integer('hidden_dim', 128, 'Model width.')
flags.DEFINE_integer('train_count', 64, 'Training samples per size (the '
                     'data only has to exist).')
flags.DEFINE_string('cache_dir', '', 'Dataset cache; default: the '
                    'project cache directory.')


def compile_seconds(fn, splits: train.Splits, threads: int) -> float:
    steps = len(splits.train)
    config = train.TrainConfig(num_steps=steps, eval_every=steps,
                               hidden_dim=FLAGS.hidden_dim,
                               compile_threads=threads)
    result = train.train_and_evaluate(fn, splits, config, max_params=10**8,
                                      seed=0)
    if not result.ok:
        sys.exit(f'error: {FLAGS.program} on {FLAGS.algorithm}: '
                 f'{result.status.value}: {result.message}')
    return result.compile_s


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    sources = {**dict(seeds.read_seeds('clrs')),
               **dict(seeds.read_seeds('clrs/reference'))}
    if FLAGS.program not in sources:
        sys.exit(f'error: unknown program {FLAGS.program!r}; known: '
                 f'{sorted(sources)}')
    try:
        threads = [int(t) for t in FLAGS.threads]
    except ValueError:
        sys.exit(f'error: --threads must be integers, got {FLAGS.threads}')
    jax.config.update('jax_enable_compilation_cache', False)
    train_pools, val, test = data.load_splits(data.DataConfig(
        algorithm=FLAGS.algorithm, train_count=FLAGS.train_count,
        cache_dir=FLAGS.cache_dir))
    splits = train.Splits(train=train_pools, val=val, test=test)
    fn = processors.trusted_triplet_fn(sources[FLAGS.program])
    seconds = {t: [] for t in threads}
    for r in range(FLAGS.repeats):
        order = threads if r % 2 == 0 else threads[::-1]
        for t in order:
            seconds[t].append(compile_seconds(fn, splits, t))
            print(f'round {r}: compile_threads={t}: '
                  f'{seconds[t][-1]:.1f} s', flush=True)
    device = f'{jax.devices()[0].device_kind} ({machine.describe()})'
    reference = statistics.median(seconds[threads[0]])
    print(f'\n{FLAGS.program} on {FLAGS.algorithm} ({len(train_pools)} '
          f'training sizes, hidden {FLAGS.hidden_dim}), {device}:')
    print('| compile_threads | compile s (median) | speed-up |')
    print('|---:|---:|---:|')
    parts = []
    for t in threads:
        median = statistics.median(seconds[t])
        label = f'0 (= {compiling.default_threads()})' if t == 0 else str(t)
        print(f'| {label} | {median:.1f} | {reference / median:.2f}x |')
        parts.append(f'threads {label}: {median:.1f} s '
                     f'({reference / median:.2f}x)')
    print(f'SUMMARY: {device}, {FLAGS.program}/{FLAGS.algorithm} compile, '
          f'median of {FLAGS.repeats}: ' + '; '.join(parts))


if __name__ == '__main__':
    app.run(main)
