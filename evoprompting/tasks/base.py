"""The Task protocol and the EvalResult record: the seam between search and tasks.

A task says what a candidate program must define (its *contract*), which seed
programs start the search, and how to train and score a program. The search
loop and the sandbox only ever see this protocol; gin picks the concrete task.

Trust boundary: `Task.run_program` executes generated code and therefore is
only ever called inside a sandbox worker process (see
`evoprompting.sandbox.pool`). The parent process validates, schedules,
judges and records; it never runs candidate code. The judge is not in the
defendant's process: a worker gets `Task.worker_inputs` (training data and
unlabelled validation and test inputs), returns a `Trained` record
(parameter shapes and predictions at every evaluation point), and the parent
scores it with `Task.score`, which alone holds the labels.

Tasks are frozen dataclasses of plain values, so a task can be shipped to a
worker as JSON (`task_to_spec` / `task_from_spec`) — no pickle.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import importlib
import importlib.util
import io
import json
import math
import sys
import typing
import zipfile
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np


class Status(str, enum.Enum):
    """Outcome of evaluating one candidate. Every failure is a status."""

    OK = 'ok'
    SYNTAX_ERROR = 'syntax_error'  # does not parse
    FORBIDDEN = 'forbidden'  # validator or run-time guard refused it
    BUILD_ERROR = 'build_error'  # does not define/instantiate/run the contract
    TOO_LARGE = 'too_large'  # more parameters than the task's cap
    NAN = 'nan'  # loss or outputs became non-finite
    TIMEOUT = 'timeout'  # wall-clock or CPU-time limit
    OOM = 'oom'  # memory limit
    CRASH = 'crash'  # the worker died or failed for another reason


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode('utf-8', 'surrogatepass')).hexdigest()


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """The typed, JSON-serialisable result of evaluating one program.

    Attributes:
        status: see `Status`.
        message: human-readable cause (for failures) or summary (for `ok`).
        params: number of trainable parameters, once the model was built.
        metrics: task metrics: the task's `objectives` (e.g. `val_accuracy`,
            `test_accuracy`) and others such as `best_step`.
        compile_s: seconds spent compiling (tracing + XLA) in the worker.
        train_s: seconds spent running training and evaluation steps.
        source_sha256: hash of the exact source evaluated.
        output: what the program printed, capped.
        isolation: what the program ran under: 'os' (the OS sandbox),
            'process' (in-process guards only; see
            `evoprompting.sandbox.isolation`), '' if it never ran (the
            validator refused it).
    """

    status: Status
    message: str
    source_sha256: str
    params: int | None = None
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    compile_s: float = 0.0
    train_s: float = 0.0
    output: str = ''
    isolation: str = ''

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d['status'] = self.status.value
        d['metrics'] = dict(self.metrics)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EvalResult:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f'unknown EvalResult fields: {sorted(unknown)}')
        return cls(**{**d, 'status': Status(d['status']),
                      'metrics': dict(d.get('metrics', {}))})


def arrays_to_json(arrays: Mapping[str, np.ndarray]) -> str:
    """Named arrays as one base64 .npz string (no pickle)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return base64.b64encode(buffer.getvalue()).decode('ascii')


def arrays_from_json(text: Any) -> dict[str, np.ndarray]:
    """Inverse of `arrays_to_json` for untrusted text: numeric arrays only.

    Nothing is inflated beyond the text itself: every member must be stored
    (not compressed), and every array's header must describe no more bytes
    than its member holds, checked before anything is allocated. Raises
    ValueError.
    """
    try:
        raw = base64.b64decode(text, validate=True)
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            arrays = {}
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f'{info.filename} is compressed')
                with archive.open(info) as member:
                    arrays[info.filename] = _read_npy(member, info.file_size)
    except (TypeError, ValueError, OSError, EOFError, zipfile.BadZipFile,
            SyntaxError) as e:
        raise ValueError(f'malformed arrays: {e}') from None
    return {name[:-len('.npy')] if name.endswith('.npy') else name: array
            for name, array in arrays.items()}


def _read_npy(member: Any, size: int) -> np.ndarray:
    version = np.lib.format.read_magic(member)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        raise ValueError(f'unsupported .npy version {version}')
    shape, fortran_order, dtype = read_header(member)
    if dtype.kind not in 'biuf' or dtype.hasobject:
        raise ValueError(f'an array holds {dtype}, not numbers')
    count = math.prod(int(d) for d in shape)
    if count * dtype.itemsize > size:
        raise ValueError(f'an array of shape {shape} does not fit its member')
    data = member.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError('an array is cut short')
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order='F' if fortran_order else 'C').copy()


