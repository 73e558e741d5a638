"""LanguageModel: text in, text out; bounded compilation; tuning through it."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from lm import checkpoints, partitioning, prompt_tuning, sampler, serving, testing
from lm import vocab as vocab_lib

TEXTS = ['class Model(nn.Module):\n    x = nn.Dense(10)(x)\n'] * 30


@pytest.fixture(scope='module')
def lm():
    vocab = vocab_lib.train_byte_level_bpe(TEXTS, vocab_size=288)
    config = testing.tiny_config(vocab_size=vocab.vocab_size)
    return serving.LanguageModel.create(
        config, testing.random_params(config, seed=0), vocab, batch_size=4,
        stop_strings=('"""Metrics',),
        tuning=prompt_tuning.TuningConfig(num_epochs=3, batch_size=4,
                                          buckets=(64,)))


def test_generate_shapes_and_greedy_determinism(lm):
    prompts = ['class Model', 'x = nn.Dense(']
    out = lm.generate(prompts, num_samples=3, max_new_tokens=8,
                      temperatures=[0.0, 0.0, 1.0], rng=jax.random.key(0))
    assert [len(samples) for samples in out] == [3, 3]
    assert all(isinstance(s, str) for samples in out for s in samples)
    # Greedy samples of one prompt agree, whatever batch they land in.
    assert out[0][0] == out[0][1] and out[1][0] == out[1][1]
    again = lm.generate(prompts, num_samples=3, max_new_tokens=8,
                        temperatures=[0.0, 0.0, 1.0], rng=jax.random.key(0))
    assert again == out
    with pytest.raises(ValueError, match='temperatures'):
        lm.generate(prompts, num_samples=2, max_new_tokens=4,
                    temperatures=[0.2], rng=jax.random.key(0))


def test_generate_compiles_once_per_bucket(lm):
    lm.generate(['abc'], num_samples=2, max_new_tokens=8, temperatures=[0.5, 1.0],
                rng=jax.random.key(1))
    compiled = sampler.sample._cache_size()  # pylint: disable=protected-access
    lm.generate(['class', 'nn.Dense(10)', 'x'], num_samples=2, max_new_tokens=8,
                temperatures=[0.2, 0.8], rng=jax.random.key(2))
    assert sampler.sample._cache_size() == compiled  # pylint: disable=protected-access


def test_logits_match_the_vocabulary(lm):
    ids = np.asarray([lm.vocab.encode('class Model')])
    logits = lm.logits(ids)
    assert logits.shape == (1, ids.shape[1], lm.config.vocab_size)
    assert logits.dtype == np.float32


def test_tune_through_the_served_model(lm):
    prompt = prompt_tuning.init_uniform(jax.random.key(0), 4, lm.config.embed_dim)
    pairs = [('class Model', '(nn.Module):')] * 8
    tuned, metrics = lm.tune(prompt, pairs, jax.random.key(1))
    assert metrics['steps'] == 3 * 2
    assert metrics['epoch_loss'][-1] < metrics['epoch_loss'][0]
    out = lm.generate(['class Model'], num_samples=1, max_new_tokens=6,
                      temperatures=[0.0], rng=jax.random.key(0), soft_prompt=tuned)
    assert len(out) == 1 and len(out[0]) == 1


FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'hf')


def test_load_hf_serves_a_checkpoint_with_parity():
    path = os.path.join(FIXTURES, 'qwen2_bias_tied')
    served = checkpoints.load_hf(path)
    expected = np.load(os.path.join(path, 'expected.npz'))
    got = served.logits(expected['input_ids'])
    assert np.max(np.abs(got - expected['logits'])) <= 1e-4
    out = served.generate(['hello'], num_samples=2, max_new_tokens=5,
                          temperatures=[0.0, 1.0], rng=jax.random.key(0))
    assert len(out[0]) == 2


def test_sample_cli(tmp_path):
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('def f(')
    out = subprocess.run(
        [sys.executable, '-m', 'lm.sample',
         f'--checkpoint={os.path.join(FIXTURES, "llama_gqa_untied")}',
         f'--prompt_file={prompt}', '--num_samples=2', '--max_new_tokens=4'],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('===== sample') == 2
    bad = subprocess.run([sys.executable, '-m', 'lm.sample', '--checkpoint=/nope',
                          f'--prompt_file={prompt}'],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and 'not found' in bad.stderr


_TWO_CPU_DEVICES = textwrap.dedent('''
    from lm import partitioning, serving, testing
    partitioning.set_cpu_device_count(2)
    import jax
    import numpy as np
    assert len(jax.devices()) == 2, jax.devices()
    assert [serving.default_mesh(b).size for b in (16, 4, 3, 1)] == [2, 2, 1, 1]
    lm = testing.tiny_language_model(batch_size=4)
    assert lm.mesh.size == 2
    one = lm.with_mesh(serving.default_mesh(1))
    assert one.mesh.size == 1
    # The batch split over two devices samples what one device samples.
    args = dict(num_samples=4, max_new_tokens=12,
                temperatures=[0.0, 0.5, 1.0, 1.0], rng=jax.random.key(3))
    prompts = ['class Model', 'nn.Dense(']
    assert lm.generate(prompts, **args) == one.generate(prompts, **args)
    ids = np.asarray([lm.vocab.encode('class Model(nn.Module)')] * 4)
    np.testing.assert_allclose(lm.logits(ids), one.logits(ids), atol=1e-5)
    try:
        partitioning.set_cpu_device_count(1)
    except RuntimeError as e:
        assert 'already initialised' in str(e), e
    else:
        raise AssertionError('no error once JAX is initialised')
    print('OK')
''')


def test_batch_split_over_two_cpu_devices_in_subprocess():
    result = subprocess.run([sys.executable, '-c', _TWO_CPU_DEVICES],
                            env=dict(os.environ, JAX_PLATFORMS='cpu'),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]


def test_cpu_device_count_must_not_be_negative():
    with pytest.raises(ValueError, match='>= 0'):
        partitioning.set_cpu_device_count(-1)
