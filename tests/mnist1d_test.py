"""MNIST-1D data: generated offline, cached by its arguments, split as the paper."""

import os

import numpy as np
import pytest

from evoprompting import paths
from evoprompting.tasks import mnist1d


@pytest.fixture
def no_network(monkeypatch):
    import requests

    def refuse(*args, **kwargs):
        raise AssertionError('tried to reach the network')
    monkeypatch.setattr(requests, 'get', refuse)
    monkeypatch.setattr(requests, 'request', refuse)


def test_generates_offline_and_caches(tmp_path, no_network):
    config = mnist1d.DataConfig(cache_dir=str(tmp_path))
    arrays = mnist1d.generate_arrays(config)
    assert arrays['x'].shape == (4000, 40) and arrays['x_test'].shape == (1000, 40)
    assert sorted(np.unique(arrays['y'])) == list(range(10))
    files = [f for f in os.listdir(tmp_path / 'mnist1d') if f.endswith('.npz')]
    assert len(files) == 1
    path = tmp_path / 'mnist1d' / files[0]
    mtime = os.path.getmtime(path)
    again = mnist1d.generate_arrays(config)
    assert os.path.getmtime(path) == mtime  # Read back, not regenerated.
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], again[key])


def test_cache_key_follows_generator_arguments(tmp_path):
    a = mnist1d.generate_arrays(mnist1d.DataConfig(cache_dir=str(tmp_path)))
    b = mnist1d.generate_arrays(
        mnist1d.DataConfig(cache_dir=str(tmp_path), generator_seed=7))
    assert len(list((tmp_path / 'mnist1d').glob('*.npz'))) == 2
    assert not np.array_equal(a['x'], b['x'])


def test_private_seed_is_drawn_once_and_kept_from_others(tmp_path):
    config = mnist1d.DataConfig(cache_dir=str(tmp_path))
    private = mnist1d.generate_arrays(config)
    seed_file = tmp_path / 'mnist1d' / 'private_seed'
    assert oct(os.stat(seed_file).st_mode & 0o777) == '0o600'
    seed = mnist1d.private_seed(config.folder)
    assert 0 <= seed < 2**32 and mnist1d.private_seed(config.folder) == seed
    published = mnist1d.generate_arrays(
        mnist1d.DataConfig(cache_dir=str(tmp_path), generator_seed=42))
    assert not np.array_equal(private['x'], published['x'])
    other = mnist1d.private_seed(str(tmp_path / 'elsewhere'))
    assert other != seed  # 32 random bits each: equal once in 4e9.
    assert str(tmp_path) in mnist1d.Mnist1dTask(data=config).private_paths()


def test_generation_leaves_global_random_state_alone(tmp_path):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    mnist1d.generate_arrays(mnist1d.DataConfig(cache_dir=str(tmp_path)))
    assert np.random.rand() == expected


def test_splits_match_the_paper(tmp_path):
    splits = mnist1d.load_splits(mnist1d.DataConfig(cache_dir=str(tmp_path)))
    assert splits.train_x.shape == (3500, 40) and splits.val_x.shape == (500, 40)
    assert splits.test_x.shape == (1000, 40)
    assert splits.train_x.dtype == np.float32 and splits.train_y.dtype == np.int32
    # Validation is a hold-out: no training row appears in it.
    train_rows = {row.tobytes() for row in splits.train_x}
    assert not any(row.tobytes() in train_rows for row in splits.val_x)
    other = mnist1d.load_splits(
        mnist1d.DataConfig(cache_dir=str(tmp_path), validation_seed=1))
    assert not np.array_equal(splits.val_x, other.val_x)


def test_cache_dir_default_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / 'env-cache'))
    assert paths.default_cache_dir() == str(tmp_path / 'env-cache')
    mnist1d.generate_arrays(mnist1d.DataConfig())
    assert os.listdir(tmp_path / 'env-cache' / 'mnist1d')


def test_train_config_rejects_inconsistent_budgets():
    with pytest.raises(ValueError, match='must divide eval_every'):
        mnist1d.TrainConfig(eval_every=100, steps_per_call=3)
    with pytest.raises(ValueError, match='must divide num_steps'):
        mnist1d.TrainConfig(num_steps=1000, eval_every=300, steps_per_call=1)
    with pytest.raises(ValueError, match='positive'):
        mnist1d.TrainConfig(batch_size=0)


def test_contract_and_seeds():
    task = mnist1d.Mnist1dTask()
    assert 'class Model(nn.Module)' in task.contract
    assert '[batch, 40]' in task.contract and '[batch, 10]' in task.contract
    names = [s.name for s in task.seed_programs()]
    assert names == ['greydanus_cnn', 'gru', 'mlp', 'residual_cnn']
