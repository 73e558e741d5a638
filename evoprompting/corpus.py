r"""The default LM's training corpus: synthetic EvoPrompting episodes + library code.

    python -m evoprompting.corpus --out=DIR [--num_episodes=N] \
        [--clrs_episodes=N] [--generated_share=0.5] [--seed=S] \
        [--code_share=0.15] [--num_workers=2] [--held_out_dir=DIR]

An *episode* is one few-shot crossover prompt exactly as the search renders
it (`prompts.few_shot_prompt` of two `prompts.Example`s, the child's header
and the task's opening line) followed by the rest of a child program.
Episodes are built so that the only way to predict a child is to read its
parents:

  * MNIST-1D parents are seed programs (`seeds.read_seeds('mnist1d')`) whose
    every width, kernel, stride, window and activation was redrawn
    (`mutation.reroll`), or programs of `evoprompting.architectures` (many
    architectures and ways of writing them), in a random style
    (`evoprompting.styles`), or children of earlier episodes, so no layer
    configuration is frequent enough to be recalled; CLRS parents are the
    triplet-function seeds after 1-3 mutations, some projection widths
    redrawn (`task_programs`);
  * the child edits one parent (one or two of `mutation.mutate`'s operators,
    or a layer spliced in from the other parent, `mutation.splice`) or
    crosses the two over (`mutation.crossover`), so most of its lines are
    copies of parent lines; it is written in its first parent's style, with
    the comments of the lines it kept;
  * parents are paired with programs of similar size, and children far from
    the prompt's size target (`prompts.target_metrics`) are mostly rejected,
    so children are usually within 2x of the target, as the search asks;
  * every header's `num_params` is the program's true parameter count,
    measured by building it on abstract values (MNIST-1D: `build`, output
    `[batch, 10]`; CLRS: `build_clrs`, the whole BFS model); programs that
    do not build are never shown. Validation accuracies are synthetic
    (parents uniform in [0.5, 0.95]); the child's is the target's;
  * no document shows a held-out program (`--held_out_dir`, by default the
    benchmark's hand-written prompts) nor their layer configurations that
    are not common vocabulary (`HeldOut`, `common_layers`).

These programs come from our own AST operators, not from an LM, so they are
built in this process. A smaller share of the text is Python source of the
installed jax / flax / optax (/ jraph) packages, cut into documents at line
boundaries.

Output (in `--out`): `train-NNNNN.txt` shards and `valid-<source>.txt` for
the sources mnist1d, clrs and code (documents from the same distribution,
never in a train shard), every document followed by `DOCUMENT_SEPARATOR` (the
pretraining binary puts an end-of-text token there), and `stats.json`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import json
import multiprocessing
import os
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from evoprompting import architectures, mutation, prompts, search, styles
from clrs_tasks import processors
from evoprompting.tasks import mnist1d
from seeds import read_seeds

DOCUMENT_SEPARATOR = '<|endoftext|>'
OPENING = mnist1d.PROMPT_OPENING
# CLRS episodes: the algorithm whose whole model the headers count.
CLRS_ALGORITHM = 'bfs'
CLRS_MAX_PARAMS = 5_000_000
TASKS = ('mnist1d', 'clrs')
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
      task: the task whose programs these are ('mnist1d' or 'clrs').
      opening: the task's prompt opening, the child's first line.
    """

    parents: tuple[prompts.Example, ...]
    child: Program
    header: prompts.Metrics
    operator: str
    task: str = 'mnist1d'
    opening: str = OPENING

    def render(self) -> str:
        """The search's prompt for the parents, then the child's code."""
        prompt = prompts.few_shot_prompt(self.parents, self.header, self.opening)
        if not self.child.code.startswith(self.opening):
            raise ValueError('a child must start with the opening line')
        return prompt + self.child.code[len(self.opening):]


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


@functools.lru_cache(maxsize=1)
def _clrs_splits():
    """Small BFS datasets (dm-clrs samplers, cached on disk) to build CLRS
    models on."""
    from clrs_tasks import data as data_lib  # pylint: disable=g-import-not-at-top
    from clrs_tasks import train as train_lib  # pylint: disable=g-import-not-at-top
    train, val, test = data_lib.load_splits(data_lib.DataConfig(
        algorithm=CLRS_ALGORITHM, train_count=8, val_count=8, test_count=8))
    return train_lib.Splits(train=list(train), val=val, test=test)


