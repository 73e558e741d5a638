"""gin/lm/hf.gin: a Hugging Face checkpoint as the search's LM, end to end.

The checkpoint is `tests/fixtures/hf/qwen2_line_writer` (make_fixtures.py
there): shaped like a hub Qwen2.5-Coder checkpoint, with weights set by hand
so that after the MNIST-1D prompt opening it writes one of 16 valid programs,
which lets a tiny search score children and tune the soft prompt on them.
"""

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evoprompting import crossmut, gin_utils
from evoprompting.tasks import mnist1d
from lm import checkpoints, hf_import, prompt_tuning

FIXTURE = os.path.join('tests', 'fixtures', 'hf', 'qwen2_line_writer')
FIXTURE_PATH = os.path.join(gin_utils.REPO_ROOT, FIXTURE)
_spec = importlib.util.spec_from_file_location(
    'make_fixtures', os.path.join(gin_utils.REPO_ROOT, 'tests', 'fixtures', 'hf',
                                  'make_fixtures.py'))
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)
# What the fixture writes, as the search records a child (preamble first).
PROGRAMS = {mnist1d.PREAMBLE + '\n\n' + p for p in make_fixtures.writer_programs()}


def run_main(*args):
    return subprocess.run(
        [sys.executable, '-m', 'evoprompting.main', '--gin_file=gin/mnist1d/quick.gin',
         '--gin_file=gin/lm/hf.gin', *args], cwd=gin_utils.REPO_ROOT,
        capture_output=True, text=True, timeout=600)


