"""Loads the data side of dm-clrs (samplers, specs, probing, evaluation) without TF.

dm-clrs 2.0.3 lists TensorFlow and tfds among its requirements, and its package
`__init__` imports its haiku models and its TF dataset code. We use only its
numpy data side, so the project installs it without dependencies:

    pip install -e '.[clrs]'                  # jraph, chex, attrs (the light deps)
    pip install --no-deps dm-clrs==2.0.3      # the samplers, without TensorFlow

and `clrs_modules()` imports `clrs._src.samplers`, `specs`, `probing` and
`evaluation` without running `clrs/__init__.py`: `sys.modules['clrs']` becomes
a bare package object whose `__path__` is the installed folder (unless the
real package was already imported, which is then used as is). The only
TensorFlow reference on that path is one `isinstance(x, tf.Tensor)` check in
`clrs._src.probing`; while that module is imported, `tensorflow` resolves to a
stand-in whose `Tensor` type nothing is an instance of, and the stand-in is
removed from `sys.modules` afterwards, so nothing else ever sees it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import sys
import types

DM_CLRS_VERSION = '2.0.3'
INSTALL_HINT = ("pip install -e '.[clrs]' && "
                f'pip install --no-deps dm-clrs=={DM_CLRS_VERSION}')


def installed() -> bool:
    """Whether dm-clrs and the `clrs` extra (jraph) are installed, from their
    package metadata (importing dm-clrs' package would need TensorFlow, and
    `clrs_modules` leaves a bare `clrs` without an import spec)."""
    try:
        for distribution in ('dm-clrs', 'jraph'):
            importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class ClrsModules:
    """The dm-clrs modules the CLRS task uses."""

    samplers: types.ModuleType
    specs: types.ModuleType
    probing: types.ModuleType
    evaluation: types.ModuleType


def _bare_package() -> types.ModuleType:
    """`sys.modules['clrs']`: the real package if imported, else a bare one."""
    if 'clrs' in sys.modules:
        return sys.modules['clrs']
    spec = importlib.util.find_spec('clrs')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f'dm-clrs is not installed; install it with: {INSTALL_HINT}')
    package = types.ModuleType(
        'clrs', 'dm-clrs data side, loaded without its package __init__ '
        '(see clrs_tasks/_clrs_import.py).')
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules['clrs'] = package
    return package


def _tensorflow_stand_in() -> types.ModuleType:
    stand_in = types.ModuleType(
        'tensorflow', 'Stand-in used only while clrs._src.probing is imported.')
    stand_in.Tensor = type('Tensor', (), {})
    return stand_in


@functools.cache
def clrs_modules() -> ClrsModules:
    """Imports (once) and returns the dm-clrs data-side modules.

    Raises:
      ImportError: dm-clrs is not installed (the message says how to install
        it), or the installed version's data side needs more than we provide.
    """
    _bare_package()
    stood_in = 'tensorflow' not in sys.modules
    if stood_in:
        sys.modules['tensorflow'] = _tensorflow_stand_in()
    try:
        probing = importlib.import_module('clrs._src.probing')
        samplers = importlib.import_module('clrs._src.samplers')
        specs = importlib.import_module('clrs._src.specs')
        evaluation = importlib.import_module('clrs._src.evaluation')
    finally:
        if stood_in:
            del sys.modules['tensorflow']
    return ClrsModules(samplers=samplers, specs=specs, probing=probing,
                       evaluation=evaluation)
