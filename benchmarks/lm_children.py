r"""Does the default LM do what EvoPrompting needs of it?

    python benchmarks/lm_children.py [--checkpoint=default|EXPORT_DIR] \
        [--prompt_set=generator|handwritten|clrs] \
        [--corpus_dir=DIR] [--num_prompts=6] [--samples=5] \
        [--copy_weight=0,0.7] [--copy_min_match=8] [--copy_half_life=20] \
        [--order=nearest_last|drawn|nearest_first] \
        [--max_new_tokens=384] [--seed=0] [--table_out=FILE]

Prompts are the search's few-shot prompts (`prompts.few_shot_prompt`, the
preamble-free code, the target of `prompts.target_metrics`, the task's
opening line) over pairs of parents from one of three prompt sets:

  * generator: MNIST-1D programs of the corpus generator
    (`corpus.random_parent`: rerolled seeds and `evoprompting.architectures`
    programs, in its styles), seeded apart from the corpus; with
    --corpus_dir, parents found in the corpus are replaced;
  * handwritten: two of the MNIST-1D programs written by hand in
    benchmarks/prompt_sets/mnist1d, within 3x of each other's size;
  * clrs: two of the CLRS triplet functions written by hand in
    benchmarks/prompt_sets/clrs (opening `def get_triplet_msgs(...)`;
    sizes are the whole BFS model's, as the CLRS search's headers).

The corpus never shows a hand-written program nor its layer configurations
that are not common vocabulary (`corpus.HeldOut`; tests/corpus_test.py).
The parent nearest the target size is shown last, as the
search shows it (`prompts.nearest_target_last`), unless `--order` says
otherwise. Every prompt is sampled `--samples` times at each of the paper's
temperatures {0.2, 0.6, 0.8, 1.0}, for each `--copy_weight` and
`--copy_half_life` of the copy prior (`lm.sampler`; weight 0 = the plain LM).

Per temperature:
  * valid (of all samples): the child parses, passes the validator and
    builds under the task's contract (MNIST-1D: output [batch, 10]; CLRS:
    the whole BFS model with the child as its triplet function): each is
    built in the project's sandbox like any candidate (`evaluator.Sandbox`,
    a build-only request: validated, built on abstract values in a worker,
    not trained), never in this process;
  * a parent verbatim (of valid): children that repeat a parent (the same
    program in the search's canonical form, `search.canonical`): no new
    architecture, a duplicate the search would not train. The rates below
    are of the *novel* valid children, the others, with the gross rate (of
    all valid children, copies included) in brackets;
  * parent-conditioned: children that contain a layer configuration
    (`corpus.layer_calls`: an `nn.<Layer>(...)` call with fields inlined)
    that appears in the prompt's parents and is neither common vocabulary
    (`corpus.common_layers`: the seeds' and those frequent in the
    generator's programs) nor, with --corpus_dir, anywhere in the corpus
    (without it the corpus is not checked, and the output says so).
    `control` is the same count against
    the parents of a different prompt: the rate of chance matches;
  * within 2x: children whose parameter count is within a factor 2 of the
    prompt's target.
Ends with one SUMMARY line (all temperatures pooled, per setting).
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import os
import subprocess
import sys
import time

from absl import app, flags
import numpy as np

import machine  # pylint: disable=g-import-not-at-top  (benchmarks/machine.py)

FLAGS = flags.FLAGS
flags.DEFINE_string('checkpoint', 'default', "'default' or an export folder.")
flags.DEFINE_enum('prompt_set', 'generator', ['generator', 'handwritten', 'clrs'],
                  'Parents: drawn by the corpus generator with a seed apart from '
                  "the corpus', the hand-written MNIST-1D programs of "
                  'benchmarks/prompt_sets/mnist1d, or the hand-written CLRS triplet '
                  'functions of benchmarks/prompt_sets/clrs.')
flags.DEFINE_string('corpus_dir', '', 'Corpus folder, to exclude its layers.')
flags.DEFINE_integer('num_prompts', 6, 'Prompts (parent pairs).')
flags.DEFINE_integer('samples', 5, 'Samples per prompt and temperature.')
flags.DEFINE_list('copy_weight', ['0', '0.7'], 'Copy-prior weights to compare.')
flags.DEFINE_integer('copy_min_match', 8, 'The copy prior\'s minimum match.')
flags.DEFINE_list('copy_half_life', ['20'], 'Copy-prior half-lives to compare.')
flags.DEFINE_enum('order', 'nearest_last', ['nearest_last', 'drawn', 'nearest_first'],
                  'Parent order in the prompt: nearest the target size last '
                  '(as the search), as drawn, or nearest first (a control).')
flags.DEFINE_integer('max_new_tokens', 384, 'Tokens per child at most.')
flags.DEFINE_integer('seed', 0, 'Seed of the parents and of sampling.')
flags.DEFINE_integer('num_workers', 2, 'Sandbox workers that build children.')
flags.DEFINE_string('table_out', '', 'Also write the pooled rates as a '
                    'markdown table, with the commit, machine and command.')

TEMPERATURES = (0.2, 0.6, 0.8, 1.0)
PARENT_SEED_OFFSET = 1_000_003  # Parents never come from the corpus' seeds.


def build_in_sandbox(children: list[str], task_name: str) -> list[int | None]:
    """The parameter count of each child program that is valid (validated
    and built in the sandbox under `task_name`'s contract, not trained),
    else None."""
    from evoprompting import devices  # pylint: disable=g-import-not-at-top
    from evoprompting.sandbox import evaluator, pool  # pylint: disable=g-import-not-at-top
    if task_name == 'clrs':
        from clrs_tasks import data, task as clrs_task  # pylint: disable=g-import-not-at-top
        task = clrs_task.ClrsTask(data=data.DataConfig(
            algorithm='bfs', train_count=8, val_count=8, test_count=8))
    else:
        from evoprompting.tasks import mnist1d  # pylint: disable=g-import-not-at-top
        task = mnist1d.Mnist1dTask(data=mnist1d.DataConfig(generator_seed=42))
    task.prepare()
    sources = [task.preamble + child for child in children]
    with evaluator.Sandbox(task, limits=pool.Limits(wall_s=120, cpu_s=240),
                           workers=[devices.CPU_WORKER] * FLAGS.num_workers
                           ) as sandbox:
        results = sandbox.evaluate(sources, [0] * len(sources), build_only=True)
    return [r.params if r.ok else None for r in results]


def _revision() -> str:
    """The repository's git revision (short), or 'unknown'."""
    try:
        out = subprocess.run(['git', 'rev-parse', '--short=10', 'HEAD'],
                             cwd=os.path.dirname(os.path.dirname(
                                 os.path.abspath(__file__))),
                             capture_output=True, text=True, timeout=10,
                             check=False)
        return out.stdout.strip() or 'unknown'
    except OSError:
        return 'unknown'


def corpus_layers(corpus_dir: str) -> tuple[set[str], set[str]]:
    """(layer configurations, programs without style) of every episode in
    the corpus."""
    from evoprompting import corpus, prompts  # pylint: disable=g-import-not-at-top
    layers, programs = set(), set()
    paths = glob.glob(os.path.join(corpus_dir, '*.txt'))
    if not paths:
        sys.exit(f'error: no corpus text files (*.txt) in --corpus_dir={corpus_dir}')
    for path in paths:
        with open(path, encoding='utf-8') as f:
            for document in f.read().split(corpus.DOCUMENT_SEPARATOR):
                for block in document.split(prompts.METRICS_HEADER)[1:]:
                    code = block.split('"""\n', 1)[-1].strip('\n') + '\n'
                    programs.add(corpus.canonical(code))
                    layers |= corpus.layer_calls(code)
    return layers, programs


def parent_pairs(prompt_set: str, task, rng: np.random.Generator):
    """A function drawing a pair of parents (`corpus.Program`s) of
    `prompt_set`: two programs of the generator, or two hand-written programs
    within 3x of each other's size."""
    from evoprompting import corpus  # pylint: disable=g-import-not-at-top
    if prompt_set == 'generator':
        return lambda: [corpus.random_parent(rng, task) for _ in range(2)]
    folder = os.path.join(corpus.DEFAULT_HELD_OUT, task.name)
    programs = []
    for name, source in corpus.read_seeds(task.name, folder):
        code = corpus.shown(source)
        size = task.build(code)
        if size is None:
            sys.exit(f'error: the hand-written program {folder}/{name}.py '
                     'does not build')
        programs.append(corpus.Program(code, size))

    def draw():
        a = programs[rng.integers(len(programs))]
        near = [p for p in programs if p is not a
                and a.num_params / 3 <= p.num_params <= a.num_params * 3]
        return [a, near[rng.integers(len(near))]]
    return draw


def main(argv):
    del argv
    import jax  # pylint: disable=g-import-not-at-top
    from evoprompting import corpus, prompts  # pylint: disable=g-import-not-at-top
    from lm import checkpoints  # pylint: disable=g-import-not-at-top

    start = time.time()
    if FLAGS.checkpoint == 'default':
        lm = checkpoints.load_default()
    else:
        lm = checkpoints.load_exported(FLAGS.checkpoint)
    print(f'machine: {machine.describe()}')
    print(f'model: {FLAGS.checkpoint}, loaded in {time.time() - start:.1f} s, '
          f'stop strings {lm.stop_strings}')
    known = set(corpus.common_layers())  # The seeds' and the generator's own.
    seen_programs = set()
    if FLAGS.corpus_dir:
        layers, seen_programs = corpus_layers(FLAGS.corpus_dir)
        known |= layers
        print(f'corpus: {len(seen_programs)} programs, {len(layers)} layer configs')
    else:
        print('corpus NOT checked (no --corpus_dir): parent-conditioned layers '
              'are checked against the common layers only (corpus.common_layers)')

    rng = np.random.default_rng(FLAGS.seed + PARENT_SEED_OFFSET)
    room = lm.config.max_len - FLAGS.max_new_tokens
    task_name = 'clrs' if FLAGS.prompt_set == 'clrs' else 'mnist1d'
    task = corpus.task_programs(task_name)
    draw_pair = parent_pairs(FLAGS.prompt_set, task, rng)
    cases = []
    for _ in range(50 * FLAGS.num_prompts):
        if len(cases) == FLAGS.num_prompts:
            break
        pair = draw_pair()
        if any(corpus.canonical(p.code) in seen_programs for p in pair):
            continue
        examples = [prompts.Example(p.code, prompts.Metrics(
            p.num_params, round(float(rng.uniform(0.5, 0.95)), 3))) for p in pair]
        target = prompts.target_metrics([e.metrics for e in examples])
        if FLAGS.order != 'drawn':
            examples = prompts.nearest_target_last(examples, target)
        if FLAGS.order == 'nearest_first':
            examples.reverse()
        text = prompts.few_shot_prompt(examples, target, task.opening)
        if len(lm.vocab.encode(text)) > room:
            continue  # Too long for the context with room for a child.
        own = set().union(*(corpus.layer_calls(p.code) for p in pair)) - known
        parents = {corpus.canonical(p.code) for p in pair}
        if any(c['parents'] == parents for c in cases):
            continue  # Each prompt has its own pair of parents.
        cases.append({'prompt': text, 'target': target.num_params, 'own': own,
                      'parents': parents})
    if len(cases) < FLAGS.num_prompts:
        sys.exit(f'error: only {len(cases)} prompts fit the context with room for '
                 f'{FLAGS.max_new_tokens} new tokens')
    print(f'{len(cases)} {FLAGS.prompt_set} prompts; target sizes '
          f'{[c["target"] for c in cases]}; parents with a layer of their own: '
          f'{sum(bool(c["own"]) for c in cases)}')

    temps = [t for t in TEMPERATURES for _ in range(FLAGS.samples)]
    settings = [(w, h) for w in map(float, FLAGS.copy_weight)
                for h in (map(int, FLAGS.copy_half_life) if w else [0])]
    summary = []
    table = [f'`python benchmarks/lm_children.py '
             f'{" ".join(a for a in sys.argv[1:] if not a.startswith("--table_out"))}`'
             f' at commit {_revision()}, on {machine.describe()}; '
             f'{len(cases)} {FLAGS.prompt_set} prompts x {len(temps)} samples '
             'per setting, all '
             'temperatures pooled; rates of novel valid children (not a parent '
             'verbatim), gross rates (copies included) in brackets:', '',
             '| copy prior | valid | a parent verbatim (of valid) | '
             'parent-conditioned | control (chance matches) | within 2x |',
             '|---|---:|---:|---:|---:|---:|']
    for copy_weight, half_life in settings:
        name = (f'copy_weight={copy_weight:g}, copy_min_match='
                f'{FLAGS.copy_min_match}, copy_half_life={half_life}')
        model = dataclasses.replace(lm, copy_weight=copy_weight,
                                    copy_min_match=FLAGS.copy_min_match,
                                    copy_half_life=half_life)
        tic = time.time()
        texts = model.generate([c['prompt'] for c in cases], num_samples=len(temps),
                               max_new_tokens=FLAGS.max_new_tokens,
                               temperatures=temps, rng=jax.random.key(FLAGS.seed))
        sample_s = time.time() - tic
        rows = []  # (case index, temperature, child source, parses)
        for i, completions in enumerate(texts):
            for t, completion in zip(temps, completions):
                child = prompts.child_source(task.opening, completion)
                try:
                    ast.parse(child)
                    parses = True
                except SyntaxError:
                    parses = False
                rows.append((i, t, child, parses))
        built = build_in_sandbox([r[2] for r in rows], task_name)
        print(f'\n{name}: {len(rows)} samples in {sample_s:.0f} s')
        print('temperature | parse | valid | a parent verbatim (of valid) | '
              'parent-conditioned, novel (gross) | control | '
              'within 2x, novel (gross)')
        pooled = ()
        for t in (*TEMPERATURES, 'all'):
            picked = [(r, n) for r, n in zip(rows, built) if t == 'all' or r[1] == t]
            valid = [(r, n) for r, n in picked if n is not None]
            copies = [corpus.canonical(r[2]) in cases[r[0]]['parents'] for r, _ in valid]
            # Per valid child: (novel, parent-conditioned, control, within 2x).
            judged = []
            for ((i, _, child, _), n), copy in zip(valid, copies):
                layers = corpus.layer_calls(child)
                other = cases[(i + 1) % len(cases)]['own'] - cases[i]['own']
                judged.append((not copy, bool(layers & cases[i]['own']),
                               bool(layers & other),
                               0.5 <= n / cases[i]['target'] <= 2.0))
            novel = [f for f in judged if f[0]]
            share = lambda items, k: sum(f[k] for f in items) / max(1, len(items))
            rates = (len(valid) / len(picked), sum(copies) / max(1, len(valid)),
                     share(novel, 1), share(judged, 1), share(novel, 2),
                     share(novel, 3), share(judged, 3))
            print(f'{t!s:>11} | {sum(r[3] for r, _ in picked) / len(picked):5.0%} | '
                  f'{rates[0]:5.0%} | {rates[1]:28.0%} | '
                  f'{rates[2]:26.0%} ({rates[3]:.0%}) | {rates[4]:7.0%} | '
                  f'{rates[5]:17.0%} ({rates[6]:.0%})')
            if t == 'all':
                pooled = rates
        ended = sum(task.opening not in r[2][len(task.opening):]
                    for r in rows) / len(rows)
        print(f'children without a second opening line: {ended:.0%}')
        prior = ('off' if not copy_weight else
                 f'{copy_weight:g}, min match {FLAGS.copy_min_match}, '
                 f'half-life {half_life or "none"}')
        table.append(
            f'| {prior} '
            f'| {pooled[0]:.0%} | {pooled[1]:.0%} '
            f'| {pooled[2]:.0%} ({pooled[3]:.0%}) | {pooled[4]:.0%} '
            f'| {pooled[5]:.0%} ({pooled[6]:.0%}) |')
        summary.append(f'copy {copy_weight:g} half-life {half_life}: valid '
                       f'{pooled[0]:.0%}, a parent verbatim {pooled[1]:.0%}; '
                       f'of novel valid: parent-conditioned {pooled[2]:.0%} '
                       f'(gross {pooled[3]:.0%}, control {pooled[4]:.0%}), '
                       f'within 2x {pooled[5]:.0%} (gross {pooled[6]:.0%})')
    if FLAGS.table_out:
        with open(FLAGS.table_out, 'w', encoding='utf-8') as f:
            f.write('\n'.join(table) + '\n')
        print(f'Table: {FLAGS.table_out}')
    print(f'\nSUMMARY lm_children ({FLAGS.prompt_set}: {len(cases)} prompts x '
          f'{len(temps)} samples, {FLAGS.checkpoint}, order {FLAGS.order}): '
          + '; '.join(summary))


if __name__ == '__main__':
    app.run(main)
