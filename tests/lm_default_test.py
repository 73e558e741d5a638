"""The embedded default model: loads from the package in seconds and writes children."""

import ast
import os
import subprocess
import sys
import time

import jax

from evoprompting import corpus, prompts
from lm import checkpoints


def test_load_default_loads_fast_and_writes_programs():
    start = time.time()
    lm = checkpoints.load_default()
    assert time.time() - start < 30
    assert lm.stop_strings == (prompts.STOP,)
    seeds = dict(corpus.read_seeds('mnist1d'))
    parents = [prompts.Example(corpus.shown(seeds[name]), prompts.Metrics(n, 0.9))
               for name, n in (('greydanus_cnn', 5210), ('mlp', 15210))]
    prompt = prompts.few_shot_prompt(
        parents, prompts.target_metrics([p.metrics for p in parents]),
        corpus.OPENING)
    texts = lm.generate([prompt], num_samples=4, max_new_tokens=320,
                        temperatures=[0.2] * 4, rng=jax.random.key(0))[0]
    children = [prompts.child_source(corpus.OPENING, t) for t in texts]
    parsed = 0
    for child in children:
        assert prompts.METRICS_HEADER not in child
        try:
            ast.parse(child)
            parsed += 1
        except SyntaxError:
            pass
    assert parsed >= 2, children


def test_sample_binary_serves_the_default(tmp_path):
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('class Model(nn.Module):\n')
    out = subprocess.run(
        [sys.executable, '-m', 'lm.sample', '--checkpoint=default',
         f'--prompt_file={prompt}', '--num_samples=1', '--max_new_tokens=16'],
        capture_output=True, text=True, timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert '===== sample 0' in out.stdout
