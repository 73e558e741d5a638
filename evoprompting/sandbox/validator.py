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
network, other processes, the interpreter's internals or the parent's state,
and it must not tamper with the evaluator that scores it in the same worker
process (monkeypatching `jnp.mean`, registering `float` as a pytree node or
reading the held-out data would fake a score). This check is the first of
several layers (the worker also restricts builtins and imports, installs an
audit hook, runs under resource limits and runs one program per process); it
is a static allow-list for imports and deny-lists for everything else:

  * imports only from `policy.allowed_modules` (and their submodules), never
    relative, never `*`, never through a private or denied path component
    (tests, examples, `numpy.ma`, `flax.training`, `jax.debug` ...);
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
  * every name a class body binds (field annotations, assignments, `def`,
    `class`, imports, loop and `except` targets ...) is an attribute of the
    class and its instances, a dataclass field and a `__match_args__` entry,
    so it obeys the attribute rules, and private ones are refused too;
  * no class patterns in `match` (`case C(...)`): positional sub-patterns
    read the attributes `C.__match_args__` names (a dataclass field called
    `modules` or `f_globals` sets it), and the `isinstance` check before
    them can be made true for foreign objects (runtime-checkable protocols,
    ABC virtual subclasses). Refusing the whole construct is simpler than
    vetting `C`, and model code needs only literal, sequence, mapping and
    value patterns, which stay allowed;
  * no attribute, on any object, whose name is a frame/code internal, a module
    handle, a file/process/thread/FFI entry point of the allowed libraries,
    process-wide state (jax config flags, the pytree registry, primitive
    rules, chex patches), a way to fake `isinstance` (`Protocol`,
    `runtime_checkable`, `register`) or to get a module's unbound methods
    (flax's `intercept_methods`). Names are denied wherever they appear,
    because static code cannot know what an alias (`m = np; m.save`) refers
    to. Names that are also harmless in model code are restricted instead:
    `.extend` may only be called, `.training` used only on `self` (it is
    also `flax.training`), and class decorators that edit the class they are
    given (`flax.struct.dataclass`, `register_pytree_node_class` ...) may only
    decorate a class statement;
  * format templates: `str.format` and `jax.debug.print` only with a literal
    template (positional, not `fmt=`) whose fields do no attribute or index
    lookups; of `jax.debug` only `print`, `callback` and the sharding
    viewers (`debug.log` formats a template made at run time); chex
    `assert_*` only called, without `custom_message_format_vars` or `**`;
  * attributes are assigned or deleted only on the first parameter of the
    method the statement is directly in, and only if that method is
    `setup` or an allowed dunder method without decorators: those are only
    ever called on a real instance (by Python, by flax, or through
    `super()`), whereas any object can be passed as `self` to
    `Cls.method(jnp)`. For the same reason `setup` is never referenced
    except as `super().setup()`, `super` only appears as a zero-argument
    `super()` directly in such a method, a method's first parameter is
    never rebound inside it (assignment, walrus, loop, `with`, `except`,
    import, nested parameter, `global`/`nonlocal`, `del`, match capture),
    and the name `self` is bound only as a method's first parameter;
  * no `async` constructs (useless in model code; coroutines carry frames);
  * `global` and `nonlocal` are otherwise allowed: they only reach this
    program's names.

Static checks of Python cannot be complete (a string can be built at run time,
and library containers can be mutated through their methods). The deny-lists
therefore aim at every *way of turning* a string or an object into one of the
dangerous things above; they were checked by walking the attribute chains the
rules admit from the allowed modules (namespace subpackages included) and from
the runtime objects a model meets (jax 0.10, flax 0.12, optax 0.2, numpy 2.4,
chex 0.1, jraph 0.0.6), flagging module handles, builtins, protocol classes
and functions that open files, start threads or processes, import, or run
code within three calls. The worker's run-time guards remain necessary.
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
    'enum', 'bltns', 'typing_extensions', 'tpe', 'opt_einsum', 'abc',
    'contextlib',
    # ast.main() reads the worker's stdin (numpy.matrixlib.defmatrix.ast)
    'ast',
    # public aliases of jax internals (jax._src.core, pxla, xla_bridge ...)
    'fp8_ops', 'traceback_util', 'jax_traceback_util',
    # flax.nnx: Pytree subclasses evaluate annotation strings
    'nnx',
}
# Entry points of the allowed libraries that read or write files, load
# native code, change process-wide state (the evaluator shares it), start
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
    # numpy.ma.mrecords.openfile/fromtextfile read files; numpy.rec.fromfile
    # is denied above as 'fromfile'
    'ma', 'mrecords', 'openfile', 'fromtextfile',
    # jax (jax.debug is limited to _DEBUG_MEMBERS below)
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
    'def_bind_with_trace', 'def_effectful_abstract_eval',
    'def_effectful_abstract_eval2', 'deserialize_using_proto',
    # process-wide jax state: config flags (jax.debug_nans.set_global), the
    # pytree registry (register_pytree_node(float, ...) rewrites every float
    # the evaluator maps over), jax.extend under flax's alias
    'set_global', 'set_local', 'swap_local', 'default_registry',
    'register_node', 'register_dataclass_node', 'register_pytree_node',
    'register_pytree_with_keys', 'register_static', 'jex_core',
    # numpy internals behind numpy.matrixlib.defmatrix.N (numpy._core)
    'multiarray', 'set_typeDict', 'set_datetimeparse_function',
    # flax: files, threads (flax.training, see _SELF_ONLY_ATTRIBUTES), and
    # interceptors, whose context hands out a module's unbound methods
    # (`context.orig_method.func(jnp)` runs `setup` on jnp)
    'checkpoints', 'checkpoint_manager', 'configurations', 'summary_writer',
    'prefetch_iterator', 'PrefetchIterator', 'intercept_methods',
    'orig_method',
    # chex: chexify runs checks on a thread pool that outlives the call;
    # set_n_cpu_devices edits XLA_FLAGS in os.environ
    'chexify', 'with_jittable_assertions', 'set_n_cpu_devices',
    # chex: patch jax process-wide while entered; global assertion switches;
    # test variants; registry
    'fake_jit', 'fake_pmap', 'fake_pmap_and_jit', 'restrict_backends',
    'disable_asserts', 'enable_asserts', 'variants', 'all_variants',
    'register_dataclass_type_with_jax_tree_util',
    # yaml (behind flax.linen.summary) constructs arbitrary objects
    'unsafe_load', 'full_load', 'load_all', 'unsafe_load_all',
    # string -> code, attribute lookup or class
    'attrgetter', 'methodcaller', 'get_type_hints', 'ForwardRef',
    'evaluate_forward_ref', 'evaluate', 'annotationlib', 'get_annotations',
    'singledispatch', 'singledispatchmethod',
    'update_wrapper', 'wraps', 'Formatter', 'get_field', 'vformat',
    'get_func',  # opt_einsum: getattr(import_module(backend), name)
    'CodeType', 'FunctionType', 'make_dataclass', 'TypedDict', 'EnumType',
    # isinstance made true for foreign objects: structural protocols
    # (typing, typing_extensions, and their re-exports such as
    # flax.cursor.Protocol) and ABC virtual subclasses (also a process-wide
    # change: jax.Array.register(int))
    'Protocol', 'runtime_checkable', 'runtime', 'register',
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
    # XLA compiler options (`Lowered.compile(options)`) can make XLA write
    # dumps anywhere the worker's user may write, unaudited
    'compile',
}
FORBIDDEN_ATTRIBUTES = frozenset(_INTERNALS | _MODULE_HANDLES
                                 | _LIBRARY_ENTRY_POINTS)
