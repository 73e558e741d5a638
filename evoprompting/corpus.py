r"""The default LM's training corpus: synthetic EvoPrompting episodes + library code.

    python -m evoprompting.corpus --out=DIR [--num_episodes=N] [--seed=S] \
        [--code_share=0.15] [--num_workers=2]

An *episode* is one few-shot crossover prompt exactly as the search renders
it (`prompts.few_shot_prompt` of two `prompts.Example`s, the child's header
and the opening `class Model(nn.Module):`) followed by the rest of a child
program. Episodes are built so that the only way to predict a child is to
read its parents:

  * parents are MNIST-1D seed programs (`seeds.read_seeds('mnist1d')`) whose
    every width, kernel, stride, window and activation was redrawn
    (`mutation.reroll`), or children of earlier episodes, so no layer
    configuration is frequent enough to be recalled;
  * the child edits one parent (one or two of `mutation.mutate`'s operators,
    or a layer spliced in from the other parent, `mutation.splice`) or
    crosses the two over (`mutation.crossover`), so most of its lines are
    copies of parent lines;
  * parents are paired with programs of similar size, and children far from
    the prompt's size target (`prompts.target_metrics`) are mostly rejected,
    so children are usually within 2x of the target, as the search asks;
  * every header's `num_params` is the program's true parameter count,
    measured by building it under the MNIST-1D contract with abstract values
    (`classifier_training._build`: `jax.eval_shape`, output `[batch, 10]`);
    programs that do not build are never shown. Validation accuracies are
    synthetic (parents uniform in [0.5, 0.95]); the child's is the target's.

These programs come from our own AST operators, not from an LM, so they are
built in this process. A smaller share of the text is Python source of the
installed jax / flax / optax (/ jraph) packages, cut into documents at line
boundaries.

Output (in `--out`): `train-NNNNN.txt` shards and `valid.txt` (documents
from the same distribution, never in a train shard), every document followed
by `DOCUMENT_SEPARATOR` (the pretraining binary puts an end-of-text token
there), and `stats.json`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import multiprocessing
import os
import sys
import time
from typing import Any, Iterator, Sequence

import numpy as np

from evoprompting import mutation, prompts
from evoprompting.tasks import mnist1d
from seeds import read_seeds

DOCUMENT_SEPARATOR = '<|endoftext|>'
OPENING = mnist1d.PROMPT_OPENING
CODE_PACKAGES = ('jax', 'flax', 'optax', 'jraph')
# Seed families, weighted: GRUs are slow to build and few in the search.
FAMILY_WEIGHTS = {'greydanus_cnn': 0.35, 'residual_cnn': 0.3, 'mlp': 0.27,
                  'gru': 0.08}
MIN_PARAMS, MAX_PARAMS = 100, 1_000_000


@dataclasses.dataclass(frozen=True)
class Program:
    """A program as prompts show it (`prompts.prompt_code`), with its size."""

    code: str
    num_params: int


@dataclasses.dataclass(frozen=True)
class Episode:
    """Two parents and a child made from them.

    Attributes:
      parents: in prompt order, with their (synthetic) accuracies.
      child: the child program; its header is `header`.
      header: the child's metrics (true size, the target's accuracy).
      operator: how the child was made ('edit', 'splice', 'crossover').
    """

    parents: tuple[prompts.Example, ...]
    child: Program
    header: prompts.Metrics
    operator: str

    def render(self) -> str:
        """The search's prompt for the parents, then the child's code."""
        prompt = prompts.few_shot_prompt(self.parents, self.header, OPENING)
        if not self.child.code.startswith(OPENING):
            raise ValueError('a child must start with the opening line')
        return prompt + self.child.code[len(OPENING):]


def build(code: str) -> int | None:
    """The true parameter count of `code` under the MNIST-1D contract
    (`Model()` maps float32 [batch, 40] to [batch, 10]), or None if it does
    not build or its size is outside [MIN_PARAMS, MAX_PARAMS].

    One abstract pass (`jax.eval_shape` of `init_with_output`) gives both the
    output shape and the parameter shapes. Runs `code`: only for programs
    from our own operators, never for LM output.
    """
    import inspect  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    namespace: dict[str, Any] = {}
    try:
        exec(compile(mnist1d.PREAMBLE + code, '<corpus>', 'exec'), namespace)  # pylint: disable=exec-used
        model = namespace['Model']()
        kwargs = ({'train': False} if 'train' in
                  inspect.signature(model.__call__).parameters else {})
        out, variables = jax.eval_shape(
            lambda: model.init_with_output(
                jax.random.key(0), jnp.zeros((2, mnist1d.INPUT_LENGTH)), **kwargs))
    except Exception:  # pylint: disable=broad-except
        return None  # Does not build (or a crossover that does not compile).
    if getattr(out, 'shape', None) != (2, mnist1d.NUM_CLASSES):
        return None
    count = int(sum(np.prod(x.shape) for x in
                    jax.tree_util.tree_leaves(variables.get('params', {}))))
    return count if MIN_PARAMS <= count <= MAX_PARAMS else None


def shown(source: str) -> str:
    """`source` as prompts show it (no docstring, no preamble imports)."""
    return prompts.prompt_code(source, mnist1d.PREAMBLE)


def layer_calls(code: str) -> set[str]:
    """The layer configurations of a program: the source of every
    `nn.<Layer>(...)` constructor call whose name starts with a capital
    (`nn.Conv(features=37, kernel_size=(7,))`), normalised by `ast.unparse`,
    with `self.<field>` replaced by the field's literal default."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    fields = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(node.value, ast.Constant)):
            fields[node.target.id] = node.value

    class Inline(ast.NodeTransformer):
        def visit_Attribute(self, node):
            if (isinstance(node.value, ast.Name) and node.value.id == 'self'
                    and node.attr in fields):
                return fields[node.attr]
            return self.generic_visit(node)

    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == 'nn' and node.func.attr[:1].isupper()):
            found.add(ast.unparse(Inline().visit(ast.parse(ast.unparse(node)))))
    return found


