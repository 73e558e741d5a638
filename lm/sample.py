r"""Prints samples from a language model.

  python -m lm.sample --checkpoint=PATH --prompt_file=F [--num_samples=4] \
      [--temperature=0.8] [--max_new_tokens=256] [--seed=0]

PATH is a Hugging Face checkpoint folder (config.json, *.safetensors,
tokenizer.json) of the Llama/Qwen2 family. The embedded default model comes
with the pretraining work (issue 4) and is not available yet.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
import jax

from lm import checkpoints

FLAGS = flags.FLAGS
flags.DEFINE_string('checkpoint', None, 'Hugging Face checkpoint folder.')
flags.DEFINE_string('prompt_file', None, 'File whose whole text is the prompt.')
flags.DEFINE_integer('num_samples', 4, 'Samples to draw.')
flags.DEFINE_float('temperature', 0.8, 'Sampling temperature; 0 = greedy.')
flags.DEFINE_integer('max_new_tokens', 256, 'Tokens per sample at most.')
flags.DEFINE_integer('seed', 0, 'PRNG seed.')
flags.mark_flags_as_required(['checkpoint', 'prompt_file'])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    for flag in ('checkpoint', 'prompt_file'):
        if not os.path.exists(getattr(FLAGS, flag)):
            sys.exit(f'error: --{flag} not found: {getattr(FLAGS, flag)}')
    with open(FLAGS.prompt_file, encoding='utf-8') as f:
        prompt = f.read()
    try:
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