def build_clrs(code: str) -> int | None:
    """The parameter count of the whole CLRS model (`CLRS_ALGORITHM`, the
    paper's training settings) with the triplet function `code`, as the
    CLRS search's headers count it, or None if it does not build.

    Runs `code`: only for programs from our own operators, never for LM
    output. Needs the `clrs` extra (dm-clrs).
    """
    from clrs_tasks import train as train_lib  # pylint: disable=g-import-not-at-top
    try:
        fn = processors.trusted_triplet_fn(code)
        shapes = train_lib.build_params(fn, _clrs_splits(), train_lib.TrainConfig(),
                                        max_params=CLRS_MAX_PARAMS)
    except Exception:  # pylint: disable=broad-except
        return None
    return int(sum(np.prod(s) for s in shapes))


def shown(source: str) -> str:
    """`source` as prompts show it (no docstring, no preamble imports)."""
    return prompts.prompt_code(source, mnist1d.PREAMBLE)


def canonical(code: str) -> str:
    """`code` in the search's duplicate form (`search.canonical`: no style,
    comments or docstrings), for comparisons."""
    return search.canonical(code, mnist1d.PREAMBLE)


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


@functools.lru_cache(maxsize=1)
def common_layers(num_programs: int = 1000, min_share: float = 0.005
                  ) -> frozenset[str]:
    """Layer configurations of the seeds, and those that at least
    `min_share` of the corpus' random parents have (e.g. `nn.Dense(10)`,
    `nn.LayerNorm()`): the vocabulary every program may use, which says
    nothing of a particular parent. Drawn from fixed seeds, without building
    the programs (a few seconds)."""
    found = [layer_calls(shown(s)) for task in TASKS for _, s in read_seeds(task)]
    seeds = set().union(*found)
    rng = np.random.default_rng(0)
    counts: dict[str, int] = {}
    for i in range(num_programs):
        code = (random_mnist1d_program(rng) if i % 4 else random_clrs_program(rng))
        for layer in layer_calls(code):
            counts[layer] = counts.get(layer, 0) + 1
    return frozenset(seeds | {k for k, v in counts.items()
                              if v >= min_share * num_programs})


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Programs the corpus must never show: benchmark prompts.

    A corpus program is refused if it is one of `programs` (compared without
    style or comments) or has one of `layers`: the held-out programs' layer
    configurations that are not `common_layers()`, which a benchmark counts
    as conditioning on these parents when a child has them.
    """

    programs: frozenset[str] = frozenset()
    layers: frozenset[str] = frozenset()

    @classmethod
    def from_sources(cls, sources: Sequence[str]) -> 'HeldOut':
        return cls(frozenset(canonical(shown(s)) for s in sources),
                   frozenset(set().union(*(layer_calls(s) for s in sources))
                             - common_layers()))

    def allows(self, code: str) -> bool:
        return (canonical(code) not in self.programs
                and not layer_calls(code) & self.layers)


def read_held_out(folder: str) -> HeldOut:
    """The held-out programs of every `<folder>/<task>/*.py` ('' for none)."""
    if not folder:
        return HeldOut()
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'no held-out folder {folder!r}')
    sources = [s for task in TASKS if os.path.isdir(os.path.join(folder, task))
               for _, s in read_seeds(task, os.path.join(folder, task))]
    return HeldOut.from_sources(sources)


def _styled(source: str, parents: Sequence[str], style: styles.Style) -> str:
    """`source` (operator output) with its parents' comments, in `style`,
    as prompts show it."""
    return shown(styles.apply(styles.carry_comments(source, parents), style))


def random_mnist1d_program(rng: np.random.Generator, *,
                           generated_share: float = 0.5) -> str:
    """A seed with every width, kernel and activation redrawn, or (with
    probability `generated_share`) a program of `architectures`; sometimes
    mutated once more; in a random style."""
    seeds = dict(read_seeds('mnist1d'))
    if rng.random() < generated_share:
        source = architectures.random_program(rng)
    else:
        names = sorted(FAMILY_WEIGHTS)
        weights = np.array([FAMILY_WEIGHTS[n] for n in names])
        name = names[rng.choice(len(names), p=weights / weights.sum())]
        source = mutation.reroll(seeds[name], rng)
    if rng.random() < 0.4:
        try:
            source = styles.carry_comments(mutation.mutate(source, rng)[0],
                                           [source])
        except mutation.NotAModel:
            pass  # Nothing to mutate (e.g. one `nn.Sequential` call).
    return shown(styles.apply(source, styles.random_style(rng)))


def random_clrs_program(rng: np.random.Generator) -> str:
    """A CLRS seed triplet function after 1-3 mutations, some of its
    projection widths redrawn, in a random style."""
    seeds = read_seeds('clrs')
    source = seeds[int(rng.integers(len(seeds)))][1]
    source = shown(source)
    for _ in range(int(rng.integers(1, 4))):
        try:
            source = styles.carry_comments(mutation.mutate(source, rng)[0], [source])
        except mutation.NotAModel:
            break
    return shown(styles.apply(_redraw_triplet_widths(source, rng),
                              styles.random_style(rng)))


def _redraw_triplet_widths(source: str, rng: np.random.Generator) -> str:
    """Some `nb_triplet_fts` arguments of layer calls become `k *
    nb_triplet_fts` or a literal width (a triplet function's sizes are
    symbolic, so rerolling literals finds none)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id == 'nb_triplet_fts' and rng.random() < 0.3):
            continue
        if rng.random() < 0.5:
            node.args[0] = ast.parse(f'{int(rng.choice([2, 4]))} * nb_triplet_fts',
                                     mode='eval').body
        else:
            node.args[0] = ast.Constant(int(rng.choice([4, 12, 16, 24, 32])))
    return styles.carry_comments(ast.unparse(tree) + '\n', [source])


