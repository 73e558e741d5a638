"""orbax checkpoints: round trip, placement, structure checks, replacement,
retention, and a kill during a save."""

import os
import random
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import checkpoints

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree(value=0):
    return {'embed': jnp.arange(12, dtype=jnp.float32).reshape(3, 4) + value,
            'layers': {'w': jnp.ones((4, 2), jnp.bfloat16)}}


def abstract(t):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), t)


def test_round_trip_is_exact(tmp_path):
    with checkpoints.CheckpointManager(str(tmp_path / 'ckpt')) as manager:
        manager.save(7, tree())
        assert manager.steps() == [7]
        restored = manager.restore(7, abstract(tree()))
    for a, b in zip(jax.tree.leaves(tree()), jax.tree.leaves(restored)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float32),
                                      np.asarray(b, np.float32))


def test_mismatched_trees_are_refused(tmp_path):
    with checkpoints.CheckpointManager(str(tmp_path / 'ckpt')) as manager:
        manager.save(0, tree())
        wrong_shape = tree()
        wrong_shape['embed'] = jnp.zeros((3, 5))
        with pytest.raises(ValueError, match=r"\['embed'\] has shape \(3, 4\)"):
            manager.restore(0, abstract(wrong_shape))
        missing = {'embed': tree()['embed']}
        with pytest.raises(ValueError, match='unexpected'):
            manager.restore(0, abstract(missing))
        with pytest.raises(FileNotFoundError, match='no checkpoint of step 1'):
            manager.restore(1)


def test_a_step_saved_again_is_replaced_and_old_steps_are_dropped(tmp_path):
    with checkpoints.CheckpointManager(str(tmp_path / 'ckpt'),
                                       max_to_keep=2) as manager:
        for step in range(3):
            manager.save(step, tree(step))
        manager.save(2, tree(10))
        assert manager.steps() == [1, 2]
        assert float(manager.restore(2, abstract(tree()))['embed'][0, 0]) == 10
    with checkpoints.CheckpointManager(str(tmp_path / 'ckpt')) as reopened:
        assert reopened.steps() == [1, 2]


# Saves ~2 MB checkpoints, one after another, for as long as it lives.
_SAVER = '''
import sys
import numpy as np
from lm import checkpoints
with checkpoints.CheckpointManager(sys.argv[1], max_to_keep=2) as manager:
    step = manager.steps()[-1] + 1 if manager.steps() else 0
    while True:
        manager.save(step, {'w': np.full((512, 1024), step, np.float32),
                            'step': np.asarray(step)})
        print(step, flush=True)
        step += 1
'''


def test_a_kill_during_a_save_leaves_the_last_complete_checkpoint(tmp_path):
    folder = str(tmp_path / 'ckpt')
    pause = random.Random(0)
    for _ in range(4):
        saver = subprocess.Popen([sys.executable, '-c', _SAVER, folder],
                                 stdout=subprocess.PIPE, text=True,
                                 cwd=REPO_ROOT)
        acknowledged = int(saver.stdout.readline())
        time.sleep(pause.uniform(0.0, 0.3))  # Mostly inside a save.
        saver.kill()
        saver.wait()
        with checkpoints.CheckpointManager(folder) as manager:
            steps = manager.steps()
            assert steps and steps[-1] >= acknowledged
            last = manager.restore(steps[-1])
            assert int(last['step']) == steps[-1]
            np.testing.assert_array_equal(last['w'], steps[-1])