def random_parent(rng: np.random.Generator) -> Program:
    """A seed with every width, kernel and activation redrawn (and sometimes
    one more structural mutation), retried until it builds."""
    seeds = dict(read_seeds('mnist1d'))
    names = sorted(FAMILY_WEIGHTS)
    weights = np.array([FAMILY_WEIGHTS[n] for n in names])
    while True:
        name = names[rng.choice(len(names), p=weights / weights.sum())]
        source = mutation.reroll(seeds[name], rng)
        if rng.random() < 0.4:
            source, _ = mutation.mutate(source, rng)
        code = shown(source)
        size = build(code)
        if size is not None:
            return Program(code, size)


def make_child(first: Program, second: Program, rng: np.random.Generator
               ) -> tuple[str, str]:
    """(child code, operator): an edit or splice of `first`, or a crossover."""
    roll = rng.random()
    if roll < 0.4:
        source = first.code
        for _ in range(1 + int(rng.random() < 0.3)):
            source, _ = mutation.mutate(source, rng)
        return shown(source), 'edit'
    if roll < 0.6:
        return shown(mutation.splice(first.code, second.code, rng)), 'splice'
    return shown(mutation.crossover(first.code, second.code, rng)), 'crossover'


def _similar(pool: Sequence[Program], size: int, rng: np.random.Generator,
             factor: float = 3.0) -> Program:
    near = [p for p in pool if size / factor <= p.num_params <= size * factor]
    choices = near if len(near) > 1 else pool
    return choices[rng.integers(len(choices))]


def _accuracy(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(0.5, 0.95)), 3)