@dataclasses.dataclass(frozen=True)
class TaskPrograms:
    """What episodes of one task are made of.

    Attributes:
      name: the task ('mnist1d', 'clrs').
      opening: its prompt opening (every program's first line).
      random_program: a random parent's code (not yet built).
      build: a program's parameter count as the task's headers give it, or
        None if it does not build.
    """

    name: str
    opening: str
    random_program: Callable[[np.random.Generator], str]
    build: Callable[[str], int | None]


def task_programs(name: str, *, generated_share: float = 0.5) -> TaskPrograms:
    if name == 'mnist1d':
        return TaskPrograms('mnist1d', OPENING, functools.partial(
            random_mnist1d_program, generated_share=generated_share), build)
    if name == 'clrs':
        return TaskPrograms('clrs', processors.TRIPLET_OPENING, random_clrs_program,
                            build_clrs)
    raise ValueError(f'unknown task {name!r}; the tasks are {", ".join(TASKS)}')


def random_parent(rng: np.random.Generator,
                  task: TaskPrograms | None = None,
                  held_out: HeldOut = HeldOut()) -> Program:
    """A random program of `task` (default MNIST-1D) that builds, starts
    with the opening line and is not held out; retried until one is."""
    task = task or task_programs('mnist1d')
    while True:
        code = task.random_program(rng)
        if not code.startswith(task.opening) or not held_out.allows(code):
            continue
        size = task.build(code)
        if size is not None:
            return Program(code, size)


def make_child(first: Program, second: Program, rng: np.random.Generator
               ) -> tuple[str, str]:
    """(child code, operator): an edit or splice of `first`, or a crossover;
    written in `first`'s style, with the comments of the lines it kept."""
    roll = rng.random()
    if roll < 0.4:
        source = first.code
        for _ in range(1 + int(rng.random() < 0.3)):
            source, _ = mutation.mutate(source, rng)
        operator = 'edit'
    elif roll < 0.6:
        source, operator = mutation.splice(first.code, second.code, rng), 'splice'
    else:
        source = mutation.crossover(first.code, second.code, rng)
        operator = 'crossover'
    return (_styled(source, [first.code, second.code], styles.style_of(first.code)),
            operator)


def _similar(pool: Sequence[Program], size: int, rng: np.random.Generator,
             factor: float = 3.0) -> Program:
    near = [p for p in pool if size / factor <= p.num_params <= size * factor]
    choices = near if len(near) > 1 else pool
    return choices[rng.integers(len(choices))]


def _accuracy(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(0.5, 0.95)), 3)


