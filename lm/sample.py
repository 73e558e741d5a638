r"""Prints samples from a language model.

  python -m lm.sample --checkpoint=PATH --prompt_file=F [--num_samples=4] \
      [--temperature=0.8] [--max_new_tokens=256] [--seed=0]

PATH is `default` (the embedded default model, `lm.checkpoints.load_default`),
a folder exported by `python -m lm.pretrain` (config.json,
params.safetensors, tokenizer.json), or a Hugging Face checkpoint folder
(config.json, *.safetensors, tokenizer.json) of the Llama/Qwen2 family.
Samples are cut at the model's stored stop strings (the default model's:
the start of another metrics header).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
import jax

from lm import checkpoints, partitioning

FLAGS = flags.FLAGS
flags.DEFINE_string('checkpoint', None, "'default', an lm.pretrain export "
                    'folder or a Hugging Face checkpoint folder.')
flags.DEFINE_string('prompt_file', None, 'File whose whole text is the prompt.')
flags.DEFINE_integer('num_samples', 4, 'Samples to draw.')
flags.DEFINE_float('temperature', 0.8, 'Sampling temperature; 0 = greedy.')
flags.DEFINE_integer('max_new_tokens', 256, 'Tokens per sample at most.')
flags.DEFINE_integer('seed', 0, 'PRNG seed.')
flags.DEFINE_integer('cpu_devices', 0, 'On a CPU-only machine, JAX devices the '
                     'host CPU is split into (0: one per core); the samples '
                     'are sharded over them.',
                     lower_bound=0)
flags.mark_flags_as_required(['checkpoint', 'prompt_file'])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    partitioning.set_cpu_device_count(FLAGS.cpu_devices)
    flags_to_check = ['prompt_file'] + (['checkpoint'] if FLAGS.checkpoint != 'default'
                                        else [])
    for flag in flags_to_check:
        if not os.path.exists(getattr(FLAGS, flag)):
            sys.exit(f'error: --{flag} not found: {getattr(FLAGS, flag)}')
    with open(FLAGS.prompt_file, encoding='utf-8') as f:
        prompt = f.read()
    try:
        if FLAGS.checkpoint == 'default':
            lm = checkpoints.load_default()
        elif os.path.isfile(os.path.join(FLAGS.checkpoint, 'params.safetensors')):
            lm = checkpoints.load_exported(FLAGS.checkpoint)
        else:
            lm = checkpoints.load_hf(FLAGS.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    samples = lm.generate([prompt], num_samples=FLAGS.num_samples,
                          max_new_tokens=FLAGS.max_new_tokens,
                          temperatures=[FLAGS.temperature] * FLAGS.num_samples,
                          rng=jax.random.key(FLAGS.seed))[0]
    for i, text in enumerate(samples):
        print(f'===== sample {i} (temperature {FLAGS.temperature}) =====')
        print(text)


if __name__ == '__main__':
    app.run(main)
