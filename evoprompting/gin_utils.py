"""Gin parsing for the binaries (`main`, `evaluate`). Libraries never import gin.

Gin files are looked up as given, then relative to the repository's `gin/`
folder's parent, so `--gin_file=gin/mnist1d/quick.gin` works from any folder.

A macro that the user sets (in a `--gin_bindings` or in a gin file of their
own, outside the project's `gin/` folder) and that nothing parsed reads
(`%NAME`) is an error naming the closest known macro: gin itself accepts
any new macro, so a typo (`ROUNDZ = 2`) would silently run the default.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from typing import Sequence

import gin

# gin's resource reader logs every include it resolves through the search path
# (as an error when the path is not relative to the working folder, though the
# include works): noise for our users, so those records are dropped.
logging.getLogger().addFilter(
    lambda r: not r.pathname.endswith(os.path.join('gin', 'resource_reader.py')))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A macro definition: an unindented `NAME = ...` (parameters are
# `configurable.name = ...`, or indented under `configurable:`).
_MACRO_DEFINITION = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)\s*=', re.MULTILINE)
_MACRO_REFERENCE = re.compile(r'%([A-Za-z_][A-Za-z0-9_]*)')
_INCLUDE = re.compile(r"""^include\s+['"]([^'"]+)['"]""", re.MULTILINE)
_PROJECT_GIN_DIR = os.path.join(REPO_ROOT, 'gin') + os.sep
# Packages of an extra, and how to install it (setup.py).
_CLRS_HINT = (". CLRS-30 needs the 'clrs' extra: pip install -e '.[clrs]' && "
              'pip install --no-deps dm-clrs==2.0.3')
_INSTALL_HINTS = {'jraph': _CLRS_HINT, 'clrs': _CLRS_HINT, 'chex': _CLRS_HINT,
                  'attrs': _CLRS_HINT}


class GinConfigError(ValueError):
    """A gin file or binding could not be used; the message says which."""


def resolve_gin_file(path: str) -> str:
    if os.path.isfile(path):
        return path
    candidate = os.path.join(REPO_ROOT, path)
    if os.path.isfile(candidate):
        return candidate
    raise GinConfigError(
        f'gin file not found: {path!r} (also looked in {REPO_ROOT})')


def parse(gin_files: Sequence[str], bindings: Sequence[str],
          entry_config: str = '') -> None:
    """Parses files, then a binary's own `entry_config`, then bindings.

    Raises:
      GinConfigError: naming the file or binding gin could not use.
    """
    files = [resolve_gin_file(f) for f in gin_files]
    gin.clear_config()
    gin.add_config_file_search_path(REPO_ROOT)
    try:
        for path in files:
            gin.parse_config_file(path)
        if entry_config:
            gin.parse_config(entry_config)
        gin.parse_config(bindings)
    except ModuleNotFoundError as e:
        raise GinConfigError(f'bad gin configuration: {e}'
                             f'{_install_hint(e)}') from None
    except (ValueError, TypeError, KeyError, NameError, ImportError,
            SyntaxError, AttributeError) as e:
        raise GinConfigError(f'bad gin configuration: {e}') from None
    _check_macros_are_read(files, entry_config, bindings)


def _install_hint(e: ModuleNotFoundError) -> str:
    """How to install the extra that provides the missing module, or ''.
    (gin re-raises import errors with its own message, without the name.)"""
    named = re.findall(r"No module named '([\w.]+)'|import of ([\w.]+) halted",
                       str(e))
    names = {e.name or ''} | {a or b for a, b in named}
    return next((_INSTALL_HINTS[n.split('.')[0]] for n in sorted(names)
                 if n.split('.')[0] in _INSTALL_HINTS), '')


def _with_includes(path: str, texts: dict[str, str]) -> None:
    """Adds the text of `path` and of every file it includes to `texts`."""
    path = os.path.realpath(path)
    if path in texts:
        return
    with open(path, encoding='utf-8') as f:
        texts[path] = f.read()
    for included in _INCLUDE.findall(texts[path]):
        _with_includes(resolve_gin_file(included), texts)


def _check_macros_are_read(files: Sequence[str], entry_config: str,
                           bindings: Sequence[str]) -> None:
    """Raises GinConfigError for a macro the user sets that nothing reads."""
    texts: dict[str, str] = {}
    for path in files:
        _with_includes(path, texts)
    everything = [*texts.values(), entry_config, *bindings]
    user = [text for path, text in texts.items()
            if not path.startswith(_PROJECT_GIN_DIR)]
    user += [binding.strip() for binding in bindings]
    read = {name for text in everything
            for name in _MACRO_REFERENCE.findall(text)}
    for name in sorted({name for text in user
                        for name in _MACRO_DEFINITION.findall(text)} - read):
        known = sorted(read | {n for text in everything
                               for n in _MACRO_DEFINITION.findall(text)}
                       - {name})
        close = difflib.get_close_matches(name, known, n=1)
        hint = (f'; did you mean {close[0]}?' if close else
                f'; the macros read are: {", ".join(sorted(read))}')
        raise GinConfigError(
            f'gin macro {name} is set but nothing in this configuration reads '
            f'it{hint}')


def call(fn, **kwargs):
    """Calls the gin-configured `fn`, reporting missing or bad parameters,
    and values that a configured argument (e.g. the task) refuses."""
    try:
        return gin.get_configurable(fn)(**kwargs)
    except (TypeError, ValueError) as e:
        built = re.findall(r"In call to configurable '(\w+)'", str(e))
        if ('gin' in str(e).lower() or 'REQUIRED' in str(e)
                or any(name != fn.__name__ for name in built)):
            raise GinConfigError(f'bad gin configuration: {e}') from None
        raise