# Names that are both a harmless method and a dangerous module (list.extend
# vs jax.extend): allowed only as the callee of a call, which a module is not.
_CALL_ONLY_ATTRIBUTES = frozenset({'extend'})
# Names that are both a common field and a dangerous package (flax.training:
# checkpoints write files, prefetch_iterator starts threads): allowed as
# `self.training` and as class-body names, refused on anything else and in
# imports. The dangerous modules' own names are denied as well, since `self`
# can be bound to `flax` by calling `Cls.method(flax)`.
_SELF_ONLY_ATTRIBUTES = frozenset({'training'})
# Methods whose first parameter is always an instance of their class (see
# `_Context.is_instance_method`): only they may assign attributes to it.
_INSTANCE_METHODS = ALLOWED_DUNDER_METHODS | {'setup'}
# Class decorators that edit the class they are given in place: allowed only
# in a class statement's decorator list, where that class is the program's
# own (`flax.struct.dataclass(optax.EmptyState)` would rewrite a library
# class the evaluator uses).
_DECORATOR_ONLY_ATTRIBUTES = frozenset({
    'dataclass', 'mappable_dataclass', 'register_pytree_node_class',
    'register_pytree_with_keys_class', 'total_ordering'})
# `jax.debug` holds format-string sinks (debug.log formats a template made
# at run time); only these members may follow it.
_DEBUG_MEMBERS = frozenset({'print', 'callback', 'inspect_array_sharding',
                            'visualize_array_sharding'})
