"""Static validation of untrusted, LM-generated model programs.

Contract: `validate(source, policy)` returns None when `source` may be handed to
a sandbox worker, else a `Violation` whose `status` is 'syntax_error' (not
parsable Python, or not a str) or 'forbidden' (parsable but refused) and whose
`message` names the refused construct and (where it has one) its line,
e.g. "line 3: use of forbidden builtin 'eval'". It never raises and never
runs anything from the source: it only calls `ast.parse` and walks the tree
iteratively, so deeply nested input cannot overflow our stack.

Threat model: the source is written by a language model that may have learnt,
or been prompted into, sandbox escapes. It must not reach the file system, the
network, other processes, the interpreter's internals or the parent's state.
This check is the first of several layers (the worker also restricts builtins
and imports, installs an audit hook and runs under resource limits); it is a
static allow-list for imports and deny-lists for everything else:

  * imports only from `policy.allowed_modules` (and their submodules), never
    relative, never `*`, never through a private or denied path component;
  * no dunder identifiers, attributes or string constants (the currency of
    every reflection escape: `__class__`, `__globals__`, `__builtins__` ...),
    except defining and `super()`-calling a few ordinary dunder methods such as
    `__call__` and `__post_init__`;
  * no private attributes (`_x`), not even on `self`: any object can be
    passed as `self` (`Cls.method(typing)`), and `typing._eval_type` runs a
    string. The namedtuple API (`_replace`, `_asdict` ...) is the exception;
  * no builtins that run code, reflect on namespaces, reach files or the
    terminal, or build classes from a namespace (`type`);
  * no metaclasses: class statements without `metaclass=` or `**kwargs`;
  * no attribute, on any object, whose name is a frame/code internal, a module
    handle, or a file/process/FFI/config entry point of the allowed libraries.
    Names are denied wherever they appear, because static code cannot know
    what an alias (`m = np; m.save`) refers to;
  * `str.format` (and `jax.debug.print`) only with a literal template whose
    fields do no attribute or index lookups;
  * attributes are assigned or deleted only on `self` (no monkeypatching of
    the libraries a reused worker shares between programs; a guard against
    accidents, since `self` can be bound to anything);
  * no `async` constructs (useless in model code; coroutines carry frames);
  * `global` and `nonlocal` are allowed: they only reach this program's names.

Static checks of Python cannot be complete (a string can be built at run time).
The deny-lists therefore aim at every *way of turning* a string or an object
into one of the dangerous things above; they were checked by walking the
attribute chains the rules admit from the allowed modules and from the runtime
objects a model meets (jax 0.10, flax 0.12, optax 0.2, numpy 2.4, chex 0.1,
jraph 0.0.6). The worker's run-time guards remain necessary, and a reused
worker must not trust state that a previous program left behind.
"""

from __future__ import annotations

import ast
import codecs
import dataclasses
import re
import string
from typing import Iterator

SYNTAX_ERROR = 'syntax_error'
FORBIDDEN = 'forbidden'


@dataclasses.dataclass(frozen=True)
class Policy:
    """What generated code may touch.

    Attributes:
      allowed_modules: importable modules; their submodules are allowed too,
        unless a path component is private or denied (see below).
      max_source_chars: longer sources are refused before parsing.
    """
    allowed_modules: frozenset[str]
    max_source_chars: int = 100_000


DEFAULT_POLICY = Policy(allowed_modules=frozenset({
    'jax', 'jax.numpy', 'jax.nn', 'jax.lax', 'jax.random', 'jax.scipy',
    'jax.tree_util', 'flax', 'flax.linen', 'optax', 'jraph', 'numpy', 'math',
    'functools', 'typing', 'chex',
}))


@dataclasses.dataclass(frozen=True)
class Violation:
    """Why a program was refused."""
    status: str  # SYNTAX_ERROR or FORBIDDEN
    message: str  # 'line N: <what was refused>'


