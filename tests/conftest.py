"""Test session set-up: a private cache folder, so tests never touch ~/.cache."""

import os
import shutil
import tempfile

from evoprompting import paths


def pytest_configure(config):
    del config
    if paths.CACHE_ENV not in os.environ:
        os.environ[paths.CACHE_ENV] = tempfile.mkdtemp(prefix='evoprompting-test-cache-')
        os.environ['EVOPROMPTING_TEST_OWNS_CACHE'] = '1'


def pytest_unconfigure(config):
    del config
    if os.environ.pop('EVOPROMPTING_TEST_OWNS_CACHE', None):
        shutil.rmtree(os.environ.pop(paths.CACHE_ENV), ignore_errors=True)
