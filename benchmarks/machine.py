"""The machine a benchmark runs on, in one line: every benchmark prints it
(timings differ between CPU models, e.g. AMD and Intel)."""

from __future__ import annotations

import os


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else 'unknown CPU'."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown CPU'


def describe() -> str:
    """CPU model, the cores this process may use, and the load average."""
    cores = len(os.sched_getaffinity(0))
    return (f'{cpu_model()}, {cores} cores, load average '
            f'{os.getloadavg()[0]:.1f}')