# Builtins that run code (eval, exec, compile), reflect on or leak namespaces
# (globals, locals, vars, dir, getattr & co.), reach files or the terminal
# (open, input, help, breakpoint, license ...), end the worker (exit, quit), or
# build classes from a namespace the program filled (type(name, bases, ns):
# a dataclass turns field names into source code it execs, so a class with
# made-up annotations runs code). `hasattr` only yields a bool; `super`,
# `object`, `print`, `isinstance`, `classmethod`, `property` are ordinary.
FORBIDDEN_NAMES = frozenset({
    'eval', 'exec', 'compile', 'open', 'globals', 'locals', 'vars', 'dir',
    'getattr', 'setattr', 'delattr', 'input', 'breakpoint', 'help', 'exit',
    'quit', 'memoryview', 'copyright', 'credits', 'license', 'type',
})
# `super().__init__` is allowed (below), so `super` must stay the builtin.
_UNBINDABLE_NAMES = frozenset({'super'})

# Dunder methods a program may define in a class body and reach via
# `super().name`: the callables, constructors and operators of ordinary
# classes. Not allowed: hooks into attribute lookup, pickling, finalisation,
# class creation and formatting (__getattr__, __reduce__, __del__, __new__,
# __init_subclass__, __set_name__, __class_getitem__, __format__ ...).
ALLOWED_DUNDER_METHODS = frozenset({
    '__call__', '__init__', '__post_init__', '__repr__', '__str__', '__len__',
    '__iter__', '__next__', '__getitem__', '__contains__', '__hash__',
    '__eq__', '__ne__', '__lt__', '__le__', '__gt__', '__ge__', '__bool__',
    '__neg__', '__add__', '__radd__', '__sub__', '__rsub__', '__mul__',
    '__rmul__', '__matmul__', '__truediv__', '__enter__', '__exit__',
})

