"""Running the torch-side reference scripts of the benchmarks in a subprocess.

torch and transformers are no dependencies of the project, so a benchmark that
compares against them runs its reference script (benchmarks/torch_reference.py,
benchmarks/hf_reference.py) under another interpreter, `--torch_python`, and
reads back the one JSON object the script prints last.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import Any, Sequence


def find_torch_python(choice: str, modules: Sequence[str] = ('torch', 'numpy')
                      ) -> tuple[str, str]:
    """(interpreter, '') or ('', why the reference cannot run).

    Args:
      choice: a `--torch_python` value: a path to an interpreter; '' for this
        interpreter if it can import `modules[0]`; 'none' to skip.
      modules: what the reference script imports.
    """
    if choice == 'none':
        return '', 'skipped (--torch_python=none)'
    if not choice:
        if importlib.util.find_spec(modules[0]) is None:
            return '', (f'no {modules[0]} in {sys.executable}; pass '
                        '--torch_python=/path/to/python of an environment '
                        f'with {", ".join(modules)}')
        return sys.executable, ''
    try:
        probe = subprocess.run([choice, '-c', f'import {", ".join(modules)}'],
                               capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        return '', f'{choice}: {e}'
    if probe.returncode:
        lines = probe.stderr.strip().splitlines()
        return '', f'{choice}: {lines[-1] if lines else "import failed"}'
    return choice, ''


def run_json(python: str, script: str, args: Sequence[str]) -> dict[str, Any]:
    """Runs `python script *args`; returns the JSON object on its last stdout line.

    Raises:
      RuntimeError: the script failed (the message ends with its stderr).
    """
    out = subprocess.run([python, script, *args], capture_output=True, text=True,
                         check=False)
    if out.returncode:
        raise RuntimeError(f'{script} failed: {out.stderr[-1500:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])