def episodes(num_episodes: int, rng: np.random.Generator, *,
             pool_size: int = 32, max_tries: int = 20) -> Iterator[Episode]:
    """`num_episodes` episodes (see the module docstring).

    The parent pool starts with `pool_size` rerolled seeds; valid children
    join it (replacing a random member, or a fresh rerolled seed does), so
    lineages deepen while the pool stays varied.
    """
    pool = [random_parent(rng) for _ in range(pool_size)]
    for _ in range(num_episodes):
        for _ in range(max_tries):
            a = pool[rng.integers(len(pool))]
            b = _similar(pool, a.num_params, rng)
            if a.code == b.code:
                continue
            smaller, larger = sorted((a, b), key=lambda p: p.num_params)
            first, second = ((smaller, larger) if rng.random() < 0.65
                             else (larger, smaller))
            code, operator = make_child(first, second, rng)
            if code in (a.code, b.code):
                continue
            size = build(code)
            if size is None:
                continue
            parents = [prompts.Example(p.code, prompts.Metrics(p.num_params,
                                                               _accuracy(rng)))
                       for p in (a, b)]
            if rng.random() < 0.5:
                parents.reverse()
            target = prompts.target_metrics([p.metrics for p in parents])
            ratio = size / target.num_params
            if not 1 / 3 <= ratio <= 3 and rng.random() < 0.6:
                continue
            child = Program(code, size)
            fresh = child if rng.random() < 0.85 else random_parent(rng)
            pool[rng.integers(len(pool))] = fresh
            yield Episode(parents=tuple(parents), child=child,
                          header=prompts.Metrics(size, target.val_accuracy),
                          operator=operator)
            break
        else:
            pool[rng.integers(len(pool))] = random_parent(rng)


def code_documents(packages: Sequence[str] = CODE_PACKAGES, *,
                   max_chars: int = 3000) -> list[str]:
    """Python sources of the installed `packages` (those not installed are
    skipped), cut at line boundaries into documents of at most `max_chars`,
    in a fixed order (sorted paths)."""
    documents = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = spec.submodule_search_locations[0]
        paths = sorted(os.path.join(d, f) for d, _, files in os.walk(root)
                       for f in files if f.endswith('.py'))
        for path in paths:
            with open(path, encoding='utf-8', errors='replace') as f:
                text = f.read()
            chunk = ''
            for line in text.splitlines(keepends=True):
                if chunk and len(chunk) + len(line) > max_chars:
                    documents.append(chunk)
                    chunk = ''
                chunk += line[:max_chars]
            if chunk.strip():
                documents.append(chunk)
    return documents


def _episode_texts(args: tuple[int, int]) -> tuple[list[str], dict[str, Any]]:
    """Worker: (texts, stats) of `count` episodes from seed sequence `seed`."""
    count, seed = args
    rng = np.random.default_rng(seed)
    texts, operators, ratios, reuse, sizes = [], {}, [], 0, []
    start = time.time()
    for episode in episodes(count, rng):
        if len(texts) % 250 == 0:
            print(f'corpus worker {os.getpid()}: {len(texts)}/{count} episodes, '
                  f'{time.time() - start:.0f} s', file=sys.stderr, flush=True)
        texts.append(episode.render())
        operators[episode.operator] = operators.get(episode.operator, 0) + 1
        target = prompts.target_metrics([p.metrics for p in episode.parents])
        ratios.append(episode.child.num_params / target.num_params)
        parent_layers = set().union(*(layer_calls(p.code) for p in episode.parents))
        reuse += bool(layer_calls(episode.child.code) & parent_layers)
        sizes.append(episode.child.num_params)
    return texts, {'operators': operators, 'ratios': ratios, 'reuse': reuse,
                   'sizes': sizes}