def episodes(num_episodes: int, rng: np.random.Generator, *,
             task: TaskPrograms | None = None, held_out: HeldOut = HeldOut(),
             pool_size: int = 32, max_tries: int = 20) -> Iterator[Episode]:
    """`num_episodes` episodes of `task` (default MNIST-1D; see the module
    docstring), none showing a `held_out` program.

    The parent pool starts with `pool_size` random parents; valid children
    join it (replacing a random member, or a fresh random parent does), so
    lineages deepen while the pool stays varied.
    """
    task = task or task_programs('mnist1d')
    fresh_parent = lambda: random_parent(rng, task, held_out)
    pool = [fresh_parent() for _ in range(pool_size)]
    for _ in range(num_episodes):
        for _ in range(max_tries):
            a = pool[rng.integers(len(pool))]
            b = _similar(pool, a.num_params, rng)
            if canonical(a.code) == canonical(b.code):
                continue
            smaller, larger = sorted((a, b), key=lambda p: p.num_params)
            first, second = ((smaller, larger) if rng.random() < 0.65
                             else (larger, smaller))
            try:
                code, operator = make_child(first, second, rng)
            except mutation.NotAModel:
                continue
            if (canonical(code) in (canonical(a.code), canonical(b.code))
                    or not code.startswith(task.opening)
                    or not held_out.allows(code)):
                continue
            size = task.build(code)
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
            fresh = child if rng.random() < 0.85 else fresh_parent()
            pool[rng.integers(len(pool))] = fresh
            yield Episode(parents=tuple(parents), child=child,
                          header=prompts.Metrics(size, target.val_accuracy),
                          operator=operator, task=task.name,
                          opening=task.opening)
            break
        else:
            pool[rng.integers(len(pool))] = fresh_parent()


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


def _episode_texts(args: tuple[str, int, int, float, HeldOut]
                   ) -> tuple[list[str], dict[str, Any]]:
    """Worker: (texts, stats) of `count` episodes of `task` from seed `seed`."""
    task_name, count, seed, generated_share, held_out = args
    rng = np.random.default_rng(seed)
    task = task_programs(task_name, generated_share=generated_share)
    texts, operators, ratios, reuse, sizes = [], {}, [], 0, []
    start = time.time()
    for episode in episodes(count, rng, task=task, held_out=held_out):
        if len(texts) % 250 == 0:
            print(f'corpus worker {os.getpid()}: {len(texts)}/{count} '
                  f'{task_name} episodes, {time.time() - start:.0f} s',
                  file=sys.stderr, flush=True)
        texts.append(episode.render())
        operators[episode.operator] = operators.get(episode.operator, 0) + 1
        target = prompts.target_metrics([p.metrics for p in episode.parents])
        ratios.append(episode.child.num_params / target.num_params)
        parent_layers = set().union(*(layer_calls(p.code) for p in episode.parents))
        reuse += bool(layer_calls(episode.child.code) & parent_layers)
        sizes.append(episode.child.num_params)
    return texts, {'task': task_name, 'operators': operators, 'ratios': ratios,
                   'reuse': reuse, 'sizes': sizes}


def _jobs(counts: dict[str, int], num_workers: int,
          seeds: Sequence[np.random.SeedSequence], generated_share: float,
          held_out: HeldOut) -> list[tuple[str, int, int, float, HeldOut]]:
    """Each task's episodes split over `num_workers` jobs, one seed each."""
    jobs = []
    for task, count in counts.items():
        for i in range(num_workers):
            n = count // num_workers + (i < count % num_workers)
            if n:
                jobs.append((task, n, int(seeds[len(jobs)].generate_state(1)[0]),
                             generated_share, held_out))
    return jobs


