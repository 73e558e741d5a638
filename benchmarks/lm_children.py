r"""Does the default LM do what EvoPrompting needs of it? (issue 4, section 7)

    python benchmarks/lm_children.py [--checkpoint=default|EXPORT_DIR] \
        [--corpus_dir=DIR] [--num_prompts=6] [--samples=5] \
        [--copy_weight=0,0.7] [--copy_min_match=8] [--copy_half_life=20] \
        [--order=nearest_last|drawn|nearest_first] \
        [--max_new_tokens=384] [--seed=0]

Prompts are the search's few-shot prompts (`prompts.few_shot_prompt`, the
MNIST-1D preamble-free code, the target of `prompts.target_metrics`, opening
`class Model(nn.Module):`) over pairs of held-out parents: seeds with every
width, kernel and activation redrawn by a generator seeded apart from the
corpus (`corpus.random_parent`); with --corpus_dir, parents found in the
corpus are replaced. The parent nearest the target size is shown last, as the
search shows it (`prompts.nearest_target_last`), unless `--order` says
otherwise. Every prompt is sampled `--samples` times at each of the paper's
temperatures {0.2, 0.6, 0.8, 1.0}, for each `--copy_weight` and
`--copy_half_life` of the copy prior (`lm.sampler`; weight 0 = the plain LM).

Per temperature:
  * valid: the child parses, passes `sandbox.validator.validate`, and builds
    under the MNIST-1D contract with output [batch, 10]. LM output is built
    only in a child process (`--build_worker` mode of this script), never here;
  * parent-conditioned: valid children that contain a layer configuration
    (`corpus.layer_calls`: an `nn.<Layer>(...)` call with fields inlined)
    that appears in the prompt's parents and in no seed program (nor, with
    --corpus_dir, anywhere in the corpus). `control` is the same count
    against the parents of a different prompt: the rate of chance matches;
  * within 2x: valid children whose parameter count is within a factor 2 of
    the prompt's target;
  * a parent verbatim: valid children whose code is one of the parents'
    (same AST): no new architecture, a wasted evaluation in a search.
Ends with one SUMMARY line (all temperatures pooled, per setting).
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import json
import os
import subprocess
import sys
import time

from absl import app, flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string('checkpoint', 'default', "'default' or an export folder.")
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
flags.DEFINE_bool('build_worker', False, 'Internal: build JSON sources from stdin.')

TEMPERATURES = (0.2, 0.6, 0.8, 1.0)
PARENT_SEED_OFFSET = 1_000_003  # Parents never come from the corpus' seeds.


def build_worker() -> None:
    """Child process: builds each validated source; prints one JSON per line."""
    from evoprompting import corpus  # pylint: disable=g-import-not-at-top
    for line in sys.stdin:
        source = json.loads(line)
        print(json.dumps(corpus.build(source)), flush=True)


def build_in_subprocess(sources: list[str]) -> list[int | None]:
    if not sources:
        return []
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--build_worker'],
        input=''.join(json.dumps(s) + '\n' for s in sources), text=True,
        capture_output=True, timeout=1800, check=True,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    return [json.loads(line) for line in out.stdout.splitlines()]


def _ast_key(code: str) -> str:
    """`code` up to formatting and comments (its AST dump)."""
    return ast.dump(ast.parse(code))


def corpus_layers(corpus_dir: str) -> tuple[set[str], set[str]]:
    """(layer configurations, program texts) of every episode in the corpus."""
    from evoprompting import corpus, prompts  # pylint: disable=g-import-not-at-top
    layers, programs = set(), set()
    for path in glob.glob(os.path.join(corpus_dir, '*.txt')):
        with open(path, encoding='utf-8') as f:
            for document in f.read().split(corpus.DOCUMENT_SEPARATOR):
                for block in document.split(prompts.METRICS_HEADER)[1:]:
                    code = block.split('"""\n', 1)[-1].strip('\n') + '\n'
                    programs.add(code)
                    layers |= corpus.layer_calls(code)
    return layers, programs