# Attribute names refused on every object (aliasing defeats static typing).
# Frame, code, generator, coroutine, traceback and closure internals: the
# routes from an object to the globals and builtins of foreign code.
_INTERNALS = {
    'f_back', 'f_builtins', 'f_code', 'f_globals', 'f_lasti', 'f_lineno',
    'f_locals', 'f_trace', 'f_trace_lines', 'f_trace_opcodes',
    'gi_code', 'gi_frame', 'gi_running', 'gi_suspended', 'gi_yieldfrom',
    'cr_await', 'cr_code', 'cr_frame', 'cr_origin', 'cr_running',
    'ag_await', 'ag_code', 'ag_frame', 'ag_running',
    'tb_frame', 'tb_lasti', 'tb_lineno', 'tb_next',
    'co_code', 'co_consts', 'co_names', 'co_varnames', 'co_filename',
    'co_cellvars', 'co_freevars', 'co_lines', 'co_positions',
    'cell_contents', 'func_globals', 'func_code', 'func_closure', 'im_func',
    'im_self', 'im_class', 'mro',
}
# Module handles that allowed modules hold as attributes (`typing.sys`,
# `flax.linen.module.inspect`): stdlib and third-party ways out.
_MODULE_HANDLES = {
    'os', 'sys', 'subprocess', 'builtins', 'importlib', 'imp', 'modules',
    'shutil', 'socket', 'pathlib', 'epath', 'io', 'ctypes', 'cffi', 'pickle',
    'cPickle', 'cloudpickle', 'dill', 'marshal', 'shelve', 'dbm', 'copyreg',
    'tempfile', 'glob', 'signal', 'threading', 'multiprocessing',
    'concurrent', 'asyncio', 'selectors', 'resource', 'platform', 'inspect',
    'gc', 'code', 'codeop', 'runpy', 'pkgutil', 'pkg_resources', 'zipimport',
    'types', 'weakref', 'urllib', 'urllib3', 'http', 'requests', 'ftplib',
    'smtplib', 'ssl', 'socketserver', 'xmlrpc', 'webbrowser', 'pty', 'tty',
    'termios', 'fcntl', 'mmap', 'posix', 'nt', 'posixpath', 'ntpath',
    'zipfile', 'tarfile', 'gzip', 'bz2', 'lzma', 'sqlite3', 'logging',
    'warnings', 'atexit', 'faulthandler', 'tracemalloc', 'site', 'sysconfig',
    'dis', 'traceback', 'linecache', 'tokenize', 'pdb', 'bdb', 'pydoc',
    'profile', 'cProfile', 'codecs', 'operator', 'string', 'dataclasses',
    'absl', 'etils', 'fsspec', 'tensorstore', 'orbax', 'orbax_utils',
    'msgpack', 'jaxlib', 'xla_client', 'xla_extension', 'tensorboard',
    'tensorboardX', 'tensorflow', 'tf', 'torch', 'rich', 'gfile', 'yaml',
    'enum', 'bltns', 'typing_extensions', 'tpe', 'opt_einsum',
    # public aliases of jax internals (jax._src.core, pxla, xla_bridge ...)
    'fp8_ops', 'traceback_util', 'jax_traceback_util',
    # flax.nnx: Pytree subclasses evaluate annotation strings
    'nnx',
}
# Entry points of the allowed libraries that read or write files, load
# native code, change process-wide configuration (a worker is reused), start
# a debugger or profiler server, or turn a string into code or an attribute
# lookup: get_type_hints and singledispatch evaluate annotation strings;
# register_dataclass, update_wrapper and attrgetter look attributes up by name;
# TypedDict and the metaclasses build classes with made-up annotations.
_LIBRARY_ENTRY_POINTS = {
    # numpy
    'load', 'loads', 'save', 'savez', 'savez_compressed', 'loadtxt', 'savetxt',
    'genfromtxt', 'fromfile', 'tofile', 'memmap', 'open_memmap', 'fromregex',
    'DataSource', 'ctypeslib', 'f2py', 'distutils', 'testing', 'lib', 'dump',
    'dumps', 'recfromcsv', 'recfromtxt', 'as_strided', 'stride_tricks',
    'info', 'add_newdoc', 'add_docstring',  # these import modules by name
    # jax (jax.debug stays: print/callback only run this program's own code)
    'profiler', 'ffi', 'dlpack', 'experimental', 'config', 'distributed',
    'cloud_tpu_init', 'monitoring', 'export', 'serialization', 'interpreters',
    'tools', 'collect_profile', 'print_environment_info', 'breakpoint',
    'register_dataclass', 'compilation_cache',
    # jax runtime objects: the XLA client (compiles and deserialises native
    # executables), editable IR, raw pointers, process-wide primitive rules,
    # and every live array of the worker (the task's held-out data included)
    'client', 'live_arrays', 'live_buffers', 'live_executables',
    'runtime_executable', 'deserialize_executable', 'serialize_executable',
    'compiler_ir', 'unsafe_buffer_pointer', 'unsafe_client_pointer',
    'poison_execution', 'def_impl', 'def_abstract_eval',
    # flax (flax.training itself holds harmless train_state & co.)
    'checkpoints', 'checkpoint_manager', 'configurations', 'summary_writer',
    # yaml (behind flax.linen.summary) constructs arbitrary objects
    'unsafe_load', 'full_load', 'load_all', 'unsafe_load_all',
    # string -> code, attribute lookup or class
    'attrgetter', 'methodcaller', 'get_type_hints', 'ForwardRef',
    'evaluate_forward_ref', 'evaluate', 'annotationlib', 'get_annotations',
    'singledispatch', 'singledispatchmethod',
    'update_wrapper', 'wraps', 'Formatter', 'get_field', 'vformat',
    'get_func',  # opt_einsum: getattr(import_module(backend), name)
    'CodeType', 'FunctionType', 'make_dataclass', 'TypedDict', 'EnumType',
    # operating system, through any handle (`remove`, `replace`, `read`,
    # `write` stay: harmless on lists, strings and dataclasses, and a file
    # object cannot be obtained)
    'system', 'popen', 'spawn', 'spawnl', 'spawnle', 'spawnlp', 'spawnv',
    'spawnve', 'spawnvp', 'posix_spawn', 'execl', 'execle', 'execlp', 'execv',
    'execve', 'execvp', 'fork', 'forkpty', 'kill', 'killpg', 'abort',
    'unlink', 'rmdir', 'removedirs', 'rmtree', 'mkdir', 'makedirs', 'rename',
    'renames', 'chmod', 'chown', 'symlink', 'link', 'truncate', 'listdir',
    'scandir', 'walk', 'environ', 'getenv', 'putenv', 'unsetenv', 'chdir',
    'chroot', 'getcwd', 'startfile', 'exit', 'open', 'fdopen', 'dup', 'dup2',
    'read_text', 'write_text', 'read_bytes', 'write_bytes', 'urlopen',
    'urlretrieve', 'connect', 'CDLL', 'PyDLL', 'cdll', 'pydll', 'dlopen',
    'LoadLibrary', 'load_library', 'setrecursionlimit', 'settrace',
    'setprofile',
}
FORBIDDEN_ATTRIBUTES = frozenset(_INTERNALS | _MODULE_HANDLES
                                 | _LIBRARY_ENTRY_POINTS)