def write_corpus(out: str, *, num_episodes: int, seed: int,
                 code_share: float = 0.15, num_workers: int = 1,
                 valid_fraction: float = 0.02, shard_chars: int = 4_000_000
                 ) -> dict[str, Any]:
    """Builds the corpus into `out` and returns its statistics (also written
    to `out/stats.json`).

    Args:
      out: output folder (created; existing shards are overwritten).
      num_episodes: synthetic episodes.
      seed: everything random derives from it (workers get spawned seeds).
      code_share: target fraction of characters that are library code.
      num_workers: processes building episodes.
      valid_fraction: documents of each kind held out into `valid.txt`.
      shard_chars: approximate characters per train shard.
    """
    if num_episodes < 1:
        raise ValueError(f'num_episodes must be positive, got {num_episodes}')
    if not 0 <= code_share < 1:
        raise ValueError(f'code_share must be in [0, 1), got {code_share}')
    start = time.time()
    os.makedirs(out, exist_ok=True)
    seeds = np.random.SeedSequence(seed).spawn(num_workers + 1)
    counts = [num_episodes // num_workers + (i < num_episodes % num_workers)
              for i in range(num_workers)]
    jobs = [(c, int(s.generate_state(1)[0])) for c, s in zip(counts, seeds)]
    if num_workers == 1:
        results = [_episode_texts(jobs[0])]
    else:
        with multiprocessing.get_context('spawn').Pool(num_workers) as p:
            results = p.map(_episode_texts, jobs)
    episode_texts = [t for texts, _ in results for t in texts]
    ratios = np.array([r for _, s in results for r in s['ratios']])
    sizes = np.array([r for _, s in results for r in s['sizes']])
    operators: dict[str, int] = {}
    for _, s in results:
        for k, v in s['operators'].items():
            operators[k] = operators.get(k, 0) + v

    rng = np.random.default_rng(seeds[-1])
    episode_chars = sum(len(t) for t in episode_texts)
    code_budget = code_share / (1 - code_share) * episode_chars
    code_texts = []
    if code_budget:
        library = code_documents()
        for i in rng.permutation(len(library)):
            if code_budget <= 0:
                break
            code_texts.append(library[i])
            code_budget -= len(library[i])

    valid, train = [], []
    for texts in (episode_texts, code_texts):
        held = max(1, int(len(texts) * valid_fraction)) if len(texts) > 1 else 0
        valid += texts[:held]
        train += texts[held:]
    train = [train[i] for i in rng.permutation(len(train))]
    shards, current = [], []
    size = 0
    for text in train:
        current.append(text)
        size += len(text)
        if size >= shard_chars:
            shards.append(current)
            current, size = [], 0
    if current:
        shards.append(current)
    for i, shard in enumerate(shards):
        _write(os.path.join(out, f'train-{i:05d}.txt'), shard)
    _write(os.path.join(out, 'valid.txt'), valid)

    code_chars = sum(len(t) for t in code_texts)
    distinct = len({t.rsplit(prompts.METRICS_HEADER, 1)[-1] for t in episode_texts})
    stats = {
        'num_episodes': len(episode_texts),
        'distinct_children': distinct,
        'num_code_documents': len(code_texts),
        'episode_chars': episode_chars,
        'code_chars': code_chars,
        'code_share': code_chars / max(1, episode_chars + code_chars),
        'train_shards': len(shards),
        'valid_documents': len(valid),
        'operators': operators,
        'children_reusing_a_parent_layer': float(
            sum(s['reuse'] for _, s in results) / max(1, len(episode_texts))),
        'children_within_2x_of_target': float(
            np.mean((ratios >= 0.5) & (ratios <= 2.0))),
        'child_params_quantiles': {f'p{q}': int(np.quantile(sizes, q / 100))
                                   for q in (5, 25, 50, 75, 95)},
        'seed': seed,
        'seconds': round(time.time() - start, 1),
    }
    with open(os.path.join(out, 'stats.json'), 'w', encoding='utf-8') as f:
        json.dump(stats, f, indent=2)
    return stats


def _write(path: str, documents: Sequence[str]) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        for document in documents:
            f.write(document + DOCUMENT_SEPARATOR)
    os.replace(tmp, path)


def main(argv: Sequence[str]) -> None:
    del argv
    from absl import flags  # pylint: disable=g-import-not-at-top
    stats = write_corpus(flags.FLAGS.out, num_episodes=flags.FLAGS.num_episodes,
                         seed=flags.FLAGS.seed, code_share=flags.FLAGS.code_share,
                         num_workers=flags.FLAGS.num_workers)
    print(json.dumps(stats, indent=2))


if __name__ == '__main__':
    from absl import app, flags  # pylint: disable=g-import-not-at-top
    flags.DEFINE_string('out', None, 'Output folder.', required=True)
    flags.DEFINE_integer('num_episodes', 20_000, 'Synthetic episodes.')
    flags.DEFINE_integer('seed', 0, 'Seed of everything random.')
    flags.DEFINE_float('code_share', 0.15, 'Fraction of characters of library code.')
    flags.DEFINE_integer('num_workers', 2, 'Processes building episodes.')
    app.run(main)