ParamShapes = tuple[tuple[int, ...], ...]


def num_params(shapes: ParamShapes) -> int:
    """Numbers in arrays of `shapes`; exact (Python integers: no overflow)."""
    return sum(math.prod(shape) for shape in shapes)


def param_shapes_from_json(raw: Any) -> ParamShapes:
    """Parameter shapes from an untrusted reply. Raises ValueError."""
    try:
        shapes = tuple(tuple(int(n) for n in shape) for shape in raw)
    except TypeError as e:
        raise ValueError(f'malformed parameter shapes: {e}') from None
    if any(n < 0 for shape in shapes for n in shape):
        raise ValueError('negative parameter dimension')
    return shapes


@dataclasses.dataclass(frozen=True)
class Trained:
    """What a worker returns for a program it trained: evidence, not a verdict.

    The worker has reported its validation predictions to the judge
    (`evoprompting.sandbox.judge.Judge`) while training and kept the parameters of the point the judge chose.

    Attributes:
      param_shapes: the shape of every trained parameter array in real
        numbers (a complex array has a trailing axis of 2).
      best_step: the evaluation point the judge chose (its last `True`).
      test_predictions: the model's predictions on the test inputs at that
        point (computed in passes of their own, never mixed with validation
        inputs).
      compile_s: seconds the worker spent compiling.
      train_s: seconds of the training loop and the prediction passes.
      final_train_loss: the last training loss (shown, never scored).
    """

    param_shapes: tuple[tuple[int, ...], ...]
    best_step: int
    test_predictions: Mapping[str, np.ndarray]
    compile_s: float = 0.0
    train_s: float = 0.0
    final_train_loss: float = float('nan')

    @property
    def params(self) -> int:
        return num_params(self.param_shapes)

    def to_json(self) -> dict[str, Any]:
        loss = self.final_train_loss
        return {'param_shapes': [list(s) for s in self.param_shapes],
                'best_step': self.best_step,
                'test_predictions': arrays_to_json(self.test_predictions),
                'compile_s': self.compile_s, 'train_s': self.train_s,
                'final_train_loss': loss if math.isfinite(loss) else None}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Trained:
        """Parses an untrusted record strictly. Raises ValueError."""
        try:
            shapes = param_shapes_from_json(d['param_shapes'])
            best_step = int(d['best_step'])
            timings = [float(d[k]) for k in ('compile_s', 'train_s')]
            loss = d.get('final_train_loss')
            loss = float('nan') if loss is None else float(loss)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f'malformed trained record: {e}') from None
        if not all(math.isfinite(t) and t >= 0 for t in timings):
            raise ValueError(f'timings must be seconds: {timings}')
        return cls(shapes, best_step, arrays_from_json(d['test_predictions']),
                   *timings, loss)


# What a worker calls at each evaluation point: judge(step, validation
# predictions) -> whether they are the best so far (the parameters to keep).
ReportValidation = Callable[[int, Mapping[str, np.ndarray]], bool]


def package_dirs(*modules: str) -> tuple[str, ...]:
    """The folders of installed top-level packages (imported or not)."""
    folders = []
    for name in modules:
        module = sys.modules.get(name)
        if module is not None:  # Maybe a stand-in without a spec.
            folders.extend(getattr(module, '__path__', ()))
            continue
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folders.extend(spec.submodule_search_locations)
    return tuple(folders)


@dataclasses.dataclass(frozen=True)
class SeedProgram:
    """A hand-written program that starts the search."""

    name: str
    source: str