# Names that are both a harmless method and a dangerous module (list.extend
# vs jax.extend): allowed only as the callee of a call, which a module is not.
_CALL_ONLY_ATTRIBUTES = frozenset({'extend'})

# Patterns of forbidden attribute names. Test modules and test cases of the
# allowed packages (numpy.tests, jax.test_util, chex.TestCase ...) import
# pytest and subprocess, write temp files and run commands. Metaclasses
# (ABCMeta, GenericMeta = type ...) build classes from a made-up namespace.
_FORBIDDEN_PATTERN = re.compile(
    r'(?i:(^|_)tests?($|_)|testcase|testutil|testing|conftest|absltest)'
    r'|Meta(class)?$')

# Private names that are public API: namedtuples (jraph.GraphsTuple._replace).
_NAMEDTUPLE_API = frozenset({'_replace', '_asdict', '_fields', '_make',
                             '_field_defaults'})

_FORMAT_METHODS = frozenset({'format', 'format_map'})
_FORMATTING_NAMES = _FORMAT_METHODS | {'print'}
_CODING_COOKIE = re.compile(r'^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)')


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith('__') and name.endswith('__')


def _allowed_list(policy: Policy) -> str:
    return ', '.join(sorted(policy.allowed_modules))


# --- Rules on names ----------------------------------------------------------


def _name_problem(name: str, binding: bool = False) -> str | None:
    """Why an identifier may not be used (or bound), or None."""
    if _is_dunder(name):
        return f"use of dunder name '{name}'"
    if name in FORBIDDEN_NAMES:
        return f"use of forbidden builtin '{name}'"
    if binding and name in _UNBINDABLE_NAMES:
        return f"rebinding of builtin '{name}'"
    return None


def _attribute_problem(attr: str) -> str | None:
    """Why `obj.attr` is refused whatever `obj` is, or None."""
    if _is_dunder(attr):
        return f"access to dunder attribute '{attr}'"
    if attr.startswith('_') and attr not in _NAMEDTUPLE_API:
        return f"access to private attribute '{attr}'"
    if attr in FORBIDDEN_ATTRIBUTES or _FORBIDDEN_PATTERN.search(attr):
        return f"access to forbidden attribute '{attr}'"
    return None


def _imported_name_problem(name: str) -> str | None:
    """Like `_attribute_problem` for `import a.name` / `from a import name`."""
    if name in _CALL_ONLY_ATTRIBUTES or name in _FORMATTING_NAMES:
        return f"'{name}' may not be imported by name"
    return _attribute_problem(name)


def _module_problem(module: str, policy: Policy) -> str | None:
    """Why importing the dotted `module` is refused, or None."""
    parts = module.split('.')
    prefixes = ('.'.join(parts[:i]) for i in range(1, len(parts) + 1))
    if not any(p in policy.allowed_modules for p in prefixes):
        return (f"import of '{module}' is not allowed "
                f"(allowed: {_allowed_list(policy)})")
    for part in parts:
        if problem := _imported_name_problem(part):
            return f"import of '{module}' is not allowed: {problem}"
    return None


def _safe_format_template(template: str, depth: int = 0) -> bool:
    """True if str.format on `template` does no attribute or index lookups."""
    if depth > 2:
        return False
    try:
        for _, field, spec, _ in string.Formatter().parse(template):
            if field is not None and ('.' in field or '[' in field):
                return False
            if spec and not _safe_format_template(spec, depth + 1):
                return False
    except ValueError:
        return False
    return True


# --- Per-node checks ---------------------------------------------------------
# Each takes a node and the walk's context and yields what is wrong with it.


@dataclasses.dataclass(frozen=True)
class _Context:
    policy: Policy
    parents: dict[int, ast.AST]  # id(child) -> parent

    def parent(self, node: ast.AST) -> ast.AST | None:
        return self.parents.get(id(node))


def _is_callee(node: ast.AST, ctx: _Context) -> bool:
    parent = ctx.parent(node)
    return isinstance(parent, ast.Call) and parent.func is node


def _is_safe_literal(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and _safe_format_template(node.value))


def _is_super_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == 'super' and not node.args and not node.keywords)


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == 'self'


def _check_name(node: ast.Name, ctx: _Context) -> Iterator[str]:
    if problem := _name_problem(node.id, not isinstance(node.ctx, ast.Load)):
        yield problem


