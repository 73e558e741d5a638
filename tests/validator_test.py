"""Tests for evoprompting.sandbox.validator: hostile programs are refused with a
message naming the cause, benign Flax programs pass, and nothing ever raises."""

import dataclasses
import pathlib
import random
import textwrap

import pytest

from evoprompting.sandbox import validator

FORBIDDEN = validator.FORBIDDEN
SYNTAX = validator.SYNTAX_ERROR


def _case(case_id, source, cause, status=FORBIDDEN):
    return pytest.param(textwrap.dedent(source), status, cause, id=case_id)


# (source, expected status, substring the message must contain)
HOSTILE = [
    # --- imports outside the allow-list, or through forbidden paths --------
    _case('import_os', 'import os', "'os'"),
    _case('import_sys', 'import sys', "'sys'"),
    _case('import_subprocess', 'import subprocess', 'subprocess'),
    _case('import_socket', 'import socket', 'socket'),
    _case('import_ctypes', 'import ctypes', 'ctypes'),
    _case('import_importlib', 'import importlib', 'importlib'),
    _case('import_pickle', 'import pickle', 'pickle'),
    _case('import_builtins', 'import builtins', 'builtins'),
    _case('import_opt_einsum', 'import opt_einsum', 'opt_einsum'),
    _case('import_os_path_alias', 'import os.path as p', 'os.path'),
    _case('from_os_import_system', 'from os import system', "'os'"),
    _case('import_inside_function', 'def f():\n    import os\n', 'line 2'),
    _case('import_numpy_ctypeslib', 'import numpy.ctypeslib', 'ctypeslib'),
    _case('from_numpy_import_load_as', 'from numpy import load as l', 'load'),
    _case('from_numpy_import_testing', 'from numpy import testing', 'testing'),
    _case('from_jax_import_profiler', 'from jax import profiler', 'profiler'),
    _case('from_jax_import_config', 'from jax import config', 'config'),
    _case('import_jax_extend', 'import jax.extend.backend', 'extend'),
    _case('from_jax_import_test_util', 'from jax import test_util',
          'test_util'),
    _case('import_jax_src', 'import jax._src.core', '_src'),
    _case('from_jax_src_import', 'from jax._src import core', '_src'),
    _case('from_flax_training_import_checkpoints',
          'from flax.training import checkpoints', 'training'),
    _case('import_flax_io', 'import flax.io', "'io'"),
    _case('import_flax_nnx', 'from flax import nnx', 'nnx'),
    _case('from_jax_debug_import_print', 'from jax.debug import print',
          'debug'),
    _case('star_import', 'from jax.numpy import *', 'import *'),
    _case('relative_import', 'from . import worker', 'relative import'),
    _case('relative_import_parent', 'from ..sandbox import worker',
          'relative import'),
    _case('future_import', 'from __future__ import annotations',
          '__future__'),
    _case('import_as_builtin_name', 'import numpy as eval', 'eval'),
    _case('import_as_dunder', 'import numpy as __builtins__',
          '__builtins__'),
    _case('dunder_import_call', "__import__('os').system('id')",
          '__import__'),
    # --- builtins that run code, reflect, or reach files -------------------
    _case('eval', "eval('1 + 1')", "'eval'"),
    _case('exec', "exec('import os')", "'exec'"),
    _case('compile', "compile('x', 'f', 'exec')", "'compile'"),
    _case('open_read', "open('/etc/passwd').read()", "'open'"),
    _case('open_in_with', "with open('/tmp/x', 'w') as f:\n    f.write('x')",
          "'open'"),
    _case('globals', "globals()['x'] = 1", "'globals'"),
    _case('locals', 'locals()', "'locals'"),
    _case('vars', 'vars(object)', "'vars'"),
    _case('dir', 'dir()', "'dir'"),
    _case('getattr_dunder_string', "getattr(x, '__class__')", "'getattr'"),
    _case('getattr_built_string', "getattr(x, '_' * 2 + 'class' + '_' * 2)",
          "'getattr'"),
    _case('setattr', "setattr(x, 'y', 1)", "'setattr'"),
    _case('delattr', "delattr(x, 'y')", "'delattr'"),
    _case('input', 'input()', "'input'"),
    _case('breakpoint', 'breakpoint()', "'breakpoint'"),
    _case('help', 'help(object)', "'help'"),
    _case('exit', 'exit(0)', "'exit'"),
    _case('quit', 'quit()', "'quit'"),
    _case('memoryview', "memoryview(b'x')", "'memoryview'"),
    _case('license', 'license()', "'license'"),
    _case('eval_alias', 'e = eval\ne("1")', "'eval'"),
    _case('eval_fullwidth_nfkc', "\uff45val('1')", "'eval'"),
    _case('dunder_attribute_fullwidth_nfkc', 'x.__\uff43lass__', '__class__'),
    _case('def_shadowing_open', 'def open():\n    pass', "'open'"),
    _case('param_named_exec', 'def f(exec):\n    return exec', "'exec'"),
    _case('rebind_super', 'super = lambda: 1', "'super'"),
    _case('type_three_args', "C = type('C', (), {'x': 1})", "'type'"),
    _case('type_of_class_as_metaclass', "type(nn.Module)('M', (), ns)",
          "'type'"),
    _case('metaclass_keyword', 'class A(metaclass=f):\n    pass',
          'metaclass'),
    _case('class_double_star_keywords', 'class A(**kw):\n    pass',
          'metaclass'),
    # --- dunder names, attributes and strings ------------------------------
    _case('class_bases_subclasses',
          '().__class__.__bases__[0].__subclasses__()', '__class__'),
    _case('function_globals', 'def f():\n    pass\nf.__globals__["os"]',
          '__globals__'),
    _case('lambda_globals', '(lambda: 0).__globals__', '__globals__'),
    _case('lambda_code', '(lambda: 0).__code__.co_consts', '__code__'),
    _case('builtins_name', "__builtins__['eval']", '__builtins__'),
    _case('loader_name', '__loader__.get_data("x")', '__loader__'),
    _case('spec_name', '__spec__', '__spec__'),
    _case('file_name', 'p = __file__', '__file__'),
    _case('main_guard', "if __name__ == '__main__':\n    pass", '__name__'),
    _case('dunder_string_subscript', "d['__builtins__']", '__builtins__'),
    _case('dunder_string_padded', "k = ' __class__ '", '__class__'),
    _case('dunder_keyword_argument', 'dict(__getattr__=f)', '__getattr__'),
    _case('walrus_dunder', '(__builtins__ := {})', '__builtins__'),
    _case('global_dunder', 'def f():\n    global __builtins__',
          '__builtins__'),
    _case('except_as_dunder',
          'try:\n    pass\nexcept Exception as __builtins__:\n    pass',
          '__builtins__'),
    _case('lambda_param_dunder', 'f = lambda __x__: 1', '__x__'),
    _case('dunder_method_getattr',
          'class A:\n    def __getattr__(self, name):\n        return 1',
          '__getattr__'),
    _case('dunder_method_reduce',
          'class A:\n    def __reduce__(self):\n        return (print, ())',
          '__reduce__'),
    _case('dunder_function_at_module_level', 'def __call__():\n    pass',
          '__call__'),
    _case('super_dunder_not_allowed',
          'class A:\n    def __init__(self):\n'
          "        super().__getattribute__('x')",
          '__getattribute__'),
    _case('super_with_arguments', 'super(A, x).__init__()', "'super'"),
    _case('traceback_frame',
          'try:\n    1 / 0\nexcept Exception as e:\n'
          '    e.__traceback__.tb_frame.f_globals',
          '__traceback__'),
    _case('class_pattern_dunder',
          'match x:\n    case object(__class__=c):\n        pass',
          'class pattern'),
    _case('match_capture_dunder',
          'match x:\n    case __builtins__:\n        pass', '__builtins__'),
    # --- str.format and jax.debug.print do attribute lookups --------------
    _case('format_attribute_lookup', "'{0.__class__}'.format(x)", 'format'),
    _case('format_index_lookup', "'{0[secret]}'.format(d)", 'format'),
    _case('format_nested_spec', "'{0:{1.__class__}}'.format(1, x)",
          'format'),
    _case('format_on_variable', "t = '{}'\nt.format(1)", 'format'),
    _case('format_unbound', "str.format('{0.__class__}', x)", 'format'),
    _case('format_map', "'{x.y}'.format_map(d)", 'format_map'),
    _case('debug_print_attribute_template',
          "jax.debug.print('{x.__class__}', x=x)", 'print'),
    _case('debug_print_dynamic_template', 'jax.debug.print(t, x=x)',
          'print'),
    _case('debug_print_alias', 'p = jax.debug.print', 'print'),
    # --- private attributes, even on self ----------------------------------
    _case('jax_src', 'import jax\njax._src.config', '_src'),
    _case('self_private', 'class A:\n    def f(self):\n'
          '        return self._dense', '_dense'),
    _case('unbound_method_self_trick', """
        import typing
        class A:
            def f(self, ref):
                return self._eval_type(ref, {}, {})
        ref = typing.get_args(typing.List['print(1)'])[0]
        A.f(typing, ref)
        """, '_eval_type'),
    # --- module handles reachable through allowed modules ------------------
    _case('typing_sys_modules', "import typing\ntyping.sys.modules['os']",
          "'sys'"),
    _case('functools_sys', 'import functools\nfunctools.sys', "'sys'"),
    _case('enum_builtins', 'import flax\nflax.cursor.enum.bltns.eval',
          'enum'),
    _case('fp8_ops_jax_internals', 'nn.fp8_ops.core', 'fp8_ops'),
    _case('flax_traceback_util', 'flax.traceback_util.jax_traceback_util',
          'traceback_util'),
    _case('yaml_unsafe_load', "nn.summary.yaml.unsafe_load('x')", 'yaml'),
    _case('opt_einsum_get_func',
          "nn.linear.opt_einsum.backends.dispatch.get_func('system', 'os')",
          'opt_einsum'),
    _case('typing_extensions', 'nn.kw_only_dataclasses.tpe.GenericMeta',
          'tpe'),
    _case('chex_testcase', 'chex.TestCase().create_tempfile()', 'TestCase'),
    _case('numpy_tests_module', 'np.polynomial.tests.test_classes',
          'tests'),
    # --- files, FFI, configuration and runtime internals -------------------
    _case('np_load', "np.load('x.npy', allow_pickle=True)", 'load'),
    _case('np_save', "np.save('/tmp/x', a)", 'save'),
    _case('np_savez', "np.savez('/tmp/x', a=a)", 'savez'),
    _case('np_fromfile', "np.fromfile('/etc/passwd')", 'fromfile'),
    _case('np_loadtxt', "np.loadtxt('/etc/passwd')", 'loadtxt'),
    _case('np_genfromtxt', "np.genfromtxt('/etc/passwd')", 'genfromtxt'),
    _case('np_memmap', "np.memmap('/tmp/x')", 'memmap'),
    _case('np_datasource', 'np.DataSource()', 'DataSource'),
    _case('np_ctypeslib', 'np.ctypeslib.load_library("x", ".")',
          'ctypeslib'),
    _case('np_open_memmap', "np.lib.format.open_memmap('/tmp/x')", 'lib'),
    _case('np_testing', 'np.testing.assert_equal(1, 1)', 'testing'),
    _case('np_info_imports_by_name', "np.info('system', toplevel='os')",
          'info'),
    _case('np_as_strided', 'np.lib.stride_tricks.as_strided(a)', 'lib'),
    _case('array_tofile', "x.tofile('/tmp/x')", 'tofile'),
    _case('array_dump', "x.dump('/tmp/x')", 'dump'),
    _case('array_ctypes', 'x.ctypes.data', 'ctypes'),
    _case('jax_profiler', "jax.profiler.start_trace('/tmp/t')", 'profiler'),
    _case('jax_config_update', "jax.config.update('jax_enable_x64', True)",
          'config'),
    _case('jax_ffi', 'jax.ffi.register_ffi_target', 'ffi'),
    _case('jax_dlpack', 'jax.dlpack.from_dlpack(x)', 'dlpack'),
    _case('jax_experimental', 'jax.experimental.io_callback', 'experimental'),
    _case('jax_distributed', 'jax.distributed.initialize()', 'distributed'),
    _case('jax_extend_attribute', 'jax.extend.backend.get_backend()',
          'extend'),
    _case('jax_extend_alias', 'e = jax.extend', 'extend'),
    _case('jax_live_arrays', 'jax.live_arrays()', 'live_arrays'),
    _case('jax_device_client', 'jax.devices()[0].client.compile(x)',
          'client'),
    _case('jax_debug_breakpoint', 'jax.debug.breakpoint()', 'breakpoint'),
    _case('jax_environment_info', 'jax.print_environment_info()',
          'print_environment_info'),
    _case('jax_register_dataclass',
          "jax.tree_util.register_dataclass(C, ['x'], [])",
          'register_dataclass'),
    _case('flax_checkpoints',
          "flax.training.checkpoints.save_checkpoint('/tmp', s, 0)",
          'training'),
    _case('flax_io', "flax.io.GFile('/etc/passwd')", "'io'"),
    _case('flax_serialization', 'flax.serialization.from_bytes(s, b)',
          'serialization'),
    _case('attribute_aliasing', 'import numpy as np\nm = np\nm.save("x", 1)',
          'save'),
    _case('os_handle_anywhere', 'x.os.system("id")', "'os'"),
    _case('environ', "x.environ['HOME']", 'environ'),
    # --- string -> code / attribute gadgets --------------------------------
    _case('get_type_hints', 'typing.get_type_hints(C)', 'get_type_hints'),
    _case('singledispatch_evaluates_annotations',
          '@functools.singledispatch\ndef f(x):\n    pass',
          'singledispatch'),
    _case('update_wrapper', "functools.update_wrapper(a, b, ('x',))",
          'update_wrapper'),
    _case('typeddict_dataclass_injection',
          "T = typing.TypedDict('T', {'x=print(1)': int})\n"
          'flax.struct.dataclass(T)', 'TypedDict'),
    _case('metaclass_attribute', "typing.NamedTupleMeta('X', (), {})",
          'NamedTupleMeta'),
    _case('forward_ref', "typing.ForwardRef('1')", 'ForwardRef'),
    _case('implicit_string_concatenation', "k = '__cla' 'ss__'", '__class__'),
    _case('mapping_pattern_dunder_key',
          "match d:\n    case {'__builtins__': b}:\n        pass",
          '__builtins__'),
    _case('fstring_dunder_attribute', "f'{x.__class__}'", '__class__'),
    _case('decorator_forbidden', '@eval\ndef f():\n    pass', "'eval'"),
    _case('numpy_test_runner', 'np.test()', "'test'"),
    # --- frames, code objects and friends ----------------------------------
    _case('generator_frame', """
        def g():
            yield 1
        g().gi_frame.f_back.f_globals
        """, 'gi_frame'),
    _case('coroutine_frame', 'c.cr_frame', 'cr_frame'),
    _case('traceback_attribute', 'tb.tb_frame', 'tb_frame'),
    _case('code_consts', 'code.co_consts', 'co_consts'),
    _case('cell_contents', 'cell.cell_contents', 'cell_contents'),
    _case('mro', 'int.mro()', 'mro'),
    # --- library state shared by a reused worker ---------------------------
    _case('monkeypatch_module', 'nn.relu = lambda x: x', 'relu'),
    _case('delete_module_attribute', 'del nn.Dense', 'Dense'),
    # --- async -------------------------------------------------------------
    _case('async_def', 'async def f():\n    pass', 'async'),
    _case('await_in_async', 'async def f():\n    await g()', 'async'),
    # --- source-level tricks -----------------------------------------------
    _case('coding_cookie_utf7', '# -*- coding: utf-7 -*-\nx = 1\n', 'utf-7'),
    _case('null_byte', 'x = 1\x00\n', 'null byte', SYNTAX),
    _case('syntax_error', 'def f(:\n    pass', 'line 1', SYNTAX),
    _case('too_long', 'x = 1\n' * 40_000, 'limit'),
    _case('nested_parentheses_over_limit', '(' * 10**6, 'limit'),
    _case('deep_unary_minus', '-' * 90_000 + '1', 'nested', SYNTAX),
    _case('long_attribute_chain', 'a' + '.b' * 49_000, 'nested', SYNTAX),
]