# chex assertions format `custom_message` with `custom_message_format_vars`
# ('{0.__init__.__globals__}' made at run time reads anything): `assert_*`
# may only be called, with neither that keyword nor `**`.
_ASSERTION_PREFIX = 'assert_'
_FORBIDDEN_KEYWORDS = frozenset({'custom_message_format_vars',
                                 'compiler_options'})

# Patterns of forbidden attribute names. Test modules and test cases of the
# allowed packages (numpy.tests, jax.test_util, chex.TestCase ...) import
# pytest and subprocess, write temp files and run commands; example scripts
# (jraph.examples.basic, jraph.ogb_examples.data_utils) run absl apps and
# read data files. Metaclasses (ABCMeta, GenericMeta = type ...) build
# classes from a made-up namespace.
_FORBIDDEN_PATTERN = re.compile(
    r'(?i:(^|_)tests?($|_)|testcase|testutil|testing|conftest|absltest'
    r'|(^|_)examples($|_))'
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


def _class_attribute_problem(name: str) -> str | None:
    """Why a class body may not bind `name`, or None. Dunder names are
    `_name_problem`'s; the namedtuple API is not redefined by a program."""
    if name.startswith('_'):
        return f"binds private attribute '{name}'"
    if name in FORBIDDEN_ATTRIBUTES or _FORBIDDEN_PATTERN.search(name):
        return f"binds forbidden attribute '{name}'"
    return None


def _imported_name_problem(name: str) -> str | None:
    """Like `_attribute_problem` for `import a.name` / `from a import name`."""
    if (name in _CALL_ONLY_ATTRIBUTES or name in _FORMATTING_NAMES
            or name in _SELF_ONLY_ATTRIBUTES or name == 'debug'
            or name in _DECORATOR_ONLY_ATTRIBUTES
            or name.startswith(_ASSERTION_PREFIX)):
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


# --- Scopes ------------------------------------------------------------------

_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclasses.dataclass(frozen=True)
class _Context:
    policy: Policy
    parents: dict[int, ast.AST]  # id(child) -> parent
    fields: dict[int, str]  # id(child) -> the parent's field holding it

    def parent(self, node: ast.AST) -> ast.AST | None:
        return self.parents.get(id(node))

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        while (node := self.parent(node)) is not None:
            yield node

    def scope(self, node: ast.AST) -> ast.AST:
        """The module, class, function or comprehension whose namespace
        `node` is evaluated in. Decorators, defaults, annotations and bases
        belong to the scope around a definition, as does the first iterable
        of a comprehension."""
        child, grandchild = node, None
        for parent in self.ancestors(node):
            field = self.fields[id(child)]
            if isinstance(parent, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                   ast.AsyncFunctionDef, ast.Lambda)):
                if field == 'body':
                    return parent
            elif isinstance(parent, _COMPREHENSIONS):
                if not (child is parent.generators[0] and grandchild
                        is not None and self.fields[id(grandchild)] == 'iter'):
                    return parent
            child, grandchild = parent, child
        return child

    def binding_scope(self, node: ast.AST) -> ast.AST:
        """The scope in which `node` binds its names (see `_bound_names`)."""
        if isinstance(node, ast.arg):
            return self.parent(self.parent(node))  # arg <- arguments <- def
        scope = self.scope(node)
        if isinstance(self.parent(node), ast.NamedExpr):  # PEP 572
            while isinstance(scope, _COMPREHENSIONS):
                scope = self.scope(scope)
        return scope

    def is_method(self, node: ast.AST) -> bool:
        """A function defined directly in a class body."""
        return (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and isinstance(self.scope(node), ast.ClassDef))

    def is_instance_method(self, node: ast.AST) -> bool:
        """A method whose first parameter is always a real instance of its
        class: `setup` or an allowed dunder method, undecorated (a decorator
        could keep the function), so reachable only through an instance
        (`a(x)`, `a + b`, flax calling `setup`) or `super()` in another such
        method; `A.setup` and `A.__init__` are refused attributes."""
        return (self.is_method(node) and not node.decorator_list
                and node.name in _INSTANCE_METHODS
                and _first_parameter(node) is not None)