def test_hf_gin_serves_the_checkpoint_with_the_papers_tuning_and_no_copy_prior():
    gin_utils.parse(['gin/mnist1d/quick.gin', 'gin/lm/hf.gin'],
                    [f"HF_CHECKPOINT = '{FIXTURE_PATH}'"])
    # It replaces the default LM of the method file.
    assert str(gin.query_parameter('crossmut.CrossMut.lm')) == '%LM'
    assert str(gin.query_parameter('%LM')) == '@checkpoints.load_hf()'
    lm = gin_utils.call(checkpoints.load_hf)
    assert lm.copy_weight == 0.0
    assert lm.batch_size == 16 and lm.stop_strings == ('"""Metrics:',)
    assert lm.tuning == prompt_tuning.TuningConfig(
        num_epochs=5, batch_size=16, learning_rate=0.1, buckets=(1024, 2048, 4096))
    assert lm.config.max_len == 4096  # Not the checkpoint's 32768.
    assert lm.config.dtype == jnp.float32
    assert lm.params['embedding'].dtype == jnp.float32  # From BF16 safetensors.
    # The mesh: every local device that divides the batch, one model replica each.
    assert lm.mesh.axis_names == ('data', 'model')
    assert lm.mesh.shape['model'] == 1
    assert lm.mesh.devices.size == max(
        n for n in range(1, len(jax.local_devices()) + 1) if 16 % n == 0)
    # The paper's soft prompt: 16 tokens, tuned between rounds.
    config = gin.query_parameter('crossmut.CrossMut.config').scoped_configurable_fn()
    assert config.tune_prompt and config.soft_prompt_length == 16

    # The README's command (its device file changes nothing here).
    gin_utils.parse(['gin/mnist1d/quick.gin', 'gin/lm/hf.gin', 'gin/devices/gpu.gin'],
                    [f"HF_CHECKPOINT = '{FIXTURE_PATH}'", "HF_DTYPE = 'bfloat16'"])
    lm = gin_utils.call(checkpoints.load_hf)
    assert lm.config.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree.leaves(lm.params)} == {
        jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize('binding, words', [
    ([], ['no Hugging Face checkpoint folder given',
          '--gin_bindings="HF_CHECKPOINT=\'/path/to/folder\'"', 'hf download']),
    (["--gin_bindings=HF_CHECKPOINT='/no/such/folder'"],
     ['no Hugging Face checkpoint folder at /no/such/folder', 'hf download']),
    (["--gin_bindings=HF_CHECKPOINT='tests/fixtures'"],
     [f'missing {gin_utils.REPO_ROOT}/tests/fixtures/config.json', 'hf download']),
])
def test_a_missing_checkpoint_is_a_clear_error(tmp_path, binding, words):
    out = run_main(*binding, f'--workdir={tmp_path}')
    assert out.returncode != 0
    assert 'Traceback' not in out.stderr, out.stderr[-3000:]
    error = out.stderr[out.stderr.index('error: '):]
    for word in words:
        assert word in error, error


_MODEL_PARALLEL = textwrap.dedent('''
    import sys
    import jax, numpy as np
    from lm import checkpoints, prompt_tuning, serving
    assert len(jax.devices()) == 2, jax.devices()
    assert dict(serving.default_mesh(16).shape) == {'data': 2, 'model': 1}
    assert dict(serving.default_mesh(3).shape) == {'data': 1, 'model': 1}
    try:
        serving.default_mesh(16, model_parallelism=3)
        raise AssertionError('model_parallelism=3 of 2 devices was accepted')
    except ValueError as e:
        assert 'number of local devices (2)' in str(e), e
    tuning = prompt_tuning.TuningConfig(num_epochs=1, batch_size=4, buckets=(64,))
    lm = checkpoints.load_hf(sys.argv[1], model_parallelism=2, batch_size=4,
                             max_len=256, tuning=tuning)
    assert dict(lm.mesh.shape) == {'data': 1, 'model': 2}, lm.mesh.shape
    assert tuple(lm.params['layers']['mlp']['up_kernel'].sharding.spec) == (
        None, None, 'model')
    assert tuple(lm.params['lm_head'].sharding.spec) == (None, 'model')
    prompt = 'x = 1\\nclass Model(nn.Module):'
    texts = lm.generate([prompt], num_samples=4, max_new_tokens=12,
                        temperatures=[0.2, 0.6, 0.8, 1.0], rng=jax.random.key(0))
    soft = np.zeros((4, lm.config.embed_dim), np.float32)
    tuned, metrics = lm.tune(soft, [(prompt, texts[0][0])], jax.random.key(1))
    assert metrics['steps'] == 1 and np.abs(np.asarray(tuned)).max() > 0
    print('TEXTS', repr(texts[0]))
''')


def test_model_parallel_serving_and_tuning_in_subprocess():
    """HF_MODEL_PARALLELISM = 2: the checkpoint split over 2 forced host devices."""
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
               JAX_PLATFORMS='cpu')
    out = subprocess.run([sys.executable, '-c', _MODEL_PARALLEL,
                          FIXTURE_PATH], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    texts = ast.literal_eval(out.stdout.split('TEXTS ', 1)[1].strip())
    assert {(make_fixtures.OPENING + t).rstrip() + '\n' for t in texts} <= set(
        make_fixtures.writer_programs())


# The tiny search of tests/resume_test.py (2 rounds of 2 x 2 children, 16
# training steps), with the checkpoint. One parent a round, so that the soft
# prompt is tuned unless round 0's 4 children are one program (p = 1/4096);
# tuning examples padded to 512 tokens rather than hf.gin's 1024 (the
# fixture's prompts are ~450-600 tokens): half the compile time.
SEARCH = [f"--gin_bindings=HF_CHECKPOINT='{FIXTURE}'",
          '--gin_bindings=mnist1d.TrainConfig.num_steps = 16',
          '--gin_bindings=mnist1d.TrainConfig.eval_every = 8',
          '--gin_bindings=ROUNDS = 2', '--gin_bindings=PROMPTS = 2',
          '--gin_bindings=SAMPLES = 2', '--gin_bindings=PARENTS = 1',
          '--gin_bindings=MAX_NEW_TOKENS = 24',
          '--gin_bindings=search.SearchConfig.alpha = 0.9',
          '--gin_bindings=prompt_tuning.TuningConfig.buckets = (512, 1024)']


def test_a_search_with_a_hugging_face_checkpoint(tmp_path):
    workdir = tmp_path / 'run'
    out = run_main(*SEARCH, f'--workdir={workdir}')
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((workdir / 'state.json').read_text()) == {
        'completed_rounds': 2}
    config = (workdir / 'config.gin').read_text()
    assert "HF_CHECKPOINT = 'tests/fixtures/hf/qwen2_line_writer'" in config
    assert 'checkpoints.load_hf.copy_weight = 0.0' in config

    # The LM wrote every child (the fixture's programs: the copy prior, which
    # continues what the prompt shows, would not), and each was evaluated.
    log = [json.loads(line) for line in
           (workdir / 'candidates.jsonl').read_text().splitlines()]
    assert sorted(c['round'] for c in log) == [-1] * 4 + [0] * 4 + [1] * 4
    children = [c for c in log if c['round'] >= 0]
    assert all(c['source'] in PROGRAMS for c in children), children
    assert all(c['result']['status'] == 'ok' for c in children)
    scored = [c for c in children if c['duplicate_of'] is None]
    assert all(c['result']['params'] > 0 and 'val_accuracy' in c['result']['metrics']
               for c in scored)
    for t in (0, 1):
        shown = json.loads((workdir / 'prompts' / f'round_{t}.json').read_text())
        assert all(p['text'].endswith(mnist1d.PROMPT_OPENING) for p in shown)

    # The soft prompt was tuned after round 0 (not after the last round) on
    # the round's scored children but the next parent, and saved.
    assert 'Round 0: soft prompt tuned on ' in out.stderr
    assert 'prompt_tuning/examples=' in out.stderr
    saved = workdir / crossmut.SOFT_PROMPTS_DIR
    with checkpoints.CheckpointManager(str(saved)) as manager:
        assert manager.steps() == [0]
        soft_prompt = np.asarray(manager.restore(0)['soft_prompt'])
    _, params, vocab = hf_import.import_hf(FIXTURE_PATH)
    start = prompt_tuning.init_from_text(
        params['embedding'], vocab.encode(mnist1d.PREAMBLE), 16)
    assert soft_prompt.shape == start.shape == (16, 32)
    assert np.all(np.isfinite(soft_prompt))
    assert np.abs(soft_prompt - np.asarray(start)).max() > 1e-3
