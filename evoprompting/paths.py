"""Where the project keeps generated files between runs."""

import os

CACHE_ENV = 'EVOPROMPTING_CACHE'


def default_cache_dir() -> str:
    """$EVOPROMPTING_CACHE, else ~/.cache/evoprompting."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser('~'), '.cache', 'evoprompting')