def _first_parameter(function: ast.AST) -> ast.arg | None:
    positional = function.args.posonlyargs + function.args.args
    return positional[0] if positional else None


def _bound_names(node: ast.AST) -> list[str]:
    """The names a node binds (or declares global/nonlocal) in its scope."""
    if isinstance(node, ast.Name):
        return [] if isinstance(node.ctx, ast.Load) else [node.id]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.alias):
        if node.asname:
            return [node.asname]
        return [] if node.name == '*' else [node.name.split('.')[0]]
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)):
        return [node.name] if node.name else []
    if isinstance(node, ast.MatchMapping):
        return [node.rest] if node.rest else []
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return list(node.names)
    return []


# --- Per-node checks ---------------------------------------------------------
# Each takes a node and the walk's context and yields what is wrong with it.


def _is_callee(node: ast.AST, ctx: _Context) -> bool:
    parent = ctx.parent(node)
    return isinstance(parent, ast.Call) and parent.func is node


def _is_safe_literal(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and _safe_format_template(node.value))


def _is_super_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == 'super' and not node.args and not node.keywords)


def _is_class_decorator(node: ast.AST, ctx: _Context) -> bool:
    """`@node` or `@node(...)` on a class statement."""
    if _is_callee(node, ctx):
        node = ctx.parent(node)
    owner = ctx.parent(node)
    return (isinstance(owner, ast.ClassDef)
            and any(node is d for d in owner.decorator_list))


def _is_self(node: ast.AST) -> bool:
    # Only a method's first parameter may be named `self` (`_check_bindings`).
    return isinstance(node, ast.Name) and node.id == 'self'


def _is_instance_self(node: ast.AST, ctx: _Context) -> bool:
    """`node` is the first parameter of the instance method it is used in."""
    if not isinstance(node, ast.Name):
        return False
    method = ctx.scope(node)
    return (ctx.is_instance_method(method)
            and _first_parameter(method).arg == node.id)