# Holes found by the audit of match statements, class-body names, protocols,
# numpy.ma, flax.training and attribute stores; each program below passed the
# validator before these rules.
_PROTOCOL_MATCH_CHAIN = """
    import typing
    import flax

    @typing.runtime_checkable
    @flax.struct.dataclass
    class HasSys(typing.Protocol):
        sys: int

    @typing.runtime_checkable
    @flax.struct.dataclass
    class HasModules(typing.Protocol):
        modules: int

    @typing.runtime_checkable
    @flax.struct.dataclass
    class HasSystem(typing.Protocol):
        system: int

    match typing:
        case HasSys(HasModules(modules)):
            match modules['os']:
                case HasSystem(run):
                    run('true')
    """
_UNBOUND_METHOD = """
    class A:
        def put(self, fake):
            self.mean = fake

    A.put(jnp, lambda *args, **kwargs: 1.0)
    """
_SUPER_ON_A_CLASS = """
    class A:
        def __init__(self, fake):
            self.mean = fake

    class B(A):
        def poison(self):
            super().__init__(jnp, lambda *args, **kwargs: 1.0)

    B.poison(B)
    """


def _in_setup(body: str) -> str:
    """A Module whose setup runs `body` (indented 8)."""
    return ('class M(nn.Module):\n    def setup(self):\n'
            + textwrap.indent(textwrap.dedent(body), ' ' * 8))


