"""The search loop: EvoPrompting's Algorithm 1 over a durable, resumable store.

    evaluate the seeds                                   (round -1)
    for t in 0 .. num_rounds-1:
        proposals <- proposer.propose(t, history)        (CROSSMUT, or a baseline)
        evaluate every proposal in the sandbox           (FILTERANDEVAL)
        if t < num_rounds-1: proposer.learn(t, history)  (GETTOP + prompt tuning)
    return the top `num_top` children by fitness

The loop owns what every method shares: the seeds, the sandbox, the store,
duplicate detection, fitness, progress, summaries and resumption. What makes
a method (which parents, how children are written, what is learnt between
rounds) is a `Proposer`, injected (EvoPrompting: `evoprompting.crossmut`;
baselines: `evoprompting.baselines`).

Fitness (section 3.3): `-(params * val_error)` for a child whose validation
error is below `alpha`; other children, and duplicates, are not scored. The
validation error is 1 - the task's first objective (`Task.objectives`).

Duplicates, one rule for every method: a proposal whose program, in the
canonical form (`canonical`: no docstrings, comments, layout or imports the
task's preamble provides), equals an earlier candidate's (seeds included) is
recorded with `duplicate_of` and the earlier result, and is not trained
again. It counts toward the sample budget, as in the paper.

Nothing lost. Every workdir file is written durably:

    config.gin, run_metadata.json  written by `main` at start
    search_config.json             this loop's settings, the task's name and
                                   objectives; a later run must match
    candidates.jsonl               every candidate, fsynced (`store.py`)
    rounds/round_<t>.json          the round's proposals, written atomically
                                   before the first of them is evaluated
    state.json                     rounds completed (replaced atomically)
    timings.jsonl                  each round's seconds proposing, evaluating
                                   and learning (a resumed run's ETA starts
                                   from them)
    <proposer files>               EvoPrompting's: prompts/round_<t>.json (the
                                   round's prompt texts by prompt_id) and
                                   soft_prompts/ (orbax, one per round)

A run started again on the same workdir skips the rounds `state.json` says
are complete, reuses a round's saved proposals, evaluates only proposals
without a record, and repeats an interrupted `learn`. Every random choice
comes from `round_rng(seed, round, stage)`, and selection orders candidates
by (round, proposal), never by completion order, so a resumed run ends with
the same population as an uninterrupted one.

The console (absl INFO lines) says what the search does when each step
starts: a `Narrating` proposer's LM sampling and tuning are announced (and
repeated every `HEARTBEAT_S` while they run), every evaluated child has a
line with a bar, and the ETA of the whole search (`estimate_remaining`)
follows each phase: evaluations left at the measured rate plus the rounds
left to propose and learn at their measured times; unknown until measured.
"""

from __future__ import annotations

import ast
import dataclasses
import contextlib
import json
import os
import textwrap
import threading
import time
from typing import (Any, Callable, Iterator, Mapping, Protocol, Sequence,
                    runtime_checkable)

from absl import logging
import numpy as np

from evoprompting import distributed, selection, store, summaries
from evoprompting.sandbox import evaluator
from evoprompting.tasks import base

ROUNDS_DIR = 'rounds'
# One JSON line per round run: where its wall time went (`Search.run`).
TIMINGS_FILE = 'timings.jsonl'
# Seconds between the lines that say a long step (LM sampling or tuning)
# is still running.
HEARTBEAT_S = 30.0
SEED_ROUND = -1


