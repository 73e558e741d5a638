"""Training a classifier program: batches, train/eval modes, the paper budget.

These tests run trusted programs in-process (the sandbox tests cover the
worker path).
"""

import textwrap

import numpy as np
import pytest

from evoprompting.sandbox import evaluator
from evoprompting.tasks import base, classifier_training, mnist1d


def splits():
    return mnist1d.load_splits(mnist1d.DataConfig())


def program(source: str):
    namespace = {}
    exec(mnist1d.PREAMBLE + textwrap.dedent(source), namespace)  # Trusted test code.
    return namespace['Model']


def train(model_cls, num_steps=40, seed=0, max_params=10**6, **kwargs):
    config = mnist1d.TrainConfig(num_steps=num_steps, eval_every=20, **kwargs)
    return classifier_training.train_and_evaluate(
        model_cls, splits(), config, max_params=max_params, seed=seed,
        num_classes=10)


def test_train_keyword_dropout_and_batch_norm():
    model_cls = program('''
        class Model(nn.Module):
            @nn.compact
            def __call__(self, x, train: bool = False):
                x = nn.Dense(32)(x)
                x = nn.BatchNorm(use_running_average=not train)(x)
                x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x))
                return nn.Dense(10)(x)
    ''')
    result = train(model_cls)
    assert result.status == base.Status.OK
    assert result.params == 40 * 32 + 32 + 2 * 32 + 32 * 10 + 10
    assert result.metrics['val_accuracy'] > 0.2  # Chance is 0.1.


def test_in_process_training_is_deterministic():
    seeds = {s.name: s.source for s in mnist1d.Mnist1dTask().seed_programs()}
    model_cls = program(seeds['mlp'])
    first, again = train(model_cls, seed=5), train(model_cls, seed=5)
    assert first.metrics == again.metrics


def test_non_finite_logits_at_evaluation_are_nan():
    """Finite training loss, NaN/inf logits only on the evaluation batch
    (another batch size): argmax would score them; the status is nan."""
    model_cls = program('''
        class Model(nn.Module):
            @nn.compact
            def __call__(self, x):
                logits = nn.Dense(10)(x)
                # Not jnp.where: its untaken branch makes the gradient NaN.
                return logits if x.shape[0] == 128 else logits / 0.0
    ''')
    with pytest.raises(base.ProgramFailure) as info:
        train(model_cls, num_steps=20)
    assert info.value.status == base.Status.NAN
    assert info.value.message == ('non-finite logits at step 20 on the '
                                  'validation inputs')


def test_one_non_finite_logit_is_nan():
    """A single non-finite logit, for the last example of each evaluation
    batch (of 500: the validation set, and the test set in two), is enough."""
    model_cls = program('''
        class Model(nn.Module):
            @nn.compact
            def __call__(self, x):
                logits = nn.Dense(10)(x)
                if x.shape[0] == 128:
                    return logits
                bad = (jnp.arange(x.shape[0]) == x.shape[0] - 1)[:, None]
                return jnp.where(bad & (jnp.arange(10) == 3), jnp.inf, logits)
    ''')
    with pytest.raises(base.ProgramFailure,
                       match='step 20 on the validation inputs') as info:
        train(model_cls, num_steps=20)
    assert info.value.status == base.Status.NAN


@pytest.mark.slow  # 30 s: the paper's 8,000 steps, three times.
def test_greydanus_cnn_at_the_paper_budget():
    """Acceptance: the paper's 8,000 steps give >= 0.90 test accuracy.

    Averaged over three training seeds: on this split (3,500 training
    examples), single seeds land within about +-0.01 of 0.90 with JAX and with
    an equivalent PyTorch loop alike (seed 0: 0.894 JAX, 0.898 torch).
    """
    # The paper's budget is the default; the published dataset, as the
    # figures above.
    task = mnist1d.Mnist1dTask(data=mnist1d.DataConfig(generator_seed=42))
    assert task.train.num_steps == 8000
    seed = {s.name: s for s in task.seed_programs()}['greydanus_cnn']
    with evaluator.Sandbox(task) as sandbox:
        results = sandbox.evaluate([seed.source] * 3, [0, 1, 2])
    for result in results:
        assert result.status == base.Status.OK, result.message
        assert result.params == 5210
        assert result.metrics['test_accuracy'] >= 0.88, result.metrics
    mean = np.mean([r.metrics['test_accuracy'] for r in results])
    assert mean >= 0.90, [r.metrics for r in results]