AUDITED = [
    # --- match: class patterns read __match_args__ after a fakeable isinstance
    _case('match_protocol_positional_chain', _PROTOCOL_MATCH_CHAIN,
          'runtime_checkable'),
    _case('match_positional_class_pattern',
          'match x:\n    case Point(v):\n        pass', "'case Point(...)'"),
    _case('match_class_pattern_without_arguments',
          'match x:\n    case Point():\n        pass', 'class pattern'),
    _case('match_keyword_class_pattern',
          'match x:\n    case Point(modules=m):\n        pass',
          'class pattern'),
    _case('match_nested_class_pattern',
          'match x:\n    case [1, {"k": Point(v)}]:\n        pass',
          'class pattern'),
    # --- names a class body binds become attributes (and dataclass fields) -
    _case('struct_dataclass_field_f_globals',
          '@flax.struct.dataclass\nclass S:\n    f_globals: int',
          "'f_globals'"),
    _case('module_field_system',
          'class M(nn.Module):\n    system: int = 0', "'system'"),
    _case('class_body_assignment_modules', 'class C:\n    modules = 1',
          "class 'C' binds forbidden attribute 'modules'"),
    _case('class_body_method_load',
          'class C:\n    def load(self):\n        pass', "'load'"),
    _case('class_body_nested_class_os',
          'class C:\n    class os:\n        pass', "'os'"),
    _case('class_body_import_as_sys', 'class C:\n    import numpy as sys',
          "'sys'"),
    _case('class_body_for_target_environ',
          'class C:\n    for environ in range(2):\n        pass',
          "'environ'"),
    _case('class_body_walrus_builtins_handle',
          'class C:\n    (bltns := 1)', "'bltns'"),
    _case('class_body_private_protocol_flag',
          'class P:\n    _is_protocol = True', "'_is_protocol'"),
    _case('class_body_namedtuple_fields',
          "class T(tuple):\n    _fields = ('f_globals',)", "'_fields'"),
    _case('namedtuple_field_f_back',
          'class T(typing.NamedTuple):\n    f_back: int', "'f_back'"),
    _case('class_body_except_as_gi_frame',
          'class C:\n    try:\n        pass\n'
          '    except Exception as gi_frame:\n        pass', "'gi_frame'"),
    # --- protocols and ABCs make isinstance true for foreign objects ------
    _case('from_typing_import_protocol', 'from typing import Protocol',
          'Protocol'),
    _case('typing_protocol_base', 'class P(typing.Protocol):\n    pass',
          'Protocol'),
    _case('typing_runtime_checkable', 'P = typing.runtime_checkable(P)',
          'runtime_checkable'),
    _case('flax_cursor_reexports_protocol', 'P = flax.cursor.Protocol',
          'Protocol'),
    _case('typing_extensions_runtime', 'P = te.runtime(P)', "'runtime'"),
    _case('abc_register_virtual_subclass',
          'class V(typing.Hashable):\n    pass\nV.register(float)',
          "'register'"),
    _case('jax_array_register', 'jax.Array.register(float)', "'register'"),
    _case('abc_module_via_flax', 'flax.core.meta.abc.ABC', "'abc'"),
    # --- numpy.ma and other file readers ----------------------------------
    _case('numpy_ma_mrecords_openfile',
          "np.ma.mrecords.openfile('/etc/passwd')", "'ma'"),
    _case('import_numpy_ma_mrecords', 'import numpy.ma.mrecords as m',
          "'ma'"),
    _case('from_numpy_import_ma', 'from numpy import ma', "'ma'"),
    _case('mrecords_fromtextfile_alias', "m.fromtextfile('/tmp/x')",
          'fromtextfile'),
    _case('openfile_on_any_object', "m.openfile('/tmp/x')", 'openfile'),
    _case('numpy_rec_fromfile', "np.rec.fromfile('/tmp/x', formats='u1')",
          'fromfile'),
    _case('numpy_lib_npyio', "np.lib.npyio.genfromtxt('/tmp/x')", "'lib'"),
    _case('numpy_fromregex', "np.fromregex('/tmp/x', 'r', 'u1')",
          'fromregex'),
    # --- flax.training: files and threads ---------------------------------
    _case('flax_training_prefetch_iterator',
          'flax.training.prefetch_iterator.PrefetchIterator(iter([]), 2)',
          "'training'"),
    _case('from_flax_import_training', 'from flax import training',
          "'training'"),
    _case('from_flax_training_import_train_state',
          'from flax.training import train_state', "'training'"),
    _case('training_on_an_alias', 'f = flax\nf.training', "'training'"),
    _case('prefetch_iterator_through_self', """
        class A:
            def f(self):
                return self.training.prefetch_iterator
        """, 'prefetch_iterator'),
    # --- attribute stores only on a real instance's self ------------------
    _case('self_bound_to_module', 'self = jnp\nself.mean = f', "'self'"),
    _case('unbound_method_stores_on_module', _UNBOUND_METHOD,
          "assignment to attribute 'mean' of self outside setup"),
    _case('super_bound_to_a_class', _SUPER_ON_A_CLASS, "'super'"),
    _case('rebind_self_walrus', _in_setup('(self := jnp)\nself.mean = f\n'),
          "rebinding of 'self'"),
    _case('rebind_self_for', _in_setup('for self in [jnp]:\n    pass\n'),
          "rebinding of 'self'"),
    _case('rebind_self_with',
          _in_setup('with jax.named_scope("s") as self:\n    pass\n'),
          "rebinding of 'self'"),
    _case('rebind_self_except',
          _in_setup('try:\n    pass\nexcept Exception as self:\n    pass\n'),
          "rebinding of 'self'"),
    _case('rebind_self_import', _in_setup('import jax.numpy as self\n'),
          "rebinding of 'self'"),
    _case('rebind_self_nested_parameter',
          _in_setup('def g(self):\n    self.mean = f\ng(jnp)\n'),
          "rebinding of 'self'"),
    _case('rebind_self_lambda_parameter',
          _in_setup('g = lambda self: self\n'), "rebinding of 'self'"),
    _case('rebind_self_global', _in_setup('global self\n'),
          "rebinding of 'self'"),
    _case('rebind_self_nonlocal',
          _in_setup('def g():\n    nonlocal self\n    self = jnp\n'),
          "rebinding of 'self'"),
    _case('rebind_self_del', _in_setup('del self\n'), "rebinding of 'self'"),
    _case('rebind_self_match_rest',
          _in_setup('match {}:\n    case {**self}:\n        pass\n'),
          "rebinding of 'self'"),
    _case('rebind_other_first_parameter',
          'class A:\n    def setup(this):\n        this = jnp\n'
          '        this.mean = f', "rebinding of 'this'"),
    _case('self_as_lambda_parameter', 'g = lambda self: self.mean',
          "'self' bound other than as the first parameter"),
    _case('self_as_function_parameter',
          'def g(x, self=jnp):\n    self.mean = x', "'self' bound"),
    _case('self_as_second_method_parameter',
          'class A:\n    def f(this, self):\n        pass', "'self' bound"),
    _case('store_in_nested_function_of_setup',
          _in_setup('def g(v):\n    self.mean = v\n'),
          "assignment to attribute 'mean' of self outside setup"),
    _case('store_in_decorated_setup', """
        class M(nn.Module):
            @keep
            def setup(self):
                self.mean = f
        """, "assignment to attribute 'mean' of self outside setup"),
    _case('store_in_staticmethod', """
        class A:
            @staticmethod
            def __call__(self):
                self.mean = f
        """, 'outside setup'),
    _case('delete_through_self_in_method', """
        class A:
            def f(self):
                del self.mean
        """, "deletion of attribute 'mean'"),
    _case('class_body_alias_of_setup', """
        class A:
            def setup(self):
                self.mean = f
            alias = setup
        """, "'setup' may only be defined"),
    _case('setup_called_on_the_class', 'M.setup(jnp)', "'.setup'"),
    _case('property_setter_stores', """
        class A:
            def put(self, value):
                self.mean = value
            p = property(None, put)
        """, 'outside setup'),
    _case('comprehension_target_attribute', '[0 for jnp.mean in [f]]',
          "assignment to attribute 'mean' of something other than self"),
]