def _check_bindings(node: ast.AST, ctx: _Context) -> Iterator[str]:
    """Rules on every name a node binds, whatever the construct."""
    names = _bound_names(node)
    if not names:
        return
    scope = ctx.binding_scope(node)
    allowed_dunder = (ctx.is_method(node)
                      and node.name in ALLOWED_DUNDER_METHODS)
    for name in names:
        if not allowed_dunder and (problem := _name_problem(name, True)):
            yield problem
        # A class-body name is an attribute of the class and its instances,
        # a dataclass field, a `__match_args__` entry, a protocol member.
        if (isinstance(scope, ast.ClassDef) and not allowed_dunder
                and not _is_dunder(name)
                and (problem := _class_attribute_problem(name))):
            yield f"class '{scope.name}' {problem}"
        # A method's first parameter is never rebound inside the method:
        # attributes are stored on it (`self = jnp; self.mean = f`).
        rebound = [method.name for method in ctx.ancestors(node)
                   if ctx.is_method(method)
                   and (first := _first_parameter(method)) is not None
                   and first.arg == name and first is not node]
        if rebound:
            yield (f"rebinding of '{name}', the first parameter of method "
                   f"'{rebound[0]}'")
        elif name == 'self' and not (
                isinstance(node, ast.arg) and ctx.is_method(scope)
                and _first_parameter(scope) is node):
            yield ("'self' bound other than as the first parameter of a "
                   'method')


def _check_name(node: ast.Name, ctx: _Context) -> Iterator[str]:
    if not isinstance(node.ctx, ast.Load):
        return  # `_check_bindings`
    if problem := _name_problem(node.id):
        yield problem
    elif node.id == 'super':
        # super() passes the method's first parameter on (`super(B, B)` if a
        # method is called as `B.f(B)`, and `super().__init__(jnp)` then
        # runs `__init__` on jnp); only instance methods have real instances.
        call = ctx.parent(node)
        if not (_is_super_call(call) and call.func is node
                and ctx.is_instance_method(ctx.scope(node))):
            yield ("'super' is only allowed as 'super()', without arguments, "
                   'directly in setup or an undecorated dunder method')
    elif node.id == 'setup':
        yield ("'setup' may only be defined as a method and called as "
               "'super().setup()'")


def _check_attribute(node: ast.Attribute, ctx: _Context) -> Iterator[str]:
    attr = node.attr
    if attr in _FORMAT_METHODS:  # '{0.__class__}'.format(x) reads attributes
        if not _is_safe_literal(node.value):
            yield (f"'.{attr}' is only allowed on a string literal without "
                   'attribute or index lookups in its fields')
    elif attr == 'print':  # jax.debug.print(template, ...) formats too
        call = ctx.parent(node)
        if not (_is_callee(node, ctx) and call.args
                and _is_safe_literal(call.args[0])
                and all(k.arg not in (None, 'fmt') for k in call.keywords)):
            yield ("'.print' must be called with a string literal template "
                   '(first, not fmt=) without attribute or index lookups')
    elif attr in _CALL_ONLY_ATTRIBUTES:
        if not _is_callee(node, ctx):
            yield f"'.{attr}' may only be called (list.{attr}(...))"
    elif attr in _INSTANCE_METHODS and _is_super_call(node.value):
        pass  # super().__init__(...), super().setup() ...
    elif attr == 'setup':  # Model.setup(jnp) would store on jnp
        yield "'.setup' may only be called as 'super().setup()'"
    elif attr in _SELF_ONLY_ATTRIBUTES:
        if not _is_self(node.value):
            yield (f"access to attribute '{attr}' other than 'self.{attr}' "
                   f"(it is also a module: flax.{attr})")
    elif attr in _DECORATOR_ONLY_ATTRIBUTES:
        if not _is_class_decorator(node, ctx):
            yield (f"'.{attr}' may only decorate a class statement (it edits "
                   'the class it is given)')
    elif attr == 'debug':
        member = ctx.parent(node)
        if not (isinstance(member, ast.Attribute)
                and member.attr in _DEBUG_MEMBERS):
            used = (f"'.debug.{member.attr}'" if isinstance(
                member, ast.Attribute) else "'.debug' on its own")
            yield (f"{used}: only .debug."
                   f"{', .debug.'.join(sorted(_DEBUG_MEMBERS))} are allowed")
    elif attr.startswith(_ASSERTION_PREFIX):
        call = ctx.parent(node)
        if not (_is_callee(node, ctx)
                and all(k.arg is not None for k in call.keywords)):
            yield (f"'.{attr}' may only be called, without ** arguments "
                   '(chex formats custom messages)')
    elif problem := _attribute_problem(attr):
        yield problem
    if not isinstance(node.ctx, ast.Load) and not _is_instance_self(
            node.value, ctx):
        verb = 'assignment to' if isinstance(node.ctx, ast.Store) else (
            'deletion of')
        if _is_self(node.value):
            yield (f"{verb} attribute '{attr}' of self outside setup and the "
                   'undecorated dunder methods (any object can be passed as '
                   'self to Class.method)')
        else:
            yield f"{verb} attribute '{attr}' of something other than self"


