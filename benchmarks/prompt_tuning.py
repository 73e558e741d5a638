r"""Soft-prompt tuning speed (`lm.prompt_tuning.tune`) at the paper's settings.

  python benchmarks/prompt_tuning.py [--num_examples=16] [--num_epochs=5]
      [--prompt_tokens=600] [--target_tokens=200] [--repeats=3]
      [--torch_python=PATH|none] [--checkpoint=HF_FOLDER] [--dtype=float32]
      [--cpu_devices=0] [--json_out=PATH]

The model is the one of benchmarks/lm_decode.py (benchmarks/lm_bench_model.py:
a random 6.5M-parameter Llama made by transformers and imported with
`lm.checkpoints.load_hf`, random JAX weights without torch, or any Hugging
Face folder given as `--checkpoint`). The examples are shaped like
EvoPrompting's: a few-shot prompt of about `--prompt_tokens` tokens and a
child program of about `--target_tokens` (each drawn uniformly within +-10%;
random token ids: speed does not depend on them), so a batch is padded to
the 1,024-token bucket. Tuning runs at the paper's settings (EvoPrompting
section 3.3, `lm.prompt_tuning.TuningConfig` defaults): soft prompt of 16
vectors, batch 16, learning rate 0.1, `--num_epochs` epochs, the call that
`lm.serving.LanguageModel.tune` makes, on the served model's mesh.

`compile s` is the ahead-of-time compilation of the train step
(`train_step.lower(...).compile()`) for the examples' bucket. Then an untimed
one-step tuning run compiles and warms up the jitted step, and `--repeats`
timed runs of the full tuning follow (no compilation: checked);
`examples/s` = num_examples x num_epochs / wall time, median over runs (it
does not depend on the number of epochs). The last line is one SUMMARY line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import lm_bench_model  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch_subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position

from lm import partitioning, prompt_tuning  # pylint: disable=g-import-not-at-top,wrong-import-position

SOFT_PROMPT_LENGTH = 16  # The paper's.

FLAGS = flags.FLAGS
flags.DEFINE_integer('num_examples', 16, 'Tuning examples per run.')
flags.DEFINE_integer('num_epochs', 5, 'Epochs per run (paper: 5).')
flags.DEFINE_integer('prompt_tokens', 600, 'Mean few-shot prompt length.')
flags.DEFINE_integer('target_tokens', 200, 'Mean target (child) length.')
flags.DEFINE_integer('repeats', 3, 'Timed runs (median reported).')
flags.DEFINE_integer('cpu_devices', 0, 'On CPU, JAX devices the host is split '
                     'into (0: one per core); the model is served on '
                     '`serving.default_mesh` of them, as `LanguageModel` is.',
                     lower_bound=0)
flags.DEFINE_string(
    'torch_python', '',
    "Interpreter with torch and transformers, to make the weights. '' uses "
    "this interpreter if it has them, else random JAX weights; 'none' skips.")
flags.DEFINE_string('checkpoint', '', 'Serve this Hugging Face folder instead '
                    'of a new random Llama.')
flags.DEFINE_enum('dtype', 'float32', list(lm_bench_model.DTYPES),
                  'Served dtype.')
flags.DEFINE_integer('seed', 0, 'Seed of the weights, examples and tuning.')
flags.DEFINE_string('json_out', '', 'Also write every measurement here.')


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_examples(num: int, vocab_size: int, seed: int) -> list[prompt_tuning.Example]:
    rng = np.random.default_rng(seed)
    draw = lambda mean: int(rng.integers(round(0.9 * mean), round(1.1 * mean) + 1))
    ids = lambda n: tuple(int(t) for t in rng.integers(3, vocab_size, n))
    return [prompt_tuning.Example(prompt=ids(draw(FLAGS.prompt_tokens)),
                                  target=ids(draw(FLAGS.target_tokens)))
            for _ in range(num)]


def compile_seconds(served, examples, config) -> float:
    """Wall time of compiling `train_step` for the first batch of `examples`."""
    soft_prompt = jnp.zeros((SOFT_PROMPT_LENGTH, served.config.embed_dim))
    batch = prompt_tuning.make_batch(examples[:config.batch_size],
                                     config.batch_size, config.buckets,
                                     served.vocab.pad_id)
    with partitioning.activate(served.mesh, served.rules):
        start = time.perf_counter()
        prompt_tuning.train_step.lower(
            soft_prompt, optax.adam(config.learning_rate).init(soft_prompt),
            served.params, batch, config=served.config,
            learning_rate=config.learning_rate).compile()
        return time.perf_counter() - start


def tune(served, examples, config, seed: int) -> tuple[float, dict]:
    """(wall seconds, metrics) of one tuning run from a fresh soft prompt."""
    soft_prompt = prompt_tuning.init_uniform(
        jax.random.key(seed), SOFT_PROMPT_LENGTH, served.config.embed_dim)
    with partitioning.activate(served.mesh, served.rules):
        start = time.perf_counter()
        soft_prompt, metrics = prompt_tuning.tune(
            soft_prompt, served.params, examples, model_config=served.config,
            config=config, pad_id=served.vocab.pad_id,
            rng=jax.random.key(seed + 1))
        jax.block_until_ready(soft_prompt)
        return time.perf_counter() - start, metrics


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    partitioning.set_cpu_device_count(FLAGS.cpu_devices)
    torch_python, torch_note = torch_subprocess.find_torch_python(
        FLAGS.torch_python, ('torch', 'transformers', 'numpy'))
    device = f'{len(jax.devices())} x {jax.devices()[0].device_kind}'
    log(f'jax {jax.__version__} on {jax.default_backend()} ({device}), '
        f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; '
        f'weights by transformers: {torch_python or torch_note}')
    workdir = tempfile.mkdtemp(prefix='prompt-tuning-')
    try:
        served, _, how = lm_bench_model.prepare(
            checkpoint=FLAGS.checkpoint, torch_python=torch_python,
            workdir=workdir, dtype=lm_bench_model.DTYPES[FLAGS.dtype],
            seed=FLAGS.seed)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log(f'model: {how}')
    config = prompt_tuning.TuningConfig(num_epochs=FLAGS.num_epochs)
    examples = make_examples(FLAGS.num_examples, served.config.vocab_size,
                             FLAGS.seed)
    lengths = [len(e.prompt) + len(e.target) for e in examples]

    compile_s = compile_seconds(served, examples, config)
    first_s, _ = tune(served, examples[:config.batch_size],
                      dataclasses.replace(config, num_epochs=1), FLAGS.seed)
    log(f'compile {compile_s:.1f} s; warm-up step (compile + run) {first_s:.1f} s')
    compiled = prompt_tuning.train_step._cache_size()  # pylint: disable=protected-access
    walls, losses, steps = [], [], 0
    for rep in range(FLAGS.repeats):
        seconds, metrics = tune(served, examples, config, FLAGS.seed + 2 * rep)
        walls.append(seconds)
        losses = metrics['epoch_loss']
        steps = metrics['steps']
        log(f'  run {rep + 1}/{FLAGS.repeats}: {seconds:.1f} s, '
            f'{len(examples) * config.num_epochs / seconds:.2f} examples/s, '
            f'epoch loss {losses[0]:.3f} -> {losses[-1]:.3f}, load '
            f'{os.getloadavg()[0]:.2f}')
    recompiles = prompt_tuning.train_step._cache_size() - compiled  # pylint: disable=protected-access
    rates = [len(examples) * config.num_epochs / w for w in walls]
    rate = statistics.median(rates)
    step_time = statistics.median(walls) / steps

    print(f'{how}; {FLAGS.dtype}, {device}')
    print('| examples x epochs | tokens/example (min-max) | batch | soft prompt | '
          'steps | compile s | s/step | examples/s | tokens/s |')
    print('|---|---|---|---|---|---|---|---|---|')
    print(f'| {len(examples)} x {config.num_epochs} | {min(lengths)}-{max(lengths)} '
          f'| {config.batch_size} | {SOFT_PROMPT_LENGTH} | {steps} | '
          f'{compile_s:.1f} | {step_time:.2f} | {rate:.2f} | '
          f'{rate * statistics.mean(lengths):,.0f} |')
    if FLAGS.json_out:
        with open(FLAGS.json_out, 'w', encoding='utf-8') as f:
            json.dump({'examples_per_s': rates, 'walls_s': walls,
                       'compile_s': compile_s, 'steps': steps,
                       'recompiles': recompiles, 'epoch_loss': losses}, f, indent=1)
    print(f'SUMMARY: {device}: soft-prompt tuning {rate:.2f} examples/s '
          f'({step_time:.2f} s per step of {config.batch_size} examples of '
          f'~{FLAGS.prompt_tokens}+{FLAGS.target_tokens} tokens, median of '
          f'{FLAGS.repeats}); compile {compile_s:.1f} s'
          + (f'; {recompiles} RECOMPILES' if recompiles else ''), flush=True)


if __name__ == '__main__':
    app.run(main)