def _check_attribute(node: ast.Attribute, ctx: _Context) -> Iterator[str]:
    attr = node.attr
    if attr in _FORMAT_METHODS:  # '{0.__class__}'.format(x) reads attributes
        if not _is_safe_literal(node.value):
            yield (f"'.{attr}' is only allowed on a string literal without "
                   'attribute or index lookups in its fields')
    elif attr == 'print':  # jax.debug.print(template, ...) formats too
        call = ctx.parent(node)
        if not (_is_callee(node, ctx)
                and (not call.args or _is_safe_literal(call.args[0]))):
            yield ("'.print' must be called with a string literal template "
                   'without attribute or index lookups')
    elif attr in _CALL_ONLY_ATTRIBUTES:
        if not _is_callee(node, ctx):
            yield f"'.{attr}' may only be called (list.{attr}(...))"
    elif attr in ALLOWED_DUNDER_METHODS and _is_super_call(node.value):
        pass  # super().__init__(...), super().__post_init__() ...
    elif problem := _attribute_problem(attr):
        yield problem
    if not isinstance(node.ctx, ast.Load) and not _is_self(node.value):
        yield f"assignment to attribute '{attr}' of something other than self"


def _check_import(node: ast.Import, ctx: _Context) -> Iterator[str]:
    for alias in node.names:
        if problem := _module_problem(alias.name, ctx.policy):
            yield problem
        yield from _check_bound_name(alias.asname)


def _check_import_from(node: ast.ImportFrom, ctx: _Context) -> Iterator[str]:
    if node.level:
        yield f"relative import 'from {'.' * node.level}{node.module or ''}'"
        return
    module = node.module or ''
    if problem := _module_problem(module, ctx.policy):
        yield problem
        return
    for alias in node.names:
        if alias.name == '*':
            yield f"star import 'from {module} import *'"
        elif problem := _imported_name_problem(alias.name):
            yield f"import of '{module}.{alias.name}' is not allowed: {problem}"
        yield from _check_bound_name(alias.asname)


def _check_bound_name(name: str | None) -> Iterator[str]:
    if name and (problem := _name_problem(name, binding=True)):
        yield problem


def _check_function(node: ast.FunctionDef, ctx: _Context) -> Iterator[str]:
    is_method = isinstance(ctx.parent(node), ast.ClassDef)
    if not (is_method and node.name in ALLOWED_DUNDER_METHODS):
        yield from _check_bound_name(node.name)


def _check_class(node: ast.ClassDef, ctx: _Context) -> Iterator[str]:
    yield from _check_bound_name(node.name)
    for keyword in node.keywords:  # a metaclass sees and edits the namespace
        if keyword.arg in (None, 'metaclass'):
            yield f"class '{node.name}' with a metaclass or ** keywords"


def _check_arg(node: ast.arg, ctx: _Context) -> Iterator[str]:
    yield from _check_bound_name(node.arg)


def _check_except(node: ast.ExceptHandler, ctx: _Context) -> Iterator[str]:
    yield from _check_bound_name(node.name)


def _check_scope(node: ast.Global | ast.Nonlocal, ctx: _Context
                 ) -> Iterator[str]:
    for name in node.names:
        yield from _check_bound_name(name)


def _check_keyword(node: ast.keyword, ctx: _Context) -> Iterator[str]:
    if node.arg and _is_dunder(node.arg):
        yield f"keyword argument with dunder name '{node.arg}'"


def _check_match_capture(node: ast.MatchAs | ast.MatchStar, ctx: _Context
                         ) -> Iterator[str]:
    yield from _check_bound_name(node.name)


def _check_match_mapping(node: ast.MatchMapping, ctx: _Context
                         ) -> Iterator[str]:
    yield from _check_bound_name(node.rest)


def _check_match_class(node: ast.MatchClass, ctx: _Context) -> Iterator[str]:
    for attr in node.kwd_attrs:  # `case C(attr=...)` reads obj.attr
        if problem := _attribute_problem(attr):
            yield f'class pattern: {problem}'


def _check_constant(node: ast.Constant, ctx: _Context) -> Iterator[str]:
    if isinstance(node.value, str) and _is_dunder(node.value.strip()):
        yield f"string constant naming dunder '{node.value.strip()}'"


def _check_async(node: ast.AST, ctx: _Context) -> Iterator[str]:
    if getattr(node, 'is_async', True):  # ast.comprehension has is_async
        yield f'async construct ({type(node).__name__})'


