"""Where the project keeps generated files between runs, and how a file
that processes may race to create is written once."""

import os

CACHE_ENV = 'EVOPROMPTING_CACHE'


def default_cache_dir() -> str:
    """$EVOPROMPTING_CACHE, else ~/.cache/evoprompting."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser('~'), '.cache', 'evoprompting')


def write_once(path: str, text: str) -> str:
    """Creates `path` holding `text`, readable by its owner only, unless it
    exists; returns what `path` holds. Atomic: the text is written aside and
    linked into place, so of processes racing to create it the first wins and
    no reader sees half a file."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f'{path}.{os.getpid()}.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.remove(tmp)
    with open(path, encoding='utf-8') as f:
        return f.read()