class SearchError(Exception):
    """The search cannot go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Settings every method shares.

    Attributes:
      method: a label for reports ('evoprompting', 'random_search', ...).
      num_rounds: rounds of evolution, T (paper: 10).
      alpha: children whose validation error is not below alpha are not
        scored (paper: 0.5).
      seed: seeds every random choice of the search.
      training_seed: seed every program is trained with.
      num_top: size of the final population returned (paper: p = 10).
      hypervolume_reference: (error, log10 params) bounding the Pareto
        hypervolume in summaries and reports.
    """

    method: str = 'evoprompting'
    num_rounds: int = 10
    alpha: float = 0.5
    seed: int = 0
    training_seed: int = 0
    num_top: int = 10
    hypervolume_reference: tuple[float, float] = (1.0, 7.0)

    def __post_init__(self):
        if self.num_rounds < 1:
            raise ValueError(f'num_rounds must be >= 1, got {self.num_rounds}')
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f'alpha must be in (0, 1], got {self.alpha}')


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A program to evaluate, with where it came from.

    Attributes:
      source: the complete program (task preamble included).
      parents: candidate ids shown to (or mutated by) its author.
      prompt_id: which prompt of the round wrote it, if any.
      temperature: the sampling temperature, if sampled.
    """

    source: str
    parents: tuple[int, ...] = ()
    prompt_id: int | None = None
    temperature: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), 'parents': list(self.parents)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Proposal:
        return cls(**{**d, 'parents': tuple(d['parents'])})


@dataclasses.dataclass(frozen=True)
class History:
    """Everything evaluated so far (the paper's G, with the seeds), in the
    search's own order: by (round, proposal).

    Attributes:
      candidates: the candidates, seeds first.
      fitness: `fitness[i]` of `candidates[i]`, None when not scored.
    """

    candidates: tuple[store.Candidate, ...]
    fitness: tuple[float | None, ...]

    @classmethod
    def of(cls, candidates: Sequence[store.Candidate], alpha: float,
           score_key: str = selection.DEFAULT_OBJECTIVES[0]) -> History:
        """Orders `candidates`; fitness from `metrics[score_key]` (the task's
        validation metric)."""
        ordered = sorted(candidates, key=lambda c: (c.round, c.proposal, c.id))
        return cls(tuple(ordered), tuple(
            None if c.duplicate_of is not None
            else selection.fitness(c.result, alpha=alpha, accuracy_key=score_key)
            for c in ordered))

    def by_id(self, candidate_id: int) -> store.Candidate:
        for c in self.candidates:
            if c.id == candidate_id:
                return c
        raise KeyError(candidate_id)

    def before(self, round_index: int) -> History:
        """The part evaluated before `round_index` (seeds are round -1)."""
        keep = [i for i, c in enumerate(self.candidates) if c.round < round_index]
        return History(tuple(self.candidates[i] for i in keep),
                       tuple(self.fitness[i] for i in keep))

    def top(self, p: int, *, exclude: frozenset[int] = frozenset(),
            children_only: bool = False) -> list[int]:
        """Ids of the p best scored candidates not in `exclude` (GETTOP)."""
        fitness = [None if (c.id in exclude or
                            (children_only and c.round == SEED_ROUND)) else f
                   for c, f in zip(self.candidates, self.fitness)]
        return [self.candidates[i].id for i in selection.get_top(fitness, p)]


class Proposer(Protocol):
    """A search method's variation and learning (EvoPrompting or a baseline)."""

    def start(self, workdir: str, completed_rounds: int) -> None:
        """Called once before the first round run in this process; restores
        whatever `learn` saved in `workdir` for the completed rounds."""

    def propose(self, round_index: int, history: History,
                rng: np.random.Generator) -> list[Proposal]:
        """The round's children, to be evaluated in this order."""

    def learn(self, round_index: int, history: History,
              rng: np.random.Generator) -> Mapping[str, float]:
        """After round `round_index` is evaluated (not after the last round):
        updates and saves the method's state; returns scalars to log."""


def round_rng(seed: int, round_index: int, stage: str) -> np.random.Generator:
    """The generator of one stage ('propose', 'learn') of one round."""
    return np.random.default_rng([seed, round_index + 1,
                                  {'propose': 0, 'learn': 1}[stage]])


def canonical(source: str, preamble: str) -> str:
    """The program in one form, for duplicate detection: parsed and printed
    again (no comments, no layout), without docstrings and without the
    top-level imports that the task's `preamble` provides. A seed file (its
    module docstring, `import flax.linen as nn`) and a child that repeats it
    have the same form. A source that does not parse is only stripped."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source.strip()
    provided = {ast.dump(node) for node in ast.parse(preamble).body}
    tree.body = [node for node in tree.body if ast.dump(node) not in provided]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)) and _has_docstring(node):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _has_docstring(node: ast.AST) -> bool:
    first = node.body[0] if node.body else None
    return (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str))


def _check_search_config(workdir: str, config: SearchConfig, task: base.Task,
                         allow_change: bool) -> None:
    """Writes search_config.json, refusing a workdir of another search."""
    path = os.path.join(workdir, store.SEARCH_CONFIG_FILE)
    current = {**dataclasses.asdict(config), 'task': task.name,
               'objectives': list(task.objectives)}
    current['hypervolume_reference'] = list(config.hypervolume_reference)
    if os.path.exists(path):
        with open(path, encoding='utf-8') as f:
            stored = json.load(f)
        # Workdirs from before objectives were recorded are MNIST-1D's.
        stored.setdefault('objectives', list(selection.DEFAULT_OBJECTIVES))
        changed = sorted(k for k in set(stored) | set(current)
                         if stored.get(k) != current.get(k))
        if changed and not allow_change:
            details = ', '.join(f'{k}: {stored.get(k)!r} -> {current.get(k)!r}'
                                for k in changed)
            raise SearchError(
                f'{workdir} holds a search with other settings ({details}). '
                'Use another --workdir, or pass --allow_config_change to go on '
                'with the new settings.')
    store.write_json_atomic(path, current)


@dataclasses.dataclass(frozen=True)
class Phase:
    """A long step of a proposer, in the console's words (see `Narrating`).

    Attributes:
      doing: what starts, e.g. 'sampling 160 children ... with the LM'.
      done: what was done, e.g. '160 proposals sampled'; the loop adds the
        time it took.
    """

    doing: str
    done: str


@runtime_checkable
class Narrating(Protocol):
    """Optional for a `Proposer` whose steps take long (an LM's sampling and
    tuning): says what each step is about to do, so that the console shows
    it when the step starts (and every `heartbeat_s` while it runs). The
    console and the ETA take a proposer without these methods (the LM-free
    baselines) for one whose steps are instant."""

    def propose_phase(self, round_index: int) -> Phase:
        """What `propose(round_index, ...)` will do."""

    def learn_phase(self, round_index: int, history: History) -> Phase | None:
        """What `learn(round_index, history, ...)` will do; None when it has
        nothing to do worth announcing."""


def read_timings(workdir: str) -> list[dict[str, Any]]:
    """The rounds' records of TIMINGS_FILE (`Search._record_timing`), oldest
    first; [] without the file. A line cut short by a crash is skipped."""
    path = os.path.join(workdir, TIMINGS_FILE)
    if not os.path.exists(path):
        return []
    timings = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            try:
                timings.append(json.loads(line))
            except ValueError:
                continue
    return timings


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The time the rest of a search takes (`estimate_remaining`).

    Attributes:
      seconds: the time of the remaining work whose speed is measured.
      unmeasured: remaining phases not measured yet ('evaluating',
        'proposing', 'learning'); the ETA is then unknown.
    """

    seconds: float
    unmeasured: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return not self.unmeasured

    def __str__(self) -> str:
        if self.known:
            return f'ETA {duration(self.seconds)}'
        if 'evaluating' in self.unmeasured or self.seconds <= 0:
            return 'ETA unknown'
        return (f'ETA unknown (> {duration(self.seconds)}; '
                f'{" and ".join(self.unmeasured)} not timed yet)')


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def estimate_remaining(*, evaluations_done: int,
                       evaluations_total: int | None,
                       evaluations_per_min: float | None,
                       rounds_to_propose: int, propose_s: Sequence[float],
                       rounds_to_learn: int, learn_s: Sequence[float]
                       ) -> Estimate:
    """The rest of a search: the evaluations left at the measured rate
    (evaluations per minute of evaluating, not of wall time), plus each round
    left to propose and to learn at the mean time of the rounds measured
    (`propose_s`, `learn_s`: seconds per round). A phase that remains but has
    no measurement (no rate, no round measured, `evaluations_total` None) is
    named in `unmeasured`, never guessed."""
    seconds, unmeasured = 0.0, []
    left = (None if evaluations_total is None
            else max(0, evaluations_total - evaluations_done))
    if left is None or (left and not evaluations_per_min):
        unmeasured.append('evaluating')
    elif left:
        seconds += 60.0 * left / evaluations_per_min
    for name, rounds, measured in (('proposing', rounds_to_propose, propose_s),
                                   ('learning', rounds_to_learn, learn_s)):
        per_round = _mean(measured)
        if rounds > 0 and per_round is None:
            unmeasured.append(name)
        elif rounds > 0:
            seconds += rounds * per_round
    return Estimate(seconds, tuple(unmeasured))


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 child', '4 children'."""
    return f'{n} {word if n == 1 else words or word + "s"}'


def duration(seconds: float) -> str:
    """Seconds for people: '3.2 s', '41 s', '3 min 20 s', '25 min',
    '2 h 05 min'."""
    seconds = max(0.0, seconds)
    if seconds < 9.95:
        return f'{seconds:.1f} s'
    whole = round(seconds)
    if whole < 60:
        return f'{whole} s'
    if whole < 600:
        return f'{whole // 60} min {whole % 60:02d} s'
    minutes = round(seconds / 60)
    if minutes < 60:
        return f'{minutes} min'
    return f'{minutes // 60} h {minutes % 60:02d} min'


class _Progress:
    """What the console shows of a search's progress: one line per
    evaluated child (a bar, the evaluation rate, the ETA of the whole
    search) and the ETA after each phase.

    The ETA (`estimate_remaining`) counts the evaluations left at this
    session's rate of evaluation (before its first evaluation: the rate of
    the rounds in TIMINGS_FILE) and the rounds left to propose and to learn
    at the mean time of the rounds measured, in TIMINGS_FILE and in this
    session. `instant`: a proposer that does not narrate (`Narrating`) is
    taken to propose and learn in no time until measured.
    """

    def __init__(self, *, num_rounds: int, num_seeds: int, done: int,
                 completed_rounds: int, timings: Sequence[Mapping[str, Any]],
                 children_per_round: int | None, instant: bool):
        self.num_rounds, self.num_seeds = num_rounds, num_seeds
        self.done, self.start_done = done, done
        self.start = time.monotonic()
        self.children_per_round = children_per_round
        self.instant = instant
        # The next round to propose and the next to learn.
        self.next_propose = self.next_learn = completed_rounds
        # Seconds per round of the rounds measured; old records have no
        # `proposed`/`learnt` and count as such.
        self.propose_s = [t['propose_s'] for t in timings
                          if t.get('proposed', True)]
        self.learn_s = [t['learn_s'] for t in timings if t.get('learnt', True)]
        recorded = [(t['evaluations'], t['evaluate_s']) for t in timings
                    if t['evaluate_s'] > 0]
        seconds = sum(s for _, s in recorded)
        self.recorded_per_min = (60.0 * sum(n for n, _ in recorded) / seconds
                                 if seconds > 0 else None)
        # This session's evaluating: finished seconds, the running phase's
        # start and the evaluations recorded.
        self.evaluating_s, self.evaluating_since = 0.0, None
        self.evaluated = 0

    @property
    def total(self) -> int | None:
        """Evaluations of the whole search (every round proposing as many
        children as the last one proposed); None before any round."""
        if self.children_per_round is None:
            return None
        return self.num_seeds + self.children_per_round * self.num_rounds

    @property
    def per_minute(self) -> float:
        """Evaluations per minute of wall time in this session."""
        elapsed = time.monotonic() - self.start
        return 60.0 * (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    @property
    def evaluations_per_min(self) -> float | None:
        """Evaluations per minute of evaluating: this session's, else the
        recorded rounds'."""
        seconds = self.evaluating_s
        if self.evaluating_since is not None:
            seconds += time.monotonic() - self.evaluating_since
        if self.evaluated and seconds > 0:
            return 60.0 * self.evaluated / seconds
        return self.recorded_per_min

    def mean_propose_s(self) -> float | None:
        return _mean(self.propose_s)

    def mean_learn_s(self) -> float | None:
        return _mean(self.learn_s)

    def estimate(self) -> Estimate:
        assumed = [0.0] if self.instant else []
        return estimate_remaining(
            evaluations_done=self.done, evaluations_total=self.total,
            evaluations_per_min=self.evaluations_per_min,
            rounds_to_propose=self.num_rounds - self.next_propose,
            propose_s=self.propose_s or assumed,
            rounds_to_learn=self.num_rounds - 1 - self.next_learn,
            learn_s=self.learn_s or assumed)

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Around an evaluation phase: its time makes the rate."""
        self.evaluating_since = time.monotonic()
        try:
            yield
        finally:
            self.evaluating_s += time.monotonic() - self.evaluating_since
            self.evaluating_since = None

    def proposed(self, round_index: int, children: int,
                 seconds: float | None) -> None:
        """Round `round_index` has its proposals; `seconds`: the time taken
        to propose them, None when they were saved before a restart."""
        self.next_propose = round_index + 1
        self.children_per_round = children
        if seconds is not None:
            self.propose_s.append(seconds)

    def learnt(self, round_index: int, seconds: float) -> None:
        self.next_learn = round_index + 1
        self.learn_s.append(seconds)

    def step(self, label: str, result: base.EvalResult) -> None:
        self.done += 1
        self.evaluated += 1
        total = self.total or self.num_seeds
        width = 20
        filled = min(width, int(width * self.done / max(total, 1)))
        rate = self.evaluations_per_min
        logging.info('[%s%s] %d/%d %s: %s %s | %s evals/min | %s',
                     '#' * filled, '.' * (width - filled), self.done, total,
                     label, result.status.value, _short(result),
                     '?' if rate is None else f'{rate:.1f}', self.estimate())


@contextlib.contextmanager
def _heartbeat(label: str, doing: str, expected_s: float | None,
               every_s: float) -> Iterator[None]:
    """Logs '<label>: still <doing>, 30 s so far, about 11 s left' every
    `every_s` seconds while the block runs (`expected_s`: the time the step
    took before, if known)."""
    stop = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not stop.wait(every_s):
            elapsed = time.monotonic() - start
            left = (f', about {duration(expected_s - elapsed)} left'
                    if expected_s is not None and expected_s > elapsed else '')
            logging.info('%s: still %s, %s so far%s', label, doing,
                         duration(elapsed), left)

    thread = threading.Thread(target=beat, name='progress-heartbeat',
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Search:
    """One search in one workdir (see the module docstring). Use `run`."""

    def __init__(self, *, task: base.Task, proposer: Proposer,
                 sandbox: evaluator.Sandbox, config: SearchConfig,
                 workdir: str,
                 writer: summaries.TensorBoardWriter | None = None,
                 on_change: Callable[[], None] = lambda: None,
                 processes: int = 1, heartbeat_s: float = HEARTBEAT_S):
        """`on_change` is called after every write to the workdir (each
        recorded candidate, saved proposals, round summaries and state);
        `processes` evaluate (see `run`), recorded with the timings; a
        `Narrating` proposer's long steps log a line every `heartbeat_s`."""
        self.task = task
        self.proposer = proposer
        self.sandbox = sandbox
        self.config = config
        self.workdir = workdir
        self.writer = writer
        self.on_change = on_change
        self.processes = processes
        self.heartbeat_s = heartbeat_s
        self.store = store.CandidateStore.open(workdir)

    @property
    def history(self) -> History:
        return History.of(self.store.candidates, self.config.alpha,
                          self.task.objectives[0])

    def evaluate(self, round_index: int, proposals: Sequence[Proposal],
                 progress: _Progress | None = None) -> None:
        """Records every proposal of a round that has no record yet.

        A proposal equal (in `canonical` form) to a candidate of an earlier round
        or to an earlier proposal of this round is a duplicate: recorded with
        the original's result once that exists, never trained.
        """
        recorded = {c.proposal for c in self.store if c.round == round_index}
        form = lambda source: canonical(source, self.task.preamble)
        earlier: dict[str, int] = {}  # Canonical form -> candidate id.
        for c in self.store:
            if c.round < round_index:
                earlier.setdefault(form(c.source), c.id)
        twin_of_candidate: dict[int, int] = {}  # Proposal -> candidate id.
        twin_of_proposal: dict[int, int] = {}  # Proposal -> earlier proposal.
        first: dict[str, int] = {}
        for i, proposal in enumerate(proposals):
            key = form(proposal.source)
            if key in earlier:
                twin_of_candidate[i] = earlier[key]
            elif key in first:
                twin_of_proposal[i] = first[key]
            else:
                first[key] = i
        to_run = [i for i in range(len(proposals)) if i not in recorded
                  and i not in twin_of_candidate and i not in twin_of_proposal]

        def record(i: int, result: base.EvalResult,
                   duplicate_of: int | None = None) -> None:
            p = proposals[i]
            self.store.append(store.Candidate(
                id=len(self.store), round=round_index, source=p.source,
                result=result, parents=p.parents, prompt_id=p.prompt_id,
                temperature=p.temperature, duplicate_of=duplicate_of,
                proposal=i))
            self.on_change()
            if progress:
                label = (f'seed {i}' if round_index == SEED_ROUND
                         else f'round {round_index} child {i}')
                if duplicate_of is not None:
                    label += f' (duplicate of candidate {duplicate_of})'
                progress.step(label, result)

        with progress.evaluating() if progress else contextlib.nullcontext():
            self.sandbox.evaluate(
                [proposals[i].source for i in to_run],
                [self.config.training_seed] * len(to_run),
                on_result=lambda j, result: record(to_run[j], result))
        ids = {c.proposal: c.id for c in self.store if c.round == round_index}
        for i in range(len(proposals)):
            if i in recorded or i in to_run:
                continue
            original = twin_of_candidate.get(i)
            if original is None:
                original = ids[twin_of_proposal[i]]
            record(i, self.store.candidates[original].result, original)

    def _narrating(self) -> Narrating | None:
        return self.proposer if isinstance(self.proposer, Narrating) else None

    def _proposals(self, round_index: int,
                   progress: _Progress) -> tuple[list[Proposal], bool]:
        """The round's proposals: saved ones, or new ones saved first; and
        whether they were proposed now (not saved before a restart)."""
        folder = os.path.join(self.workdir, ROUNDS_DIR)
        path = os.path.join(folder, f'round_{round_index}.json')
        header = (f'Round {round_index} ({round_index + 1} of '
                  f'{self.config.num_rounds})')
        if os.path.exists(path):
            with open(path, encoding='utf-8') as f:
                proposals = [Proposal.from_json(d) for d in json.load(f)]
            progress.proposed(round_index, len(proposals), None)
            logging.info('%s: %s saved before the restart, reused; %s',
                         header, plural(len(proposals), 'proposal'),
                         progress.estimate())
            return proposals, False
        narrating = self._narrating()
        phase = narrating.propose_phase(round_index) if narrating else None
        proposals, seconds = self._timed(
            header, round_index, phase, progress.mean_propose_s(),
            lambda: self.proposer.propose(
                round_index, self.history,
                round_rng(self.config.seed, round_index, 'propose')))
        os.makedirs(folder, exist_ok=True)
        store.write_json_atomic(path, [p.to_json() for p in proposals])
        self.on_change()
        progress.proposed(round_index, len(proposals), seconds)
        if phase:
            each = (f' ({duration(seconds / len(proposals))} each)'
                    if proposals else '')
            logging.info('Round %d: %s in %s%s, saved; %s', round_index,
                         phase.done, duration(seconds), each,
                         progress.estimate())
        else:
            logging.info('%s: %s from %s in %s, saved; %s', header,
                         plural(len(proposals), 'proposal'),
                         self.config.method, duration(seconds),
                         progress.estimate())
        return proposals, True

    def _learn(self, round_index: int,
               progress: _Progress) -> Mapping[str, float]:
        """`proposer.learn` after round `round_index`, announced when the
        proposer narrates."""
        history = self.history
        narrating = self._narrating()
        phase = (narrating.learn_phase(round_index, history) if narrating
                 else None)
        learnt, seconds = self._timed(
            f'Round {round_index}', round_index, phase, progress.mean_learn_s(),
            lambda: self.proposer.learn(
                round_index, history,
                round_rng(self.config.seed, round_index, 'learn')))
        progress.learnt(round_index, seconds)
        if phase:
            logging.info('Round %d: %s in %s', round_index, phase.done,
                         duration(seconds))
        return learnt

    def _timed(self, header: str, round_index: int, phase: Phase | None,
               mean_s: float | None, step: Callable[[], Any]
               ) -> tuple[Any, float]:
        """(`step()`, its seconds): announced first when the proposer
        narrates (`phase`), with a heartbeat line while it runs."""
        if phase:
            logging.info('%s: %s...', header, phase.doing)
        start = time.monotonic()
        with (_heartbeat(f'Round {round_index}', phase.doing, mean_s,
                         self.heartbeat_s)
              if phase else contextlib.nullcontext()):
            result = step()
        return result, time.monotonic() - start

    def _children_per_round(self) -> int | None:
        """Proposals of the latest round saved (a resumed run's guess of
        every round's, until a round is proposed)."""
        folder = os.path.join(self.workdir, ROUNDS_DIR)
        for t in reversed(range(self.config.num_rounds)):
            path = os.path.join(folder, f'round_{t}.json')
            if os.path.exists(path):
                with open(path, encoding='utf-8') as f:
                    return len(json.load(f))
        return None

    def run(self) -> list[store.Candidate]:
        """Runs (or resumes) the search; returns the top children, best first."""
        state = store.read_state(self.workdir) or {'completed_rounds': 0}
        completed = state['completed_rounds']
        try:
            seeds = self.task.seed_programs()
        except (FileNotFoundError, ValueError) as e:
            raise SearchError(f'the seed programs: {e}') from None
        if completed >= self.config.num_rounds:
            logging.info('%s: all %d rounds are complete', self.workdir,
                         self.config.num_rounds)
            return self._top()
        if self.task.seeds_dir and not any(c.round == SEED_ROUND
                                           for c in self.store):
            check_seeds(seeds, self.task.seeds_dir, self.sandbox)
        progress = _Progress(
            num_rounds=self.config.num_rounds, num_seeds=len(seeds),
            done=len(self.store), completed_rounds=completed,
            timings=read_timings(self.workdir),
            children_per_round=self._children_per_round(),
            instant=self._narrating() is None)
        if len(self.store):
            logging.info('Resuming %s: %d candidates recorded, %d of %d rounds '
                         'complete; %s', self.workdir, len(self.store),
                         completed, self.config.num_rounds, progress.estimate())
        recorded = sum(c.round == SEED_ROUND for c in self.store)
        if recorded == len(seeds):
            logging.info('All %d seed programs of %s are recorded', len(seeds),
                         self.task.name)
        else:
            logging.info('Evaluating %d of %d seed programs of %s',
                         len(seeds) - recorded, len(seeds), self.task.name)
        self.evaluate(SEED_ROUND, [Proposal(s.source) for s in seeds], progress)
        if completed == 0:
            self._summarise(SEED_ROUND, {}, progress.estimate())
        if not any(f is not None for f in self.history.fitness):
            raise SearchError(
                'no seed program was scored (each failed or has validation '
                f'error >= alpha={self.config.alpha}); see '
                f'{self.store.path} for their statuses')
        self.proposer.start(self.workdir, completed)
        for t in range(completed, self.config.num_rounds):
            round_start = time.monotonic()
            proposals, proposed_now = self._proposals(t, progress)
            proposed = time.monotonic()
            done_before = progress.done
            self.evaluate(t, proposals, progress)
            evaluated = time.monotonic()
            scalars = {'speed/evaluations_per_min': progress.per_minute,
                       'speed/round_minutes': (evaluated - round_start) / 60}
            learnt = t < self.config.num_rounds - 1
            if learnt:
                scalars.update(self._learn(t, progress))
            self._record_timing(t, propose_s=proposed - round_start,
                                evaluate_s=evaluated - proposed,
                                learn_s=time.monotonic() - evaluated,
                                evaluations=progress.done - done_before,
                                proposed=proposed_now, learnt=learnt)
            self._summarise(t, scalars, progress.estimate() if learnt else None)
            store.write_state(self.workdir, {'completed_rounds': t + 1})
            self.on_change()
        return self._top()

    def _record_timing(self, round_index: int, **timing: float | bool) -> None:
        """Appends where round `round_index`'s wall time went to
        TIMINGS_FILE: sampling the LM (`propose_s`, about 0 when the
        proposals were saved before a restart: then `proposed` is false),
        evaluating (`evaluate_s`, with the number of `evaluations` recorded)
        and tuning the LM (`learn_s`; `learnt` is false after the last
        round, which does not learn). A resumed run's ETA starts from them."""
        line = json.dumps({'round': round_index, **timing,
                           'processes': self.processes})
        with open(os.path.join(self.workdir, TIMINGS_FILE), 'a',
                  encoding='utf-8') as f:
            f.write(line + '\n')

    def _summarise(self, round_index: int, scalars: Mapping[str, float],
                   eta: Estimate | None = None) -> None:
        """Logs and writes the round's statistics (`eta`: of the rest of the
        search, logged when given)."""
        stats = summaries.round_stats(
            self.store.candidates, round_index, alpha=self.config.alpha,
            reference=self.config.hypervolume_reference,
            objectives=self.task.objectives)
        logging.info(
            '%s done: %s, %d scored, best fitness so far %s, '
            'hypervolume %.3f%s%s',
            'Seeds' if round_index == SEED_ROUND else f'Round {round_index}',
            plural(stats.num_children, 'child', 'children'), stats.num_scored, stats.best_fitness,
            stats.hypervolume_test,
            ''.join(f', {k}={v:.3g}' for k, v in scalars.items()),
            '' if eta is None else f'; {eta}')
        if self.writer is not None:
            self.writer.write_round(stats, candidates=self.store.candidates,
                                    extra_scalars=scalars)

    def _top(self) -> list[store.Candidate]:
        history = self.history
        return [history.by_id(i) for i in
                history.top(self.config.num_top, children_only=True)]

    def close(self) -> None:
        self.store.close()


def run(*, task: base.Task, proposer: Proposer, sandbox: evaluator.Sandbox,
        config: SearchConfig, workdir: str,
        allow_config_change: bool = False,
        on_change: Callable[[], None] = lambda: None,
        cluster: distributed.Cluster | None = None
        ) -> list[store.Candidate]:
    """Runs or resumes a search in `workdir`; the main binary's job.

    `on_change` is called after every write to the workdir (see `Search`).
    With a `cluster` of several processes, this is process 0's job: it runs
    the search and spreads evaluations over all of them (the others serve
    their share, `distributed.serve`, and never build a proposer or LM).

    Takes ownership of `sandbox` (closed on return). Writes TensorBoard
    summaries to `<workdir>/tensorboard` after the seeds and after every
    round. Returns the top `config.num_top` children by fitness, best first,
    and prints them.

    Raises:
      SearchError: `workdir` holds a search with other settings (unless
        `allow_config_change`), or no seed program could be scored.
    """
    if cluster is not None:
        if not cluster.is_driver:
            raise ValueError(f'search.run is process 0\'s job, not process '
                             f'{cluster.process_id}\'s (distributed.serve)')
        sandbox = distributed.ClusterSandbox(sandbox, cluster)
    os.makedirs(workdir, exist_ok=True)
    with sandbox:
        _check_search_config(workdir, config, task, allow_config_change)
        state = store.read_state(workdir)
        writer = summaries.TensorBoardWriter(
            workdir, alpha=config.alpha,
            purge_step=state['completed_rounds'] if state else SEED_ROUND,
            objectives=task.objectives)
        search = Search(task=task, proposer=proposer, sandbox=sandbox,
                        config=config, workdir=workdir, writer=writer,
                        on_change=on_change,
                        processes=cluster.num_processes if cluster else 1)
        try:
            top = search.run()
            history = search.history
        finally:
            search.close()
            writer.close()
    print(format_top(top, task.objectives), flush=True)
    print(closing_note(history, task, workdir), flush=True)
    return top


BEST_PROGRAM_FILE = 'best_program.py'


def check_seeds(seeds: Sequence[base.SeedProgram], folder: str,
                sandbox: evaluator.Sandbox) -> None:
    """Builds each seed in the sandbox (validated, built on abstract
    values, not trained) before anything is trained.

    Raises:
      SearchError: naming every seed file that does not parse, is refused,
        does not build under the task's contract or is too large.
    """
    logging.info('Checking %d seed programs of %s', len(seeds), folder)
    results = sandbox.evaluate([s.source for s in seeds], [0] * len(seeds),
                               build_only=True)
    failed = [f'{os.path.join(folder, s.name + ".py")}: {r.status.value}: '
              f'{r.message}' for s, r in zip(seeds, results) if not r.ok]
    if failed:
        raise SearchError('seed programs that cannot start a search:\n  '
                          + '\n  '.join(failed))


def closing_note(history: History, task: base.Task, workdir: str) -> str:
    """The best program overall (seeds included), written to
    `<workdir>/best_program.py`, and the commands to look at the run."""
    scored = [(f, c) for c, f in zip(history.candidates, history.fitness)
              if f is not None]
    lines = []
    if scored:
        fitness, best = max(scored, key=lambda fc: (fc[0], -fc[1].id))
        seed_names = [s.name for s in task.seed_programs()]
        what = (f'seed {seed_names[best.proposal]}' if best.round == SEED_ROUND
                else f'round {best.round} child {best.proposal}')
        val, test = task.objectives
        metrics = best.result.metrics
        path = os.path.join(workdir, BEST_PROGRAM_FILE)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(best.source)
        lines.append(
            f'Best program overall: candidate {best.id} ({what}), fitness '
            f'{fitness:,.1f}, {best.result.params:,} parameters, {val} '
            f'{metrics[val]:.3f}, {test} {metrics.get(test, float("nan")):.3f}; '
            f'written to {path}')
    lines += [f'Workdir: {workdir}', 'Next:',
              f'  python -m evoprompting.report --workdir={workdir} '
              f'--out={os.path.join(workdir, "report")}',
              f'  tensorboard --logdir={os.path.join(workdir, summaries.TENSORBOARD_DIR)}']
    return '\n'.join(lines)


def _short(result: base.EvalResult) -> str:
    """A result in a few words: its size and validation scores, or the
    first line of its message, shortened at a word boundary."""
    if result.ok:
        return f'params={result.params:,} ' + ' '.join(
            f'{k}={v:.3f}' for k, v in sorted(result.metrics.items())
            if k.startswith('val_'))
    first = result.message.splitlines()[0] if result.message else ''
    return textwrap.shorten(first, width=120, placeholder=' ...')


def format_top(candidates: Sequence[store.Candidate],
               objectives: Sequence[str] = selection.DEFAULT_OBJECTIVES) -> str:
    """A plain-text table of the final population (validation and test
    metrics: `objectives`)."""
    if not candidates:
        return 'No child was scored.'
    width = max(8, *map(len, objectives))
    header = (f'{"id":>5} {"round":>5} {"params":>9} {objectives[0]:>{width}} '
              f'{objectives[1]:>{width}} {"parents":<12}')
    rows = [header, '-' * len(header)]
    for c in candidates:
        m = c.result.metrics
        rows.append(f'{c.id:>5} {c.round:>5} {c.result.params:>9} '
                    f'{m.get(objectives[0], float("nan")):>{width}.4f} '
                    f'{m.get(objectives[1], float("nan")):>{width}.4f} '
                    f'{",".join(map(str, c.parents)):<12}')
    return '\n'.join(rows)
