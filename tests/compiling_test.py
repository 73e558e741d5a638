"""evoprompting.tasks.compiling: XLA options and the threaded compiler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evoprompting.tasks import base, compiling


def test_compiler_options_compile_on_cpu_and_stay_off_other_backends(
        monkeypatch):
    square = jax.jit(lambda x: x * x).lower(jnp.arange(3.0))
    for purpose in ('once', 'train'):
        options = compiling.compiler_options(purpose)
        assert options  # The measured CPU settings, and XLA accepts them.
        np.testing.assert_array_equal(
            square.compile(compiler_options=options)(jnp.arange(3.0)),
            [0.0, 1.0, 4.0])
    with pytest.raises(ValueError, match="'once', 'train'"):
        compiling.compiler_options('eval')
    # xla_cpu_* flags must never reach a GPU or TPU compile.
    monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
    assert compiling.compiler_options('once') == {}
    assert compiling.compiler_options('train') == {}


def test_compiler_compiles_each_program_once_per_shapes():
    traces = []

    def double(x):
        traces.append(x.shape)  # Once per trace.
        return {'y': 2 * x}

    jitted = jax.jit(double)
    with compiling.Compiler(threads=2) as compiler:
        out = compiler.submit('double', jitted, 'once',
                              jax.ShapeDtypeStruct((3,), jnp.float32))
        assert out['y'].shape == (3,) and out['y'].dtype == jnp.float32
        compiler.submit('double', jitted, 'once', jnp.ones(3))
        y = compiler.run('double', jitted, 'once', jnp.arange(3.0))['y']
        z = compiler.run('double', jitted, 'train', jnp.ones((2, 2)))['y']
        executable = compiler.compiled('double', jitted, 'once', jnp.ones(3))
        assert executable(jnp.ones(3))['y'].tolist() == [2.0, 2.0, 2.0]
    np.testing.assert_array_equal(y, [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(z, 2 * np.ones((2, 2)))
    assert traces == [(3,), (2, 2)]
    assert compiler.seconds > 0


def test_lowering_and_compile_errors_are_build_errors():
    def bad(x):
        return x @ jnp.ones((4, 4))  # [3] x [4, 4]: a shape error.

    with compiling.Compiler(threads=1) as compiler:
        with pytest.raises(base.ProgramFailure, match='failed to compile') as e:
            compiler.run('bad', jax.jit(bad), 'once', jnp.ones(3))
    assert e.value.status == base.Status.BUILD_ERROR
    with pytest.raises(MemoryError):  # Out of memory is not a build error.
        with compiling.build_errors():
            raise MemoryError('no room')


def test_default_threads_is_one_compile_per_two_cores_up_to_four(monkeypatch):
    for cores, threads in ((1, 1), (2, 1), (3, 1), (8, 4), (96, 4)):
        monkeypatch.setattr(compiling.os, 'sched_getaffinity',
                            lambda pid, n=cores: set(range(n)))
        assert compiling.default_threads() == threads
