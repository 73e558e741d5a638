"""Seed programs, one file each, read as text (never imported by the search).

`seeds/<task>/*.py` are package data: `read_seeds('mnist1d')` returns them as
(name, source) pairs in file-name order; `read_seeds('mnist1d', folder)`
reads a folder of the user's own instead.
"""

import importlib.resources
import pathlib


def read_seeds(task: str, folder: str = '') -> list[tuple[str, str]]:
    """Returns [(name, source)] for the seed files (`*.py`, not `_*`) of
    `task`, or of `folder` when given, sorted by name.

    Raises:
      FileNotFoundError: no such folder, or no seed file in it.
      ValueError: a file that is not UTF-8 text (the message names it).
    """
    where = (pathlib.Path(folder) if folder
             else importlib.resources.files(__name__).joinpath(task))
    if not where.is_dir():
        raise FileNotFoundError(f'no seed folder {folder!r}' if folder
                                else f'no seed folder for task {task!r}')
    files = sorted(f for f in where.iterdir()
                   if f.name.endswith('.py') and not f.name.startswith('_'))
    if not files:
        raise FileNotFoundError(f'no seed programs (*.py) in {where}')
    seeds = []
    for f in files:
        try:
            seeds.append((f.name[:-3], f.read_text(encoding='utf-8')))
        except UnicodeDecodeError as e:
            raise ValueError(f'seed {f} is not UTF-8 text: {e}') from None
    return seeds