def write_corpus(out: str, *, num_episodes: int, seed: int,
                 clrs_episodes: int = 0, generated_share: float = 0.5,
                 code_share: float = 0.15, num_workers: int = 1,
                 held_out: HeldOut = HeldOut(),
                 valid_fraction: float = 0.02, shard_chars: int = 4_000_000
                 ) -> dict[str, Any]:
    """Builds the corpus into `out` and returns its statistics (also written
    to `out/stats.json`).

    Args:
      out: output folder (created; existing shards are overwritten).
      num_episodes: synthetic MNIST-1D episodes.
      seed: everything random derives from it (workers get spawned seeds).
      clrs_episodes: synthetic CLRS (triplet-function) episodes; they need
        the `clrs` extra.
      generated_share: of MNIST-1D parents, the share drawn from
        `architectures` (the rest are rerolled seeds).
      code_share: target fraction of characters that are library code.
      num_workers: processes building episodes.
      held_out: programs no document may show (benchmark prompts).
      valid_fraction: documents of each kind held out into
        `valid-<kind>.txt` (kinds: mnist1d, clrs, code).
      shard_chars: approximate characters per train shard.
    """
    if num_episodes < 1 or clrs_episodes < 0:
        raise ValueError(f'num_episodes must be positive and clrs_episodes '
                         f'not negative, got {num_episodes}, {clrs_episodes}')
    if not 0 <= code_share < 1:
        raise ValueError(f'code_share must be in [0, 1), got {code_share}')
    start = time.time()
    os.makedirs(out, exist_ok=True)
    counts = {'mnist1d': num_episodes, 'clrs': clrs_episodes}
    seeds = np.random.SeedSequence(seed).spawn(2 * num_workers + 1)
    jobs = _jobs(counts, num_workers, seeds, generated_share, held_out)
    if num_workers == 1:
        results = [_episode_texts(job) for job in jobs]
    else:
        with multiprocessing.get_context('spawn').Pool(num_workers) as p:
            results = p.map(_episode_texts, jobs)
    by_kind: dict[str, list[str]] = {task: [] for task in counts}
    for texts, stats in results:
        by_kind[stats['task']] += texts

    rng = np.random.default_rng(seeds[-1])
    episode_chars = sum(len(t) for texts in by_kind.values() for t in texts)
    code_budget = code_share / (1 - code_share) * episode_chars
    by_kind['code'] = []
    if code_budget:
        library = code_documents()
        for i in rng.permutation(len(library)):
            if code_budget <= 0:
                break
            by_kind['code'].append(library[i])
            code_budget -= len(library[i])

    train = []
    for kind, texts in by_kind.items():
        held = max(1, int(len(texts) * valid_fraction)) if len(texts) > 1 else 0
        if held:
            _write(os.path.join(out, f'valid-{kind}.txt'), texts[:held])
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

    code_chars = sum(len(t) for t in by_kind['code'])
    stats = {'seed': seed, 'train_shards': len(shards),
             'num_code_documents': len(by_kind['code']), 'code_chars': code_chars,
             'code_share': code_chars / max(1, episode_chars + code_chars),
             'held_out_programs': len(held_out.programs),
             'held_out_layers': len(held_out.layers)}
    for task in counts:
        task_results = [r for _, r in results if r['task'] == task]
        if not task_results:
            continue
        texts = by_kind[task]
        ratios = np.array([x for r in task_results for x in r['ratios']])
        sizes = np.array([x for r in task_results for x in r['sizes']])
        operators: dict[str, int] = {}
        for r in task_results:
            for k, v in r['operators'].items():
                operators[k] = operators.get(k, 0) + v
        stats[task] = {
            'num_episodes': len(texts),
            'distinct_children': len({t.rsplit(prompts.METRICS_HEADER, 1)[-1]
                                      for t in texts}),
            'episode_chars': sum(len(t) for t in texts),
            'operators': operators,
            'children_reusing_a_parent_layer': float(
                sum(r['reuse'] for r in task_results) / max(1, len(texts))),
            'children_within_2x_of_target': float(
                np.mean((ratios >= 0.5) & (ratios <= 2.0))),
            'child_params_quantiles': {f'p{q}': int(np.quantile(sizes, q / 100))
                                       for q in (5, 25, 50, 75, 95)},
        }
    stats['seconds'] = round(time.time() - start, 1)
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
    f = flags.FLAGS
    stats = write_corpus(f.out, num_episodes=f.num_episodes, seed=f.seed,
                         clrs_episodes=f.clrs_episodes,
                         generated_share=f.generated_share,
                         code_share=f.code_share, num_workers=f.num_workers,
                         held_out=read_held_out(f.held_out_dir))
    print(json.dumps(stats, indent=2))


# The benchmark's hand-written prompts (benchmarks/lm_children.py), which the
# corpus must never show.
DEFAULT_HELD_OUT = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'benchmarks', 'prompt_sets')

if __name__ == '__main__':
    from absl import app, flags  # pylint: disable=g-import-not-at-top
    flags.DEFINE_string('out', None, 'Output folder.', required=True)
    flags.DEFINE_integer('num_episodes', 20_000, 'Synthetic MNIST-1D episodes.')
    flags.DEFINE_integer('clrs_episodes', 0, 'Synthetic CLRS triplet-function '
                         'episodes (needs the clrs extra).')
    flags.DEFINE_float('generated_share', 0.5, 'Share of MNIST-1D parents drawn '
                       'from evoprompting.architectures (the rest: rerolled seeds).')
    flags.DEFINE_integer('seed', 0, 'Seed of everything random.')
    flags.DEFINE_float('code_share', 0.15, 'Fraction of characters of library code.')
    flags.DEFINE_integer('num_workers', 2, 'Processes building episodes.')
    flags.DEFINE_string('held_out_dir', DEFAULT_HELD_OUT if os.path.isdir(
        DEFAULT_HELD_OUT) else '', 'Folder of <task>/*.py programs no document '
        'may show, nor their layer configurations that no seed has (default: '
        "the benchmark's prompt sets; '' for none).")
    app.run(main)
