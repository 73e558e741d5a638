"""EvoPrompting's proposer: CROSSMUT with a code LM, GETTOP, prompt tuning.

Chen et al. (2023), Algorithms 1 and 2, section 3.3:

* Parents. Round 0's are the scored seeds. Round t's are GETTOP over all
  candidates evaluated before it: the `num_parents` best by fitness that have
  not been parents before (selected parents are retired). With
  `random_parents` (the paper's ablation) they are drawn uniformly from the
  scored, non-retired candidates instead. Parents are recomputed from the
  history when needed, so they need no saved state.
* CROSSMUT. `num_prompts` prompts, each of `num_shots` parents drawn i.i.d.
  uniformly (with replacement) from the round's parents, rendered by
  `evoprompting.prompts` with the paper's target metrics and ending with the
  task's `prompt_opening`; `samples_per_prompt` samples each. The header's
  `val_accuracy` field shows the task's validation metric (its first
  objective; for CLRS the validation score), so every task's prompts share
  the paper's layout. Sample j of every prompt of a round uses temperature
  `temperatures[j]`, drawn uniformly from `temperature_choices` per round.
* Learning (TRAIN, after every round but the last): the soft prompt is
  tuned, starting from the previous round's, on the round's scored children
  that were not selected as the next round's parents (C_EVALED \\ P).

Choices where the paper is silent (each a field of `CrossMutConfig`):
* A tuning example is the child's own prompt with the *child's measured*
  metrics in place of the targets (hindsight relabelling), the target text
  being the child's code: the LM learns to write a program with given
  metrics.
* The soft prompt is first created at the first tuning, initialised from the
  embeddings of the task preamble's tokens; round 0 samples from the plain LM
  as the paper's theta_0 does.
* When no parent is left (every scored candidate retired), the round's
  parents are the best scored candidates, retired or not; a warning says so.
* A prompt longer than the LM's context leaves room for is redrawn (up to
  `max_redraws` times); then its parents are the shortest ones.
* A prompt shows its parents from the farthest to the nearest to the target
  size (`nearest_parent_last`; `prompts.nearest_target_last`), the paper
  giving no order: an LM whose copy prior prefers what it saw last then
  mostly edits the parent whose size the target asks for (lm/README.md). In
  a tuning example the target is the child's size, so the parent shown last
  is the one nearest the child.

Soft prompts are saved as orbax checkpoints `<workdir>/soft_prompts/round_<t>`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

from absl import logging
import jax
import numpy as np

from evoprompting import prompts, search, store
from evoprompting.tasks import base
from lm import checkpoints, prompt_tuning, serving

SOFT_PROMPTS_DIR = 'soft_prompts'
# PROMPTS_DIR/round_<t>.json: each prompt of round t as the LM saw it (its
# text, its parents), by `prompt_id`.
PROMPTS_DIR = 'prompts'


@dataclasses.dataclass(frozen=True)
class CrossMutConfig:
    """EvoPrompting's sampling and tuning settings (defaults: the paper's).

    Attributes:
      num_prompts: prompts per round, m.
      samples_per_prompt: children per prompt, n.
      num_shots: parents per prompt, k.
      num_parents: parents selected per round, p.
      temperature_choices: the mixed-temperature set.
      max_new_tokens: longest child, in tokens.
      random_parents: draw parents at random (ablation) instead of GETTOP.
      tune_prompt: prompt-tune between rounds (False: the ablation).
      soft_prompt_length: soft prompt tokens (paper: 16).
      max_redraws: tries to draw parents whose prompt fits the context.
      nearest_parent_last: show parents from the farthest to the nearest to
        the target size (False: in the order drawn).
    """

    num_prompts: int = 10
    samples_per_prompt: int = 16
    num_shots: int = 2
    num_parents: int = 10
    temperature_choices: tuple[float, ...] = (0.2, 0.6, 0.8, 1.0)
    max_new_tokens: int = 512
    random_parents: bool = False
    tune_prompt: bool = True
    soft_prompt_length: int = 16
    max_redraws: int = 10
    nearest_parent_last: bool = True


def select_parents(history: search.History, round_index: int, *,
                   num_parents: int, random_parents: bool,
                   seed: int) -> list[int]:
    """Ids of round `round_index`'s parents (see the module docstring)."""
    scored = lambda h: [c.id for c, f in zip(h.candidates, h.fitness)
                        if f is not None]
    parents = scored(history.before(0))  # The seeds.
    retired: set[int] = set()
    for t in range(1, round_index + 1):
        retired.update(parents)
        seen = history.before(t)
        if random_parents:
            pool = [i for i in scored(seen) if i not in retired]
            rng = np.random.default_rng([seed, t, 2])
            parents = sorted(rng.choice(pool, min(num_parents, len(pool)),
                                        replace=False).tolist()) if pool else []
        else:
            parents = seen.top(num_parents, exclude=frozenset(retired))
        if not parents:
            logging.warning('Round %d: every scored candidate has been a '
                            'parent; reusing the best ones', t)
            parents = seen.top(num_parents)
    return parents