# Holes found by attacking the validator with the installed libraries.
ATTACKS = [
    # flax interceptors hand out unbound methods: orig_method.func(jnp)
    _case('flax_intercept_methods', """
        def grab(next_fun, args, kwargs, context):
            return next_fun.func(jnp)
        with nn.intercept_methods(grab):
            pass
        """, 'intercept_methods'),
    _case('interceptor_orig_method', 'context.orig_method.func(jnp)',
          'orig_method'),
    # format strings that reach str.format without the .format rule
    _case('debug_print_fmt_keyword',
          "jax.debug.print(fmt='{x.dtype}', x=x)", 'fmt='),
    _case('debug_print_double_star', 'jax.debug.print(**kwargs)', "'.print'"),
    _case('debug_log_runtime_template', 'jax.debug.log(template, x=x)',
          "'.debug.log'"),
    _case('debug_module_alias', 'd = jax.debug\nd.log(t)', "'.debug'"),
    _case('chex_custom_message_format_vars',
          "chex.assert_shape(x, (2,), custom_message='{0.real}', "
          'custom_message_format_vars=(x,))', 'custom_message_format_vars'),
    # XLA compiler options: xla_dump_to writes files from C++, unaudited
    _case('lowered_compile_options',
          "c = jax.jit(f).lower(x).compile({'xla_dump_to': '/home/u'})",
          "'compile'"),
    _case('jit_compiler_options',
          "g = jax.jit(f, compiler_options={'xla_dump_to': '/home/u'})",
          'compiler_options'),
    _case('trace_lower_compile', 'c = jax.jit(f).trace(x).lower().compile()',
          "'compile'"),
    _case('chex_assert_double_star', 'chex.assert_shape(x, (2,), **kw)',
          "'.assert_shape'"),
    _case('chex_assert_alias', 'check = chex.assert_shape', 'assert_shape'),
    _case('chex_assert_partial', 'functools.partial(chex.assert_rank, x)',
          'assert_rank'),
    _case('from_chex_import_assert', 'from chex import assert_shape as a',
          'assert_shape'),
    # process-wide registries and configuration shared with the evaluator
    _case('pytree_register_float',
          'jax.tree_util.register_pytree_node(float, f, g)',
          'register_pytree_node'),
    _case('pytree_register_with_keys',
          'jax.tree_util.register_pytree_with_keys(float, f, g)',
          'register_pytree_with_keys'),
    _case('pytree_register_static', 'jax.tree_util.register_static(float)',
          'register_static'),
    _case('pytree_default_registry',
          'jax.tree_util.default_registry.register_node(float, f, g)',
          'default_registry'),
    _case('struct_dataclass_on_a_library_class',
          'flax.struct.dataclass(optax.EmptyState)', "'.dataclass'"),
    _case('chex_dataclass_partial',
          'functools.partial(chex.dataclass, frozen=True)', "'.dataclass'"),
    _case('from_flax_struct_import_dataclass',
          'from flax.struct import dataclass', "'dataclass'"),
    _case('total_ordering_on_a_library_class',
          'functools.total_ordering(nn.Dense)', "'.total_ordering'"),
    _case('pytree_class_decorator_as_call',
          'jax.tree_util.register_pytree_node_class(nn.Dense)',
          'register_pytree_node_class'),
    _case('chex_register_dataclass_type',
          'chex.register_dataclass_type_with_jax_tree_util(C)',
          'register_dataclass_type_with_jax_tree_util'),
    _case('jax_config_state_set_global', 'jax.debug_nans.set_global(True)',
          'set_global'),
    _case('jax_config_state_swap_local',
          'jax.numpy_rank_promotion.swap_local("raise")', 'swap_local'),
    _case('primitive_bind_rule', 'jax.lax.argmax_p.def_bind_with_trace(f)',
          'def_bind_with_trace'),
    _case('primitive_abstract_eval',
          'jax.lax.add_p.def_effectful_abstract_eval(f)',
          'def_effectful_abstract_eval'),
    _case('jax_extend_via_flax', 'flax.core.tracers.jex_core.Primitive("p")',
          'jex_core'),
    _case('numpy_core_typedict',
          'np.matrixlib.defmatrix.N.multiarray.set_typeDict({})',
          'multiarray'),
    _case('pytreedef_from_proto', 'PyTreeDef.deserialize_using_proto(r, b)',
          'deserialize_using_proto'),
    # threads, patches and files behind chex, jraph, numpy and flax
    _case('chex_chexify_thread_pool', 'chex.chexify(f)(x)', 'chexify'),
    _case('chex_with_jittable_assertions', 'chex.with_jittable_assertions(f)',
          'with_jittable_assertions'),
    _case('chex_fake_jit_patches_jax', 'chex.fake_jit().start()', 'fake_jit'),
    _case('chex_restrict_backends', "chex.restrict_backends(allowed=['cpu'])",
          'restrict_backends'),
    _case('chex_set_n_cpu_devices', 'chex.set_n_cpu_devices(8)',
          'set_n_cpu_devices'),
    _case('chex_disable_asserts', 'chex.disable_asserts()', 'disable_asserts'),
    _case('jraph_examples_absl_app', 'import jraph.examples.basic',
          "'examples'"),
    _case('jraph_ogb_examples_reads_files',
          'from jraph.ogb_examples import data_utils', "'ogb_examples'"),
    _case('numpy_ast_main_reads_stdin', 'np.matrixlib.defmatrix.ast.main()',
          "'ast'"),
    _case('contextlib_chdir_via_flax', "flax.core.lift.contextlib.chdir('/')",
          "'contextlib'"),
    # instance methods reached without an instance
    _case('decorated_dunder_calls_super', """
        class B(A):
            @keep
            def __call__(self, x):
                return super().__call__(jnp)
        """, "'super'"),
    _case('super_in_lambda_of_init', """
        class B(A):
            def __init__(self):
                self.f = lambda s: super().__init__(jnp)
        """, "'super'"),
    _case('super_alias', """
        class B(A):
            def __init__(self):
                s = super
        """, "'super'"),
    # builtins and operator through numpy and pytree key paths
    _case('numpy_frompyfunc_getattr', 'np.frompyfunc(getattr, 2, 1)',
          "'getattr'"),
    _case('numpy_vectorize_setattr', 'np.vectorize(setattr)(a, b, c)',
          "'setattr'"),
    _case('operator_via_numpy_core',
          "np.matrixlib.defmatrix.N.operator.attrgetter('f_globals')",
          "'operator'"),
    _case('builtins_via_numpy_core', 'np.matrixlib.defmatrix.N.builtins',
          "'builtins'"),
    _case('tree_key_path_of_forbidden_field', """
        @flax.struct.dataclass
        class S:
            modules: dict

        jax.tree_util.tree_map_with_path(lambda p, v: p, S(modules={}))
        """, "'modules'"),
    _case('except_star_binds_self',
          _in_setup('try:\n    pass\nexcept* Exception as self:\n    pass\n'),
          "rebinding of 'self'"),
]


