"""EvoPrompting in JAX: the search, its tasks, sandbox and binaries."""

import importlib.util as _importlib_util

# The seed programs ship as the top-level package `seeds`. A folder named
# `seeds` (without __init__.py) in the working folder, such as a user's own
# seed programs, is found first by an editable install and hides it: say so.
_SEEDS = _importlib_util.find_spec('seeds')
if _SEEDS is None or _SEEDS.origin is None:
    raise ImportError(
        'the project\'s `seeds` package is hidden by a folder named seeds in '
        f'{", ".join(_SEEDS.submodule_search_locations) if _SEEDS else "?"}: '
        'run from another folder, or rename that folder (point '
        '`seeds_dir` at it under its new name)')
