"""Test session set-up: a private cache folder, so tests never touch ~/.cache,
holding a fixed MNIST-1D private seed, so every session trains on the same
private draw (figures in tests do not vary from run to run)."""

import os
import shutil
import tempfile

from evoprompting import paths


def pytest_configure(config):
    del config
    if paths.CACHE_ENV not in os.environ:
        os.environ[paths.CACHE_ENV] = tempfile.mkdtemp(prefix='evoprompting-test-cache-')
        os.environ['EVOPROMPTING_TEST_OWNS_CACHE'] = '1'
        folder = os.path.join(os.environ[paths.CACHE_ENV], 'mnist1d')
        os.makedirs(folder)
        with open(os.path.join(folder, 'private_seed'), 'w') as f:
            f.write('20261203\n')


def pytest_unconfigure(config):
    del config
    if os.environ.pop('EVOPROMPTING_TEST_OWNS_CACHE', None):
        shutil.rmtree(os.environ.pop(paths.CACHE_ENV), ignore_errors=True)