@pytest.mark.parametrize('source,status,cause', HOSTILE + AUDITED + ATTACKS)
def test_hostile_program_is_refused(source, status, cause):
    violation = validator.validate(source)
    assert violation is not None, 'hostile program accepted'
    assert violation.status == status
    assert cause in violation.message


@pytest.mark.parametrize('source', [
    pytest.param(b'import os', id='bytes'),
    pytest.param(None, id='none'),
    pytest.param(42, id='int'),
    pytest.param(type('Evil', (str,), {})('x = 1'), id='str_subclass'),
])
def test_non_str_source_is_a_syntax_error(source):
    violation = validator.validate(source)
    assert violation == validator.Violation(
        SYNTAX, f'source must be str, not {type(source).__name__}')


def test_nested_parentheses_under_a_large_limit_do_not_crash():
    policy = dataclasses.replace(validator.DEFAULT_POLICY,
                                 max_source_chars=10**7)
    violation = validator.validate('(' * 10**6, policy)
    assert violation.status == SYNTAX


def test_message_names_line_of_first_violation_and_counts_the_rest():
    violation = validator.validate('x = 1\ny = eval("2")\nimport os\n')
    assert violation.message.startswith("line 2: use of forbidden builtin "
                                        "'eval'")
    assert '(and 1 more)' in violation.message


