"""What the binaries show of the libraries' logging.

orbax logs a dozen INFO lines per checkpoint and JAX one per backend it
could not start (e.g. 'tpu' on a CPU host); `quiet_libraries()` hides those
INFO lines (warnings and errors stay), unless a binary's `--verbose` asks
for them.
"""

from __future__ import annotations

import logging

# Source paths of the chatty libraries' logging calls.
_CHATTY_LIBRARIES = ('/orbax/', '/jax/_src/xla_bridge.py')
# The loggers their records go through: absl's (orbax logs with absl) and
# JAX's own.
_LOGGERS = ('absl', 'jax._src.xla_bridge')


def quiet_library_info(record: logging.LogRecord) -> bool:
    """A logging filter: False for INFO (and lower) lines of chatty
    libraries, True for everything else."""
    return (record.levelno >= logging.WARNING
            or not any(part in record.pathname for part in _CHATTY_LIBRARIES))


def quiet_libraries() -> None:
    """Installs `quiet_library_info` on the loggers the libraries use."""
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(quiet_library_info)
