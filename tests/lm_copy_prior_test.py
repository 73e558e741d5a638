"""The copy prior as served: the default LM's children reuse their parents."""

import dataclasses

import jax
import numpy as np

from evoprompting import corpus, mutation, prompts
from lm import checkpoints


def test_default_lm_with_its_copy_prior_reuses_parent_only_layers():
    lm = checkpoints.load_default()
    assert lm.copy_weight > 0  # The shipped serving options turn it on.
    rng = np.random.default_rng(2_000_003)  # Parents apart from the corpus'.
    # Rerolled seeds in the plain style: the programs of the shipped model's
    # corpus (evoprompting.architectures and other styles came later).
    seeds = [source for _, source in corpus.read_seeds('mnist1d')]
    rerolled = corpus.TaskPrograms(
        'mnist1d', corpus.OPENING, lambda rng: corpus.shown(mutation.reroll(
            seeds[rng.integers(len(seeds))], rng)), corpus.build)
    parents = [corpus.random_parent(rng, rerolled) for _ in range(2)]
    seed_layers = set().union(*(corpus.layer_calls(corpus.shown(source))
                                for _, source in corpus.read_seeds('mnist1d')))
    own = set().union(*(corpus.layer_calls(p.code) for p in parents)) - seed_layers
    assert own
    examples = [prompts.Example(p.code, prompts.Metrics(p.num_params, 0.8))
                for p in parents]
    prompt = prompts.few_shot_prompt(
        examples, prompts.target_metrics([e.metrics for e in examples]),
        corpus.OPENING)

    def reusing(model):
        texts = model.generate([prompt], num_samples=16, max_new_tokens=384,
                               temperatures=[0.2, 0.6, 0.8, 1.0] * 4,
                               rng=jax.random.key(0))[0]
        children = [prompts.child_source(corpus.OPENING, t) for t in texts]
        return sum(bool(corpus.layer_calls(c) & own) for c in children)

    plain = reusing(dataclasses.replace(lm, copy_weight=0.0))
    copying = reusing(lm)
    assert copying >= 4 and copying > plain, (copying, plain)
