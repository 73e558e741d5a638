"""The durable record of a search: every candidate, and the loop state.

`<workdir>/candidates.jsonl` holds one JSON object a line for every sampled
candidate, valid or not (its round, parents, prompt, temperature, source and
EvalResult). Each append is flushed and fsynced before `append` returns, so a
candidate recorded is never lost, whatever kills the process afterwards. A
process killed in the middle of an append leaves at most one truncated last
line; `CandidateStore.open` detects it and cuts it off, with a warning.

`<workdir>/state.json` holds the loop state (round, RNG keys, population).
It is replaced atomically: written to a temporary file, fsynced, renamed over
the old one, and the folder fsynced.

`<workdir>/store_format.json` holds the format version the workdir was
written in (`STORE_FORMAT`). A workdir of an older format is migrated when it
is opened; one of a newer format (a later version of this code) is refused.

No pickle: everything is JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Iterator, Mapping

from absl import logging

from evoprompting.tasks import base

CANDIDATES_FILE = 'candidates.jsonl'
STATE_FILE = 'state.json'
SEARCH_CONFIG_FILE = 'search_config.json'  # The search's settings.
FORMAT_FILE = 'store_format.json'
# 1: workdirs from before the version was recorded. 2: results carry the
# sandbox's `isolation` (absent, read as '', in version 1 records). 3: soft
# prompts in one orbax CheckpointManager folder (`lm.checkpoints`), not one
# folder per round.
STORE_FORMAT = 3
# Where formats 1-2 kept each round's soft prompt: soft_prompts/round_<t>.
_OLD_SOFT_PROMPT = re.compile(r'round_\d+$')


class StoreFormatError(ValueError):
    """The workdir was written in a format this code cannot read."""


def check_format(workdir: str) -> None:
    """Refuses a newer store format, migrates an older one, records ours.

    Raises:
      StoreFormatError: the workdir's format is newer than `STORE_FORMAT`,
        its format file is unreadable, or it holds soft prompts of format
        1-2, which cannot be migrated.
    """
    path = os.path.join(workdir, FORMAT_FILE)
    version = 1  # Written before the format was recorded (or fresh).
    if os.path.exists(path):
        try:
            with open(path, encoding='utf-8') as f:
                version = int(json.load(f)['store_format'])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreFormatError(f'{path} is unreadable ({e}); it should '
                                   'hold {"store_format": N}') from None
    if version > STORE_FORMAT:
        raise StoreFormatError(
            f'{workdir} was written in store format {version} by a newer '
            f'version of evoprompting; this one reads formats 1-{STORE_FORMAT}. '
            'Upgrade, or use another --workdir.')
    # Format 1 -> 2 adds only a field with a default: nothing to rewrite.
    # 2 -> 3: nothing either, unless rounds were completed with soft prompts.
    folder = os.path.join(workdir, 'soft_prompts')
    if version < 3 and os.path.isdir(folder) and any(
            _OLD_SOFT_PROMPT.match(name) for name in os.listdir(folder)):
        raise StoreFormatError(
            f'{workdir} holds soft prompts in store format {version}, which '
            f'this version cannot read (format {STORE_FORMAT} keeps them in '
            'an orbax CheckpointManager). Finish that search with the version '
            'that started it, or use another --workdir.')
    if version != STORE_FORMAT or not os.path.exists(path):
        write_json_atomic(path, {'store_format': STORE_FORMAT})


class StoreCorrupted(Exception):
    """A complete line of the candidate log cannot be read."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One sampled program and what became of it.

    Attributes:
      id: position in the log, from 0.
      round: search round that sampled it (-1 for seeds).
      parents: ids of the programs shown in its prompt.
      prompt_id: which prompt of the round produced it (None for seeds).
      temperature: sampling temperature (None for seeds).
      source: the program text.
      result: its evaluation.
      duplicate_of: id of an earlier candidate with the same normalised
        source; such a candidate is recorded but not trained again.
      proposal: position among the programs proposed in its round (for
        seeds: among the seeds). Candidates are appended as evaluations
        finish, so ids follow completion order; (round, proposal) is the
        order the search itself uses, the same in every run.
    """

    id: int
    round: int
    source: str
    result: base.EvalResult
    parents: tuple[int, ...] = ()
    prompt_id: int | None = None
    temperature: float | None = None
    duplicate_of: int | None = None
    proposal: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d['result'] = self.result.to_json()
        d['parents'] = list(self.parents)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(**{**d, 'result': base.EvalResult.from_json(d['result']),
                      'parents': tuple(d.get('parents', ()))})


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CandidateStore:
    """Append-only candidate log of one workdir. Use `CandidateStore.open`."""

    def __init__(self, workdir: str, candidates: list[Candidate]):
        self.workdir = workdir
        self.path = os.path.join(workdir, CANDIDATES_FILE)
        self.candidates = candidates
        self._file = open(self.path, 'a', encoding='utf-8')

    @classmethod
    def open(cls, workdir: str) -> CandidateStore:
        """Opens (creating if needed) the log, repairing a truncated last line.

        Raises:
          StoreFormatError: see `check_format`.
        """
        os.makedirs(workdir, exist_ok=True)
        check_format(workdir)
        path = os.path.join(workdir, CANDIDATES_FILE)
        candidates: list[Candidate] = []
        if os.path.exists(path):
            candidates = _read_repairing(path)
        return cls(workdir, candidates)

    def __len__(self) -> int:
        return len(self.candidates)

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self.candidates)

    def append(self, candidate: Candidate) -> None:
        """Writes one candidate durably; its id must be the next position."""
        if candidate.id != len(self.candidates):
            raise ValueError(f'candidate id {candidate.id} is not the next id '
                             f'{len(self.candidates)}')
        self._file.write(json.dumps(candidate.to_json(), sort_keys=True,
                                    allow_nan=False) + '\n')
        self._file.flush()
        os.fsync(self._file.fileno())
        self.candidates.append(candidate)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CandidateStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_candidates(workdir: str) -> list[Candidate]:
    """Reads the log of `workdir` without changing it (for reports and viewers).

    A truncated last line (a write in progress, or one cut short) is skipped
    with a warning and left in place; `CandidateStore.open` repairs it.

    Raises:
      FileNotFoundError: `workdir` has no candidate log.
      StoreCorrupted: a complete line cannot be read.
    """
    path = os.path.join(workdir, CANDIDATES_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{workdir} holds no candidate log ({CANDIDATES_FILE})')
    with open(path, 'rb') as f:
        data = f.read()
    candidates, tail = _parse(path, data)
    if tail:
        logging.warning('%s: ignoring a truncated last record (%d bytes)',
                        path, len(tail))
    return candidates


def _read_repairing(path: str) -> list[Candidate]:
    """Reads every complete line; cuts off a last line without its newline."""
    with open(path, 'rb') as f:
        data = f.read()
    candidates, tail = _parse(path, data)
    if tail:
        logging.warning('%s: removing a truncated last record (%d bytes) left '
                        'by an interrupted write', path, len(tail))
        with open(path, 'r+b') as f:
            f.truncate(len(data) - len(tail))
            f.flush()
            os.fsync(f.fileno())
    return candidates


def _parse(path: str, data: bytes) -> tuple[list[Candidate], bytes]:
    """The candidates of the complete lines of `data`, and the incomplete tail."""
    *complete, tail = data.split(b'\n')  # Complete lines end with a newline.
    candidates = []
    for number, line in enumerate(complete, start=1):
        try:
            candidates.append(Candidate.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as e:
            raise StoreCorrupted(f'{path} line {number} is unreadable: {e}') from None
        if candidates[-1].id != number - 1:
            raise StoreCorrupted(f'{path} line {number} has id {candidates[-1].id}')
    return candidates, tail


def write_json_atomic(path: str, obj: Any) -> None:
    """Replaces the JSON file `path` atomically: written to a temporary file,
    fsynced, renamed over the old one, and its folder fsynced."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=1, sort_keys=True, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_state(workdir: str, state: Mapping[str, Any]) -> None:
    """Replaces `<workdir>/state.json` atomically (`write_json_atomic`)."""
    write_json_atomic(os.path.join(workdir, STATE_FILE), state)


def is_finished(workdir: str) -> bool:
    """Whether `workdir` holds a search that completed all its rounds."""
    try:
        with open(os.path.join(workdir, SEARCH_CONFIG_FILE),
                  encoding='utf-8') as f:
            num_rounds = json.load(f)['num_rounds']
        state = read_state(workdir) or {}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return state.get('completed_rounds', 0) >= num_rounds


def read_state(workdir: str) -> dict[str, Any] | None:
    """The last state written, or None for a fresh workdir."""
    path = os.path.join(workdir, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)