class Task(Protocol):
    """What the search needs of a task. Implementations are frozen dataclasses."""

    name: str
    max_params: int  # Larger programs are `too_large`.
    # '' for the shipped seeds; else a folder of the user's own, which the
    # search checks (each builds under the contract) before it starts.
    seeds_dir: str

    @property
    def contract(self) -> str:
        """The program contract, as shown to people and in the LM prompt."""

    @property
    def preamble(self) -> str:
        """Imports every program starts with; prompts leave them out and the
        search puts them back in front of each child the LM writes."""

    @property
    def prompt_opening(self) -> str:
        """The first line of every program the LM writes: prompts end with it
        and each child is this line plus the LM's completion."""

    @property
    def objectives(self) -> Sequence[str]:
        """(validation metric, test metric): scores in [0, 1], higher is better,
        error = 1 - score. Fitness uses the first; Pareto fronts, hypervolume
        and reports the second."""

    def seed_programs(self) -> list[SeedProgram]:
        """The seed population; each satisfies the contract."""

    def private_paths(self) -> tuple[str, ...]:
        """Folders that hold the labels or can make them (the data cache, the
        dataset generator's package): hidden from workers."""

    def host_files(self) -> dict[str, str]:
        """Trusted files (path -> text) that every process of a multi-process
        search must hold alike and workers must not see, such as a private
        generator seed: process 0 sends its own (`distributed`). Paths are
        relative to the first of `private_paths()`, the task's data folder,
        which may lie elsewhere on another host."""

    def prepare(self) -> None:
        """Generates or loads the data. The trusted parent only."""

    def worker_inputs(self) -> dict[str, np.ndarray]:
        """What a worker may see: training data and the validation and test
        inputs, never their labels. The trusted parent only."""

    def run_program(self, program: dict[str, Any], seed: int,
                    inputs: Mapping[str, np.ndarray],
                    report_validation: ReportValidation) -> Trained:
        """Builds and trains the program (`program`: its namespace) on
        `inputs`, reporting its validation predictions at every evaluation
        point and keeping the point `report_validation` picks; returns the
        test predictions there. Sandbox workers only: runs the code. Raises
        ProgramFailure for programs that fail."""

    def build_program(self, program: dict[str, Any],
                      inputs: Mapping[str, np.ndarray]
                      ) -> tuple[tuple[int, ...], ...]:
        """Builds the program on abstract values as `run_program` would,
        without training, and returns its parameter shapes (a build-only
        request). Sandbox workers only: runs the code. Raises ProgramFailure
        for programs that do not build or are too large."""

    @property
    def evaluation_steps(self) -> tuple[int, ...]:
        """The steps at which `run_program` reports validation predictions."""

    def score_predictions(self, split: str,
                          predictions: Mapping[str, np.ndarray]) -> float:
        """The objective's score ('val' or 'test' split, higher is better)
        of `predictions` against the labels. The trusted parent only.
        Raises ValueError for predictions that do not fit the data."""


def task_to_spec(task: Task) -> dict[str, Any]:
    """A JSON description of a task, rebuilt in a worker by `task_from_spec`."""
    cls = type(task)
    return {'class': f'{cls.__module__}:{cls.__qualname__}',
            'fields': _to_plain(task)}


_TASK_MODULE_PREFIXES = ('evoprompting.', 'clrs_tasks.')


def task_from_spec(spec: Mapping[str, Any]) -> Task:
    module_name, _, class_name = spec['class'].partition(':')
    if not module_name.startswith(_TASK_MODULE_PREFIXES):
        raise ValueError(f'refusing to load task class from {module_name!r}')
    cls = getattr(importlib.import_module(module_name), class_name)
    return _from_plain(cls, spec['fields'])


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name))
                for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(x) for x in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


def _from_plain(kind: Any, data: Any) -> Any:
    """Inverse of `_to_plain` for dataclasses of plain values and tuples."""
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: _from_plain(hints[f.name], data[f.name])
                       for f in dataclasses.fields(kind) if f.name in data})
    if isinstance(data, list):
        return tuple(data)
    return data


def dumps(obj: Mapping[str, Any]) -> str:
    """One-line JSON used on every process and file boundary."""
    return json.dumps(obj, sort_keys=True, allow_nan=False)


class ProgramFailure(Exception):
    """Raised inside a worker when a program fails in a way a task can name."""

    def __init__(self, status: Status, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_OOM_MARKERS = ('RESOURCE_EXHAUSTED', 'Out of memory', 'bad_alloc')


def _message(e: BaseException) -> str:
    """`str(e)`, or a placeholder where a program's exception makes that
    raise (its `__str__` is the program's code)."""
    try:
        text = str(e)
    except BaseException:  # pylint: disable=broad-except
        return '<the exception message could not be read>'
    return text if isinstance(text, str) else ''


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of `e`'s message, at most `limit` characters."""
    lines = _message(e).strip().splitlines()
    return lines[0][:limit] if lines else ''


def is_out_of_memory(e: BaseException) -> bool:
    """Whether `e` reports exhausted memory (Python's or XLA's allocator)."""
    return isinstance(e, MemoryError) or any(m in _message(e)
                                             for m in _OOM_MARKERS)