_CHECKS = {
    ast.Name: _check_name,
    ast.Attribute: _check_attribute,
    ast.Import: _check_import,
    ast.ImportFrom: _check_import_from,
    ast.FunctionDef: _check_function,
    ast.ClassDef: _check_class,
    ast.arg: _check_arg,
    ast.ExceptHandler: _check_except,
    ast.Global: _check_scope,
    ast.Nonlocal: _check_scope,
    ast.keyword: _check_keyword,
    ast.MatchAs: _check_match_capture,
    ast.MatchStar: _check_match_capture,
    ast.MatchMapping: _check_match_mapping,
    ast.MatchClass: _check_match_class,
    ast.Constant: _check_constant,
    ast.AsyncFunctionDef: _check_async,
    ast.AsyncFor: _check_async,
    ast.AsyncWith: _check_async,
    ast.Await: _check_async,
    ast.comprehension: _check_async,
}


# --- Driver ------------------------------------------------------------------


def _position(node: ast.AST, parents: dict[int, ast.AST]) -> tuple[int, ...]:
    """Where node (or its nearest located ancestor) starts and ends: sorts the
    innermost of `a.b.c` first, as it is evaluated first."""
    while not hasattr(node, 'lineno') and id(node) in parents:
        node = parents[id(node)]
    return tuple(getattr(node, name, None) or 0 for name in (
        'lineno', 'col_offset', 'end_lineno', 'end_col_offset'))


def _walk(tree: ast.AST) -> tuple[list[ast.AST], dict[int, ast.AST]]:
    """All nodes, breadth first, and each one's parent; no recursion."""
    nodes, parents = [tree], {}
    for node in nodes:  # grows while we iterate
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
            nodes.append(child)
    return nodes, parents


def _check_tree(tree: ast.Module, policy: Policy) -> Violation | None:
    nodes, parents = _walk(tree)
    ctx = _Context(policy, parents)
    problems = []
    for node in nodes:
        if check := _CHECKS.get(type(node)):
            position = _position(node, parents)
            problems.extend((position, p) for p in check(node, ctx))
    if not problems:
        return None
    (line, *_), message = min(problems)
    more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
    return Violation(FORBIDDEN, f'line {line}: {message}{more}')


def _encoding_problem(source: str) -> Violation | None:
    """A PEP 263 cookie other than utf-8 makes a file decode differently."""
    for line_no, line in enumerate(source.splitlines()[:2], start=1):
        match = _CODING_COOKIE.match(line)
        if match:
            try:
                ok = codecs.lookup(match.group(1)).name == 'utf-8'
            except LookupError:
                ok = False
            if not ok:
                return Violation(FORBIDDEN, f'line {line_no}: source declares '
                                 f"encoding '{match.group(1)}'; only utf-8")
    return None


def _validate(source: object, policy: Policy) -> Violation | None:
    if type(source) is not str:  # a subclass could override what we call
        return Violation(SYNTAX_ERROR,
                         f'source must be str, not {type(source).__name__}')
    if len(source) > policy.max_source_chars:
        return Violation(FORBIDDEN, f'source has {len(source)} characters, '
                         f'over the limit of {policy.max_source_chars}')
    if '\0' in source:
        line = source.count('\n', 0, source.index('\0')) + 1
        return Violation(SYNTAX_ERROR,
                         f'line {line}: source contains a null byte')
    if violation := _encoding_problem(source):
        return violation
    try:
        tree = ast.parse(source, '<candidate>', 'exec')
    except SyntaxError as e:
        return Violation(SYNTAX_ERROR, f'line {e.lineno or "?"}: {e.msg}')
    except (RecursionError, MemoryError, ValueError, OverflowError) as e:
        return Violation(SYNTAX_ERROR, 'source too deeply nested or too large '
                         f'to parse ({type(e).__name__})')
    return _check_tree(tree, policy)


def validate(source: str, policy: Policy = DEFAULT_POLICY) -> Violation | None:
    """None when the source may be run in a sandbox worker; never raises."""
    try:
        return _validate(source, policy)
    except Exception as e:  # pylint: disable=broad-except
        # Fail closed: a validator bug must never let a program through.
        return Violation(FORBIDDEN, 'the validator could not check the '
                         f'source ({type(e).__name__}: {e})')
