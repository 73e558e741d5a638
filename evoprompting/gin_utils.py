"""Gin parsing for the binaries (`main`, `evaluate`). Libraries never import gin.

Gin files are looked up as given, then relative to the repository's `gin/`
folder's parent, so `--gin_file=gin/mnist1d/quick.gin` works from any folder.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import gin

# gin's resource reader logs every include it resolves through the search path
# (as an error when the path is not relative to the working folder, though the
# include works): noise for our users, so those records are dropped.
logging.getLogger().addFilter(
    lambda r: not r.pathname.endswith(os.path.join('gin', 'resource_reader.py')))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    except (ValueError, TypeError, KeyError, NameError, ImportError,
            SyntaxError, AttributeError) as e:
        raise GinConfigError(f'bad gin configuration: {e}') from None


def call(fn, **kwargs):
    """Calls the gin-configured `fn`, reporting missing or bad parameters."""
    try:
        return gin.get_configurable(fn)(**kwargs)
    except (TypeError, ValueError) as e:
        if 'gin' in str(e).lower() or 'REQUIRED' in str(e):
            raise GinConfigError(f'bad gin configuration: {e}') from None
        raise