class CrossMut:
    """The EvoPrompting proposer (a `search.Proposer`)."""

    def __init__(self, *, lm: serving.LanguageModel, task: base.Task,
                 config: CrossMutConfig = CrossMutConfig(), seed: int = 0):
        """`seed` must be the search's (`SearchConfig.seed`): it draws random
        parents in the ablation."""
        self.lm = lm
        self.task = task
        self.config = config
        self.seed = seed
        self.opening = task.prompt_opening
        self.soft_prompt: jax.Array | None = None
        self.workdir = ''
        # (history, round, examples) of the last `_tuning_examples`.
        self._examples: tuple[search.History, int,
                              list[tuple[str, str]]] | None = None

    def start(self, workdir: str, completed_rounds: int) -> None:
        """Restores the soft prompt of the last completed round that has one
        (a later round's, from an interrupted `learn`, is ignored)."""
        self.workdir = workdir
        self.soft_prompt = None
        if not os.path.isdir(os.path.join(workdir, SOFT_PROMPTS_DIR)):
            return
        with self._soft_prompts() as saved:
            done = [t for t in saved.steps() if t < completed_rounds]
            if done:
                self.soft_prompt = saved.restore(done[-1])['soft_prompt']
                logging.info('Restored the soft prompt of round %d', done[-1])

    def _soft_prompts(self) -> checkpoints.CheckpointManager:
        """The soft prompts, one checkpoint per round (its step)."""
        return checkpoints.CheckpointManager(
            os.path.join(self.workdir, SOFT_PROMPTS_DIR))

    def _example(self, candidate: store.Candidate) -> prompts.Example:
        return prompts.Example(
            code=prompts.prompt_code(candidate.source, self.task.preamble),
            metrics=prompts.Metrics(
                num_params=int(candidate.result.params),
                val_accuracy=float(
                    candidate.result.metrics[self.task.objectives[0]])))

    def _prompt(self, history: search.History, parents: Sequence[int],
                target: prompts.Metrics | None = None) -> str:
        shots = [self._example(history.by_id(i)) for i in parents]
        target = target or prompts.target_metrics([s.metrics for s in shots])
        if self.config.nearest_parent_last:
            shots = prompts.nearest_target_last(shots, target)
        return prompts.few_shot_prompt(shots, target, self.opening)

    def _parents(self, history: search.History, round_index: int) -> list[int]:
        return select_parents(history, round_index,
                              num_parents=self.config.num_parents,
                              random_parents=self.config.random_parents,
                              seed=self.seed)

    def propose_phase(self, round_index: int) -> search.Phase:
        """What `propose` does, for the console (`search.Narrating`)."""
        del round_index
        cfg = self.config
        children = cfg.num_prompts * cfg.samples_per_prompt
        tuned = ' and its tuned soft prompt' if self.soft_prompt is not None else ''
        return search.Phase(
            doing=(f'sampling {search.plural(children, "child", "children")}'
                   f' of up to {cfg.max_new_tokens} tokens from '
                   f'{search.plural(cfg.num_prompts, "prompt")} with the '
                   f'LM{tuned}'),
            done=f'{search.plural(children, "proposal")} sampled')

    def learn_phase(self, round_index: int,
                    history: search.History) -> search.Phase | None:
        """What `learn` does, for the console (`search.Narrating`); None
        when it tunes nothing."""
        if not self.config.tune_prompt:
            return None
        examples = len(self._tuning_examples(round_index, history))
        if not examples:
            return None
        children = search.plural(examples, 'child', 'children')
        return search.Phase(
            doing=(f'tuning the soft prompt on {children} '
                   f'({search.plural(self.lm.tuning.num_epochs, "epoch")})'),
            done=f'soft prompt tuned on {children}')

    def propose(self, round_index: int, history: search.History,
                rng: np.random.Generator) -> list[search.Proposal]:
        cfg = self.config
        parents = self._parents(history, round_index)
        room = self.lm.prompt_room(cfg.max_new_tokens, self.soft_prompt)
        fits = lambda text: len(self.lm.vocab.encode(text)) <= room
        drawn: list[list[int]] = []
        texts: list[str] = []
        for _ in range(cfg.num_prompts):
            for _ in range(cfg.max_redraws):
                shots = [int(i) for i in rng.choice(parents, cfg.num_shots)]
                text = self._prompt(history, shots)
                if fits(text):
                    break
            else:
                shortest = min(parents, key=lambda i: len(
                    history.by_id(i).source))
                shots = [shortest] * cfg.num_shots
                text = self._prompt(history, shots)
                if not fits(text):
                    raise search.SearchError(
                        f'even a prompt of the shortest parent (id {shortest}) '
                        f'is longer than the {room} tokens the LM leaves for '
                        'prompts; use an LM with a longer context or lower '
                        'max_new_tokens')
            drawn.append(shots)
            texts.append(text)
        temperatures = [float(t) for t in rng.choice(
            cfg.temperature_choices, cfg.samples_per_prompt)]
        key = jax.random.key(int(rng.integers(2**31)))
        if self.workdir:
            folder = os.path.join(self.workdir, PROMPTS_DIR)
            os.makedirs(folder, exist_ok=True)
            store.write_json_atomic(
                os.path.join(folder, f'round_{round_index}.json'),
                [{'prompt_id': p, 'parents': shots, 'text': text}
                 for p, (shots, text) in enumerate(zip(drawn, texts))])
        samples = self.lm.generate(
            texts, num_samples=cfg.samples_per_prompt,
            max_new_tokens=cfg.max_new_tokens, temperatures=temperatures,
            rng=key, soft_prompt=self.soft_prompt)
        return [search.Proposal(
            source=self.task.preamble + '\n\n' +
            prompts.child_source(self.opening, completion),
            parents=tuple(drawn[p]), prompt_id=p, temperature=temperatures[j])
            for p, row in enumerate(samples) for j, completion in enumerate(row)]

    def _tuning_examples(self, round_index: int, history: search.History
                         ) -> list[tuple[str, str]]:
        """(prompt, target) pairs of the round's scored children that are not
        the next round's parents (see the module docstring). Kept for the
        same `history` object, so that `learn_phase` and `learn` select (and
        warn) once."""
        if (self._examples is not None and self._examples[0] is history
                and self._examples[1] == round_index):
            return self._examples[2]
        next_parents = set(self._parents(history, round_index + 1))
        examples = []
        for c, f in zip(history.candidates, history.fitness):
            if c.round != round_index or f is None or c.id in next_parents:
                continue
            child = self._example(c)
            prompt = self._prompt(history, c.parents, target=child.metrics)
            examples.append((prompt, child.code[len(self.opening):]))
        self._examples = (history, round_index, examples)
        return examples

    def learn(self, round_index: int, history: search.History,
              rng: np.random.Generator) -> Mapping[str, float]:
        if not self.config.tune_prompt:
            return {}
        examples = self._tuning_examples(round_index, history)
        if not examples:
            logging.info('Round %d: no child to tune the soft prompt on',
                         round_index)
            return {'prompt_tuning/examples': 0.0}
        if self.soft_prompt is None:
            self.soft_prompt = prompt_tuning.init_from_text(
                self.lm.params['embedding'],
                self.lm.vocab.encode(self.task.preamble),
                self.config.soft_prompt_length)
        self.soft_prompt, metrics = self.lm.tune(
            self.soft_prompt, examples, jax.random.key(int(rng.integers(2**31))))
        with self._soft_prompts() as saved:
            saved.save(round_index, {'soft_prompt': self.soft_prompt})
        logging.info('Round %d: soft prompt loss per epoch %s', round_index,
                     ', '.join('%.3f' % l for l in metrics['epoch_loss']))
        return {'prompt_tuning/examples': float(len(examples)),
                'prompt_tuning/loss': float(metrics['epoch_loss'][-1])}
