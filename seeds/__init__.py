"""Seed programs, one file each, read as text (never imported by the search).

`seeds/<task>/*.py` are package data: `read_seeds('mnist1d')` returns them as
(name, source) pairs in file-name order.
"""

import importlib.resources


def read_seeds(task: str) -> list[tuple[str, str]]:
    """Returns [(name, source)] for the seed files of `task`, sorted by name."""
    folder = importlib.resources.files(__name__).joinpath(task)
    if not folder.is_dir():
        raise FileNotFoundError(f'no seed folder for task {task!r}')
    files = sorted(f for f in folder.iterdir()
                   if f.name.endswith('.py') and not f.name.startswith('_'))
    return [(f.name[:-3], f.read_text(encoding='utf-8')) for f in files]
