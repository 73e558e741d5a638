"""Data-parallel training: a batch split over two CPU devices trains what one
device trains (MNIST-1D and CLRS), and batch sizes that do not split evenly
are refused.

Each device count runs in its own process (JAX fixes the CPU device count
when it starts), with the session's cache, so both train on the same data.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

_TRAIN = textwrap.dedent('''
    import json, sys
    import jax
    jax.config.update('jax_num_cpu_devices', int(sys.argv[1]))
    import numpy as np
    from clrs_tasks import data, task as clrs_task, train
    from evoprompting.tasks import base, classifier_training, mnist1d
    assert len(jax.devices()) == int(sys.argv[1]), jax.devices()

    # Whether each compiled training step sums gradients across devices.
    from evoprompting.tasks import compiling
    all_reduce = []
    compiled = compiling.Compiler.compiled
    def recording(self, name, *args):
        executable = compiled(self, name, *args)
        if name == 'train':
            all_reduce.append('all-reduce' in executable.as_text())
        return executable
    compiling.Compiler.compiled = recording

    def run(namespace_source, preamble, name):
        namespace = {}
        exec(preamble + namespace_source, namespace)
        return namespace[name]

    out = {}
    seeds = {s.name: s.source for s in mnist1d.Mnist1dTask().seed_programs()}
    for seed_name in ('mlp', 'greydanus_cnn'):
        result = classifier_training.train_and_evaluate(
            run(seeds[seed_name], mnist1d.PREAMBLE, 'Model'),
            mnist1d.load_splits(mnist1d.DataConfig()),
            mnist1d.TrainConfig(num_steps=20, eval_every=10, batch_size=32),
            max_params=10**6, seed=0, num_classes=10)
        out[seed_name] = result.metrics
    task = clrs_task.ClrsTask(
        data=data.DataConfig(algorithm='bfs', train_count=8, val_count=4,
                             test_count=4, test_size=8),
        train=train.TrainConfig(num_steps=4, eval_every=2, batch_size=4,
                                eval_batch_size=4, hidden_dim=8))
    task.prepare()
    train_pools, val, test = data.load_splits(task.data)
    result = train.train_and_evaluate(
        run(task.seed_programs()[0].source, task.preamble,
            'get_triplet_msgs'),
        train.Splits(train_pools, val, test), task.train,
        max_params=10**6, seed=0)
    out['clrs'] = result.metrics
    # Batches that do not split evenly over the devices are refused.
    refused = []
    uneven = [dict(batch_size=3), dict(eval_batch_size=3)]
    for config in uneven if len(jax.devices()) > 1 else []:
        try:
            train.train_and_evaluate(
                run(task.seed_programs()[0].source, task.preamble,
                    'get_triplet_msgs'),
                train.Splits(train_pools, val, test),
                train.TrainConfig(**{**dict(num_steps=1, hidden_dim=8, batch_size=4,
                                            eval_batch_size=4),
                                     **config}), max_params=10**6, seed=0)
        except ValueError as e:
            refused.append(str(e))
    out['refused'] = refused
    out['all_reduce'] = sorted(set(all_reduce))
    print('RESULT ' + json.dumps(out))
''')


def _train_on(*device_counts: int) -> list[dict]:
    """Trains in one process per device count, the processes side by side
    (each compiles on one thread)."""
    procs = [subprocess.Popen(
        [sys.executable, '-c', _TRAIN, str(n)],
        env=dict(os.environ, JAX_PLATFORMS='cpu'), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for n in device_counts]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        line, = [l for l in out.splitlines() if l.startswith('RESULT ')]
        results.append(json.loads(line[len('RESULT '):]))
    return results


def test_two_devices_train_what_one_device_trains():
    one, two = _train_on(1, 2)
    assert one.pop('refused') == []
    assert one.pop('all_reduce') == [False] and two.pop('all_reduce') == [True]
    assert two.pop('refused') == [
        "batch_size 3 must be divisible by the worker's 2 devices",
        "eval_batch_size 3 must be divisible by the worker's 2 devices"]
    assert one.keys() == two.keys() == {'mlp', 'greydanus_cnn', 'clrs'}
    for name in one:
        assert one[name].keys() == two[name].keys(), name
        for metric, value in one[name].items():
            # Summing the gradient over two devices reorders float additions;
            # every score stays within one validation/test example.
            np.testing.assert_allclose(two[name][metric], value, atol=0.02,
                                       err_msg=f'{name} {metric}')
    # The runs trained: not every model at chance.
    assert one['mlp']['val_accuracy'] > 0.15