def test_source_is_never_run():
    assert validator.validate('raise SystemExit(3)') is None


def test_random_garbage_never_raises():
    rng = random.Random(0)
    alphabet = 'abcxyz_ ()[]{}:.,=+-*/\'"\\\n\t#@!0129\x00\u00e9'
    for _ in range(300):
        text = ''.join(rng.choice(alphabet) for _ in range(rng.randrange(80)))
        violation = validator.validate(text)
        assert violation is None or violation.status in (FORBIDDEN, SYNTAX)


# --- Policies ----------------------------------------------------------------


def test_default_policy_allows_exactly_the_design_modules():
    roots = {m.split('.')[0] for m in validator.DEFAULT_POLICY.allowed_modules}
    assert roots == {'jax', 'flax', 'optax', 'jraph', 'numpy', 'math',
                     'functools', 'typing', 'chex'}


def test_policy_extends_imports_to_task_helpers():
    policy = validator.Policy(
        frozenset(validator.DEFAULT_POLICY.allowed_modules
                  | {'clrs_tasks.processors'}))
    source = ('from clrs_tasks.processors import base\n'
              'import clrs_tasks.processors.mpnn\n')
    assert validator.validate(source, policy) is None
    violation = validator.validate('import clrs_tasks.data', policy)
    assert 'clrs_tasks.data' in violation.message


