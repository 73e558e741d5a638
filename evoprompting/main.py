r"""The EvoPrompting binary: parses flags and gin, records the run, calls one function.

Usage (from the repository root):

  python -m evoprompting.main --gin_file=gin/mnist1d/quick.gin --workdir=DIR \
      [--gin_file=MORE.gin ...] [--gin_bindings='mnist1d.TrainConfig.num_steps=500']

Gin files are layered in the order given, then bindings. The operative
configuration is written to DIR/config.gin and versions, devices and the git
revision to DIR/run_metadata.json before any work starts. Until the search loop
lands, the configured job evaluates the task's seed programs in the sandbox and
prints a table (see `evoprompting.evaluation.evaluate_seeds`).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

from absl import app, flags, logging
import gin

from evoprompting import evaluation, gin_utils

FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
    'gin_file', None, 'Gin config files, applied in order (e.g. '
    'gin/mnist1d/quick.gin). Relative paths are also looked up in the '
    'repository root.')
flags.DEFINE_multi_string(
    'gin_bindings', [], 'Individual gin bindings applied after the files, '
    "e.g. --gin_bindings='mnist1d.TrainConfig.num_steps=500'.")
flags.DEFINE_string('workdir', None, 'Output folder of the run (created if '
                    'missing): config.gin, run_metadata.json, results.')
flags.mark_flags_as_required(['gin_file', 'workdir'])

_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'gin-config',
             'numpy', 'mnist1d', 'jraph', 'tensorboardX')


def _git_revision() -> str:
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=gin_utils.REPO_ROOT,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def run_metadata() -> dict:
    """Versions, devices and git revision of this run."""
    import jax  # pylint: disable=g-import-not-at-top
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'argv': sys.argv,
        'python': sys.version,
        'platform': platform.platform(),
        'packages': versions,
        'devices': [str(d) for d in jax.devices()],
        'git_revision': _git_revision(),
    }


def write_run_record(workdir: str) -> None:
    """Writes config.gin (operative config) and run_metadata.json."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.gin'), 'w', encoding='utf-8') as f:
        f.write(gin.config_str())
    with open(os.path.join(workdir, 'run_metadata.json'), 'w',
              encoding='utf-8') as f:
        json.dump(run_metadata(), f, indent=2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
        gin_utils.parse(FLAGS.gin_file, FLAGS.gin_bindings)
        write_run_record(FLAGS.workdir)
        logging.info('Config written to %s', FLAGS.workdir)
        gin_utils.call(evaluation.evaluate_seeds, workdir=FLAGS.workdir)
    except gin_utils.GinConfigError as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    app.run(main)
