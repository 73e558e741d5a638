"""Golden tests of the few-shot prompt (the paper's Listing 1 format)."""

import textwrap

import pytest

from evoprompting import prompts
from evoprompting.tasks import mnist1d

OPENING = 'class Model(nn.Module):'

GOLDEN = textwrap.dedent('''\
    """Metrics:
    {'num_params': '5210', 'val_accuracy': '0.912'}
    """
    class Model(nn.Module):
        features: int = 25

        @nn.compact
        def __call__(self, x):
            x = x[..., None]
            x = nn.Conv(features=self.features, kernel_size=(5,), strides=(2,), padding=1)(x)
            x = nn.relu(x)
            x = nn.Conv(features=self.features, kernel_size=(3,), strides=(2,), padding=1)(x)
            x = nn.relu(x)
            x = nn.Conv(features=self.features, kernel_size=(3,), strides=(2,), padding=1)(x)
            x = nn.relu(x)
            x = x.reshape((x.shape[0], -1))
            x = nn.Dense(features=10)(x)
            return x

    """Metrics:
    {'num_params': '15210', 'val_accuracy': '0.656'}
    """
    class Model(nn.Module):
        hidden: int = 100

        @nn.compact
        def __call__(self, x):
            x = nn.Dense(features=self.hidden)(x)
            x = nn.relu(x)
            x = x + nn.relu(nn.Dense(features=self.hidden)(x))
            x = nn.Dense(features=10)(x)
            return x

    """Metrics:
    {'num_params': '4700', 'val_accuracy': '0.930'}
    """
    class Model(nn.Module):''')


def seed_examples():
    task = mnist1d.Mnist1dTask()
    seeds = {s.name: s.source for s in task.seed_programs()}
    return [
        prompts.Example(prompts.prompt_code(seeds['greydanus_cnn'], task.preamble),
                        prompts.Metrics(5210, 0.912)),
        prompts.Example(prompts.prompt_code(seeds['mlp'], task.preamble),
                        prompts.Metrics(15210, 0.656)),
    ]


def test_golden_prompt():
    parents = seed_examples()
    target = prompts.target_metrics([p.metrics for p in parents])
    assert prompts.few_shot_prompt(parents, target, OPENING) == GOLDEN


def test_nearest_target_last_orders_by_size_ratio():
    example = lambda n: prompts.Example('x = 1\n', prompts.Metrics(n, 0.5))
    order = lambda sizes, target: [p.metrics.num_params for p in
                                   prompts.nearest_target_last(
                                       [example(n) for n in sizes],
                                       prompts.Metrics(target, 0.5))]
    assert order([100, 5000, 300], 90) == [5000, 300, 100]
    assert order([50, 200], 100) == [50, 200]  # Equally far: drawn order.
    assert order([200, 50], 100) == [200, 50]
    assert order([1000, 4000], 1900) == [4000, 1000]  # 2.1x against 1.9x.


@pytest.mark.parametrize('sizes, accuracies, expected', [
    ([5210, 15210], [0.912, 0.656], prompts.Metrics(4700, 0.930)),
    ([4800, 4800], [0.865, 0.865], prompts.Metrics(4300, 0.882)),
    ([120], [0.5], prompts.Metrics(100, 0.51)),      # Never below one unit.
    ([91082], [0.99], prompts.Metrics(82000, 1.0)),  # Accuracy capped at 1.
])
def test_target_metrics(sizes, accuracies, expected):
    parents = [prompts.Metrics(s, a) for s, a in zip(sizes, accuracies)]
    assert prompts.target_metrics(parents) == expected


def test_metrics_header_is_the_papers():
    assert prompts.Metrics(4800, 0.865).render() == (
        '"""Metrics:\n{\'num_params\': \'4800\', \'val_accuracy\': \'0.865\'}\n"""\n')


def test_child_source_stops_at_the_next_example():
    completion = ('\n    @nn.compact\n    def __call__(self, x):\n'
                  '        return nn.Dense(10)(x)\n\n"""Metrics:\n{...')
    child = prompts.child_source(OPENING, completion)
    assert child == ('class Model(nn.Module):\n    @nn.compact\n'
                     '    def __call__(self, x):\n        return nn.Dense(10)(x)\n')


def test_prompt_code_keeps_what_the_preamble_lacks():
    source = textwrap.dedent('''\
        """Docstring."""
        import functools
        import flax.linen as nn

        # A helper.
        dense = functools.partial(nn.Dense, use_bias=False)
    ''')
    code = prompts.prompt_code(source, mnist1d.PREAMBLE)
    assert code == ('import functools\n\n# A helper.\n'
                    'dense = functools.partial(nn.Dense, use_bias=False)\n')
    assert prompts.prompt_code('def (', mnist1d.PREAMBLE) == 'def ('