def _check_import(node: ast.Import, ctx: _Context) -> Iterator[str]:
    for alias in node.names:
        if problem := _module_problem(alias.name, ctx.policy):
            yield problem


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


def _check_class(node: ast.ClassDef, ctx: _Context) -> Iterator[str]:
    for keyword in node.keywords:  # a metaclass sees and edits the namespace
        if keyword.arg in (None, 'metaclass'):
            yield f"class '{node.name}' with a metaclass or ** keywords"


def _check_keyword(node: ast.keyword, ctx: _Context) -> Iterator[str]:
    if node.arg and _is_dunder(node.arg):
        yield f"keyword argument with dunder name '{node.arg}'"
    elif node.arg in _FORBIDDEN_KEYWORDS:
        yield f"forbidden keyword argument '{node.arg}'"


def _check_match_class(node: ast.MatchClass, ctx: _Context) -> Iterator[str]:
    yield (f"class pattern 'case {ast.unparse(node.cls)}(...)' (reads "
           'attributes named by __match_args__ after an isinstance check '
           'that protocols and ABCs can fake)')


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
    ast.ClassDef: _check_class,
    ast.keyword: _check_keyword,
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


def _walk(tree: ast.AST) -> tuple[list[ast.AST], dict[int, ast.AST],
                                  dict[int, str]]:
    """All nodes, breadth first, each one's parent and the parent's field
    that holds it; no recursion."""
    nodes, parents, fields = [tree], {}, {}
    for node in nodes:  # grows while we iterate
        for field, value in ast.iter_fields(node):
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    parents[id(child)] = node
                    fields[id(child)] = field
                    nodes.append(child)
    return nodes, parents, fields


def _check_tree(tree: ast.Module, policy: Policy) -> Violation | None:
    nodes, parents, fields = _walk(tree)
    ctx = _Context(policy, parents, fields)
    problems = []
    for node in nodes:
        found = list(_check_bindings(node, ctx))
        if check := _CHECKS.get(type(node)):
            found.extend(check(node, ctx))
        if found:
            position = _position(node, parents)
            problems.extend((position, p) for p in found)
    if not problems:
        return None
    (line, *_), message = min(problems)
    more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
    return Violation(FORBIDDEN, f'line {line}: {message}{more}')


def _encoding_problem(source: str) -> Violation | None:
    """Text that is not UTF-8 (lone surrogates: undecodable bytes of a file),
    or a PEP 263 cookie other than utf-8, which makes a file decode
    differently."""
    try:
        source.encode('utf-8')
    except UnicodeEncodeError as e:
        line_no = source.count('\n', 0, e.start) + 1
        return Violation(SYNTAX_ERROR, f'line {line_no}: the source is not '
                         f'valid UTF-8 (character {e.object[e.start]!a})')
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