def test_policy_restricts_imports():
    policy = validator.Policy(frozenset({'math'}))
    assert validator.validate('import math', policy) is None
    violation = validator.validate('import numpy', policy)
    assert violation.message == ("line 1: import of 'numpy' is not allowed "
                                 '(allowed: math)')


def test_policy_and_violation_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        validator.DEFAULT_POLICY.max_source_chars = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        validator.Violation(FORBIDDEN, 'x').status = 'ok'


# --- Benign programs ---------------------------------------------------------

RESIDUAL_CNN = '''
"""A residual CNN; __call__ maps (batch, 40) signals to 10 logits."""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
    features: int = 32
    nlayer: int = 3

    @nn.compact
    def __call__(self, x):
        x = x[..., None]
        x = nn.relu(nn.Conv(features=self.features, kernel_size=(3,))(x))
        x = nn.avg_pool(x, window_shape=(2,), strides=(2,), padding='VALID')
        for _ in range(self.nlayer - 1):
            x = x + nn.relu(nn.Conv(self.features, kernel_size=(3,))(x))
        x = nn.max_pool(x, window_shape=(2,), strides=(2,))
        x = x.reshape((x.shape[0], -1))
        x = jnp.concatenate([x, x.mean(axis=-1, keepdims=True)], axis=-1)
        return nn.Dense(features=10)(nn.relu(nn.Dense(256)(x)))
'''

BIDIRECTIONAL_GRU = '''
import flax.linen as nn


class Model(nn.Module):
    hidden: int = 6

    @nn.compact
    def __call__(self, x):
        x = x[..., None]
        x = nn.Bidirectional(nn.RNN(nn.GRUCell(features=self.hidden)),
                             nn.RNN(nn.GRUCell(features=self.hidden)))(x)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(features=10)(x)
'''

MLP = '''
from typing import Callable, Optional, Sequence

import jax
import flax.linen as nn


class Model(nn.Module):
    features: Sequence[int] = (128, 64)
    activation: Callable = jax.nn.gelu
    dropout: Optional[float] = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, width in enumerate(self.features):
            x = self.activation(nn.Dense(width, name=f'dense_{i}')(x))
        return nn.Dense(10)(x)
'''

NORMALISED = '''
import functools
import math

import jax
import jax.numpy as jnp
import flax.linen as nn


class Block(nn.Module):
    features: int
    training: bool = False

    @nn.compact
    def __call__(self, x):
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not self.training, momentum=0.9)
        y = nn.LayerNorm()(x)
        init = nn.initializers.lecun_normal()
        y = nn.Dense(self.features, kernel_init=init)(y)
        y = norm()(y)
        y = nn.Dropout(rate=0.1, deterministic=not self.training)(y)
        scale = 1.0 / math.sqrt(self.features)
        return jnp.maximum(x + scale * y, 0.0)


class Model(nn.Module):
    depth: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnp.expand_dims(x, -1).astype(jnp.float32)
        x = nn.Dense(16)(x)
        for _ in range(self.depth):
            x = Block(16, training=train)(x)
        x = jnp.tanh(x.max(axis=1))
        noise = jax.random.normal(jax.random.PRNGKey(0), x.shape)
        return nn.Dense(10)(x + 0.0 * noise)
'''

SETUP_AND_SCAN = '''
import jax
import jax.numpy as jnp
import flax.linen as nn


class Model(nn.Module):
    hidden: int = 32

    def setup(self):
        self.cell = nn.GRUCell(features=self.hidden)
        self.head = nn.Dense(10)
        self.blocks = [nn.Dense(self.hidden) for _ in range(2)]

    def __post_init__(self):
        super().__post_init__()

    def __call__(self, x):
        def running_sum(total, x_t):
            return total + x_t, total + x_t

        _, sums = jax.lax.scan(running_sum, jnp.zeros(x.shape[0]), x.T)
        h = jnp.zeros((x.shape[0], self.hidden))
        for t in range(x.shape[1]):
            h, _ = self.cell(h, sums.T[:, t, None])
        for block in self.blocks:
            h = nn.gelu(block(h))
        return self.head(h)
'''

PROCESSOR = '''
import jax
import jax.numpy as jnp
import jraph
import chex
import optax
import flax.linen as nn


class Processor(nn.Module):
    """A CLRS-style message-passing processor."""
    out_size: int = 64

    @nn.compact
    def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden):
        chex.assert_rank(node_fts, 3)
        z = jnp.concatenate([node_fts, hidden], axis=-1)
        msgs = jnp.einsum('bij,bjd->bid', adj_mat, nn.Dense(self.out_size)(z))
        names = []
        names.extend(['{}_{}'.format('msg', 1), f'msg_{self.out_size}'])
        jax.debug.print('messages {m}', m=msgs.shape)
        out = jax.tree_util.tree_map(lambda t: t * 1.0, msgs)
        if hasattr(out, 'shape'):
            out = out + optax.safe_norm(z, 1e-6, axis=-1, keepdims=True)
        graph = jraph.GraphsTuple(nodes=out, edges=None, receivers=None,
                                  senders=None, globals=None, n_node=None,
                                  n_edge=None)
        graph = graph._replace(nodes=nn.relu(graph.nodes))
        return graph.nodes, None
'''