def main(argv):
    del argv
    if FLAGS.build_worker:
        build_worker()
        return
    import jax  # pylint: disable=g-import-not-at-top
    from evoprompting import corpus, prompts  # pylint: disable=g-import-not-at-top
    from evoprompting.sandbox import validator  # pylint: disable=g-import-not-at-top
    from evoprompting.tasks import mnist1d  # pylint: disable=g-import-not-at-top
    from lm import checkpoints, serving  # pylint: disable=g-import-not-at-top

    start = time.time()
    if FLAGS.checkpoint == 'default':
        lm = serving.load_default()
    else:
        lm = checkpoints.load_exported(FLAGS.checkpoint)
    print(f'model: {FLAGS.checkpoint}, loaded in {time.time() - start:.1f} s, '
          f'stop strings {lm.stop_strings}')
    known = set().union(*(corpus.layer_calls(corpus.shown(s))
                          for _, s in corpus.read_seeds('mnist1d')))
    seen_programs = set()
    if FLAGS.corpus_dir:
        layers, seen_programs = corpus_layers(FLAGS.corpus_dir)
        known |= layers
        print(f'corpus: {len(seen_programs)} programs, {len(layers)} layer configs')

    rng = np.random.default_rng(FLAGS.seed + PARENT_SEED_OFFSET)
    room = lm.config.max_len - FLAGS.max_new_tokens
    cases = []
    for _ in range(50 * FLAGS.num_prompts):
        if len(cases) == FLAGS.num_prompts:
            break
        pair = [corpus.random_parent(rng) for _ in range(2)]
        if any(p.code in seen_programs for p in pair):
            continue
        examples = [prompts.Example(p.code, prompts.Metrics(
            p.num_params, round(float(rng.uniform(0.5, 0.95)), 3))) for p in pair]
        target = prompts.target_metrics([e.metrics for e in examples])
        if FLAGS.order != 'drawn':
            examples = prompts.nearest_target_last(examples, target)
        if FLAGS.order == 'nearest_first':
            examples.reverse()
        text = prompts.few_shot_prompt(examples, target, corpus.OPENING)
        if len(lm.vocab.encode(text)) > room:
            continue  # Too long for the context with room for a child.
        own = set().union(*(corpus.layer_calls(p.code) for p in pair)) - known
        cases.append({'prompt': text, 'target': target.num_params, 'own': own,
                      'parents': {_ast_key(p.code) for p in pair}})
    if len(cases) < FLAGS.num_prompts:
        sys.exit(f'error: only {len(cases)} prompts fit the context with room for '
                 f'{FLAGS.max_new_tokens} new tokens')
    print(f'{len(cases)} prompts; target sizes {[c["target"] for c in cases]}')

    temps = [t for t in TEMPERATURES for _ in range(FLAGS.samples)]
    settings = [(w, h) for w in map(float, FLAGS.copy_weight)
                for h in (map(int, FLAGS.copy_half_life) if w else [0])]
    summary = []
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
        rows = []  # (case index, temperature, child source, validator ok)
        for i, completions in enumerate(texts):
            for t, completion in zip(temps, completions):
                child = prompts.child_source(corpus.OPENING, completion)
                try:
                    ast.parse(child)
                    parses = True
                except SyntaxError:
                    parses = False
                ok = parses and validator.validate(mnist1d.PREAMBLE + child) is None
                rows.append((i, t, child, parses, ok))
        sizes = iter(build_in_subprocess([r[2] for r in rows if r[4]]))
        built = [next(sizes) if r[4] else None for r in rows]
        print(f'\n{name}: {len(rows)} samples in {sample_s:.0f} s')
        print('temperature | parse | valid | parent-conditioned (of valid) | '
              'control | within 2x (of valid) | a parent verbatim (of valid)')
        pooled = ()
        for t in (*TEMPERATURES, 'all'):
            picked = [(r, n) for r, n in zip(rows, built) if t == 'all' or r[1] == t]
            valid = [(r, n) for r, n in picked if n is not None]
            cond = ctrl = near = same = 0
            for (i, _, child, _, _), n in valid:
                same += _ast_key(child) in cases[i]['parents']
                layers = corpus.layer_calls(child)
                cond += bool(layers & cases[i]['own'])
                other = cases[(i + 1) % len(cases)]['own'] - cases[i]['own']
                ctrl += bool(layers & other)
                near += 0.5 <= n / cases[i]['target'] <= 2.0
            nv = max(1, len(valid))
            print(f'{t!s:>11} | {sum(r[3] for r, _ in picked) / len(picked):5.0%} | '
                  f'{len(valid) / len(picked):5.0%} | {cond / nv:29.0%} | '
                  f'{ctrl / nv:7.0%} | {near / nv:20.0%} | {same / nv:28.0%}')
            if t == 'all':
                pooled = (len(valid) / len(picked), cond / nv, ctrl / nv,
                          near / nv, same / nv)
        ended = sum('class Model' not in r[2][20:] for r in rows) / len(rows)
        print(f'children without a second class statement: {ended:.0%}')
        summary.append(f'copy {copy_weight:g} half-life {half_life}: valid '
                       f'{pooled[0]:.0%}, parent-conditioned {pooled[1]:.0%} '
                       f'(control {pooled[2]:.0%}), within 2x {pooled[3]:.0%}, '
                       f'a parent verbatim {pooled[4]:.0%}')
    print(f'\nSUMMARY lm_children ({len(cases)} prompts x {len(temps)} samples, '
          f'{FLAGS.checkpoint}, order {FLAGS.order}): ' + '; '.join(summary))


if __name__ == '__main__':
    app.run(main)