PLAIN_PYTHON = '''
import typing


class Schedule:
    def __init__(self, base: float):
        super().__init__()
        self.base = base

    def __repr__(self):
        return f'Schedule({self.base!r})'

    def __call__(self, step: int) -> float:
        return self.base / (1 + step)


def widths(n: int) -> typing.List[int]:
    total = 0
    def add(k):
        nonlocal total
        total += k
    out = [2 ** i for i in range(n) if i % 2 == 0]
    for w in out:
        add(w)
    match out:
        case [first, *rest]:
            out = [first] + rest
        case _:
            pass
    out.remove(out[0]) if len(out) > 1 else None
    text = 'a-b'.replace('-', '_')
    return out + [total, len(text)]
'''

STATE_AND_SETUP = '''
import functools
import math

import chex
import flax
import jax
import jax.numpy as jnp
import flax.linen as nn


@flax.struct.dataclass
class Carry:
    hidden: jnp.ndarray
    step: int = 0
    names: tuple = flax.struct.field(pytree_node=False, default=())


@chex.dataclass(frozen=True)
class Stats:
    mean: float
    count: int


@functools.total_ordering
@jax.tree_util.register_pytree_node_class
class Pair:
    SIZES = [2 ** i for i in range(3)]
    ZEROS = [0 for _ in range(3)]

    def __init__(self, a, b):
        self.a = a
        self.b = b
        self.scratch = None
        del self.scratch

    def __lt__(self, other):
        return self.a < other.a

    def __eq__(self, other):
        return self.a == other.a

    def total(self):
        return self.a + self.b

    def tree_flatten(self):
        return (self.a, self.b), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


class Block(nn.Module):
    features: int
    training: bool = False
    mode: str = 'relu'

    def setup(self):
        super().setup()
        self.dense = nn.Dense(self.features)
        self.norm = nn.LayerNorm()
        self.rate = 0.1 if self.training else 0.0
        self.count = 0
        self.count += 1

    def __call__(self, x):
        def act(v):
            return activation(self.mode)(v)
        return act(self.norm(self.dense(x)))


def activation(name):
    match name:
        case 'relu' | 'gelu':
            return nn.relu if name == 'relu' else nn.gelu
        case ('leaky', slope):
            return functools.partial(nn.leaky_relu, negative_slope=slope)
        case {'kind': 'elu', **rest} if not rest:
            return nn.elu
        case math.pi:
            return nn.tanh
        case [first, *others]:
            return activation(first)
        case _:
            return nn.relu


class Model(nn.Module):
    widths: tuple = (16, 16)
    training: bool = False

    @nn.compact
    def __call__(self, x):
        carry = Carry(hidden=x).replace(step=1)
        stats = Stats(mean=0.0, count=0)
        for width in self.widths:
            x = Block(width, training=self.training)(x)
        chex.assert_rank(x, 2)
        jax.debug.print('step {s}', s=carry.step)
        jax.debug.callback(lambda v: None, x)
        return nn.Dense(10)(x) + stats.mean + Pair(1, 2).total()
'''

BENIGN = [
    pytest.param(STATE_AND_SETUP, id='struct_fields_setup_stores_match'),
    pytest.param(RESIDUAL_CNN, id='residual_cnn'),
    pytest.param(BIDIRECTIONAL_GRU, id='bidirectional_gru'),
    pytest.param(MLP, id='mlp_with_typing'),
    pytest.param(NORMALISED, id='layernorm_batchnorm_dropout_partial_math'),
    pytest.param(SETUP_AND_SCAN, id='setup_scan_post_init'),
    pytest.param(PROCESSOR, id='clrs_processor_jraph'),
    pytest.param(PLAIN_PYTHON, id='plain_python_helpers'),
]


@pytest.mark.parametrize('source', BENIGN)
def test_benign_program_is_accepted(source):
    assert validator.validate(source) is None


_SEEDS = sorted(
    p for p in (pathlib.Path(__file__).parent.parent / 'seeds').glob('*/*.py')
    if not p.name.startswith('_'))


@pytest.mark.skipif(not _SEEDS, reason='no seed programs checked out')
@pytest.mark.parametrize('path', _SEEDS,
                         ids=lambda p: f'{p.parent.name}/{p.stem}')
def test_every_seed_program_is_accepted(path):
    assert validator.validate(path.read_text()) is None


@pytest.mark.parametrize('expression', [
    'x.reshape((2, -1))', 'x.shape', 'x.mean()', 'x.max()',
    'x.astype(jnp.int32)', 'jnp.concatenate([x, x])', 'nn.Dense(3)',
    'nn.Conv(3, (3,))', 'nn.relu', 'nn.compact', 'nn.GRUCell(4)', 'nn.RNN',
    'nn.Bidirectional', 'nn.LayerNorm()', 'nn.BatchNorm()', 'nn.Dropout(0.1)',
    'nn.avg_pool', 'nn.max_pool', 'jax.nn.gelu', 'jax.lax.scan',
    'functools.partial(f)', 'typing.Sequence', 'math.sqrt(2.0)',
    'self.features', 'jnp.expand_dims(x, 0)', 'jnp.maximum(x, 0)',
    'jnp.tanh(x)', 'jax.random.normal(k, (2,))', 'jnp.select([x > 0], [x])',
    'x.at[0].set(1)', 'nn.remat(nn.Dense)',
    'jax.checkpoint(f)', 'self.training', 'Block(4, training=True)',
    "'{} {:>4}'.format(a, b)", "jax.debug.print('{}', x)", 'xs.extend([1])',
    'self.make_rng("dropout")', "self.param('w', nn.initializers.zeros, (3,))",
    'flax.core.freeze(p)', 'optax.adam(1e-3)', 'chex.assert_shape(x, (2,))',
    'jax.tree_util.tree_map(f, t)', 'nn.initializers.lecun_normal()',
    'jax.debug.callback(f, x)', 'chex.assert_rank(x, 2)',
    "chex.assert_shape(x, (2,), custom_message='bad shape')",
    'jax.scipy.linalg.lu(a)',
])
def test_common_model_expression_is_accepted(expression):
    assert validator.validate(expression) is None
