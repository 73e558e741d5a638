"""One search over several processes (hosts), on JAX's multi-process runtime.

Every process runs the same command; `jax.distributed.initialize` joins them
(flags `--coordinator_address`, `--num_processes`, `--process_id`; on Cloud
TPU VMs JAX detects them itself). Process 0 owns the workdir and the store and
drives the search: it samples and tunes the LM on its own devices and spreads
each batch of programs over the processes (program i to process
i mod num_processes). Every other process only evaluates: it waits for its
share, evaluates it in its own sandbox workers on its own devices, and sends
each result back as it is ready; process 0 records results in the order they
arrive, as it records its own.

Messages go through the coordination service's key-value store (JSON
text): `work/<n>/<p>` (process 0's n-th batch for process p, or the word to
stop) and `result/<n>/<p>/<k>` (p's k-th result of batch n, in completion
order). A process that dies stops sending heartbeats; after
`heartbeat_timeout_s` the coordination service stops every other process
with an error naming the unhealthy task, so nothing hangs on a dead peer.
Running the same command again resumes from process 0's store.

Trusted data that must be the same everywhere and that workers must not see
(MNIST-1D's private generator seed) is sent by process 0 before anything is
evaluated (`Task.host_files`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import threading
from typing import Any, Callable, Sequence

from absl import logging
import jax

from evoprompting import paths
from evoprompting.tasks import base

# A result can take as long as a child's training; a dead peer is caught by
# the heartbeats, so waits are bounded only by this (milliseconds).
_WAIT_MS = 7 * 24 * 3600 * 1000
_STOP = 'stop'


class ClusterError(RuntimeError):
    """The processes of a search disagree, or process 0 failed."""


@dataclasses.dataclass
class Cluster:
    """This process's place among the search's processes, and (process 0)
    how many batches it has sent and whether it has told the others to
    stop."""

    process_id: int
    num_processes: int
    client: Any  # JAX's coordination service client (key-value store).
    batches: int = 0
    stopped: bool = False

    @property
    def is_driver(self) -> bool:
        return self.process_id == 0

    def stop_others(self, error: str = '') -> None:
        """Process 0: tells every other process to stop, with `error` (they
        exit with it) or without (the search is done). Once; a no-op
        elsewhere."""
        if not self.is_driver or self.stopped:
            return
        self.stopped = True
        for p in range(1, self.num_processes):
            self.send(f'work/{self.batches}/{p}', {_STOP: error or True})

    def send(self, key: str, value: Any) -> None:
        self.client.key_value_set(key, json.dumps(value))

    def receive(self, key: str) -> Any:
        return json.loads(self.client.blocking_key_value_get(key, _WAIT_MS))


def initialize(coordinator_address: str, num_processes: int, process_id: int,
               *, heartbeat_timeout_s: int = 60) -> Cluster | None:
    """Joins the search's processes; None for a single-process search.

    On a Cloud TPU VM pass `num_processes=0`: JAX detects the pod's
    processes. Must run before anything touches a device.
    """
    if num_processes == 1:
        return None
    kwargs = {} if num_processes == 0 else dict(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id)
    jax.distributed.initialize(**kwargs,
                               heartbeat_timeout_seconds=heartbeat_timeout_s,
                               shutdown_timeout_seconds=heartbeat_timeout_s)
    if jax.process_count() == 1:
        return None
    from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
    return Cluster(jax.process_index(), jax.process_count(),
                   jax_distributed.global_state.client)


def share_host_files(cluster: Cluster, task: base.Task) -> None:
    """Makes every process hold process 0's `task.host_files()`.

    Raises:
      ClusterError: a process already holds one of them with other content
        (another machine's private data: remove it, or search on its own).
    """
    if cluster.is_driver:
        files = task.host_files()
        for p in range(1, cluster.num_processes):
            cluster.send(f'host_files/{p}', files)
        return
    folder = task.private_paths()[0]
    for name, text in cluster.receive(f'host_files/{cluster.process_id}'
                                      ).items():
        path = os.path.join(folder, name)
        if paths.write_once(path, text) != text:
            raise ClusterError(
                f'{path} differs from process 0\'s; a multi-process search '
                'needs the same private data on every host')


class ClusterSandbox:
    """Process 0's sandbox: evaluates programs over every process (see the
    module docstring), with the interface of `evaluator.Sandbox`. Leaving it
    tells the other processes to stop (with process 0's error, if any)."""

    def __init__(self, local: Any, cluster: Cluster):
        self.local, self.cluster = local, cluster

    def evaluate(self, sources: Sequence[str], seeds: Sequence[int],
                 on_result: Callable[[int, base.EvalResult], None] | None = None,
                 build_only: bool = False) -> list[base.EvalResult]:
        """As `evaluator.Sandbox.evaluate`; `on_result` is called in this
        thread as results arrive from any process."""
        n, self.cluster.batches = self.cluster.batches, self.cluster.batches + 1
        count = self.cluster.num_processes
        shares = [list(range(p, len(sources), count)) for p in range(count)]
        for p in range(1, count):
            self.cluster.send(f'work/{n}/{p}', {
                'sources': [sources[i] for i in shares[p]],
                'seeds': [seeds[i] for i in shares[p]],
                'build_only': build_only})
        arrived: queue.Queue = queue.Queue()
        stop = threading.Event()  # Cancels this process's share.

        def evaluate_own() -> None:
            try:
                self.local.evaluate(
                    [sources[i] for i in shares[0]],
                    [seeds[i] for i in shares[0]],
                    on_result=lambda j, r: arrived.put((shares[0][j], r)),
                    build_only=build_only, cancel=stop)
            except BaseException as e:  # pylint: disable=broad-except
                arrived.put((None, e))

        def receive_from(p: int) -> None:
            try:
                for k in range(len(shares[p])):
                    message = self.cluster.receive(f'result/{n}/{p}/{k}')
                    if 'error' in message:
                        raise ClusterError(f'process {p}: {message["error"]}')
                    arrived.put((shares[p][message['index']],
                                 base.EvalResult.from_json(message['result'])))
            except BaseException as e:  # pylint: disable=broad-except
                arrived.put((None, e))

        own = threading.Thread(target=evaluate_own, daemon=True)
        own.start()
        for p in range(1, count):
            threading.Thread(target=receive_from, args=(p,),
                             daemon=True).start()
        results: list[base.EvalResult | None] = [None] * len(sources)
        try:
            for _ in range(len(sources)):
                i, result = arrived.get()
                if i is None:
                    raise result
                results[i] = result
                if on_result:
                    on_result(i, result)
        except BaseException:
            # Ctrl-C, an error here or from a process: this process's
            # programs stop at once, before its sandbox may close.
            self.local.cancel(stop)
            own.join()
            raise
        own.join()
        return results

    def close(self, error: str = '') -> None:
        """Tells every other process to stop, then closes the local sandbox."""
        self.cluster.stop_others(error)
        self.local.close()

    def __enter__(self) -> ClusterSandbox:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(f'{exc_type.__name__}: {exc}' if exc_type else '')


def serve(local: Any, cluster: Cluster) -> None:
    """A process other than 0: evaluates its share of each of process 0's
    batches in `local` (an `evaluator.Sandbox`) until told to stop.

    Raises:
      ClusterError: process 0 stopped with an error.
    """
    p = cluster.process_id
    logging.info('Process %d of %d: evaluating for process 0',
                 p, cluster.num_processes)
    n = 0
    while True:
        work = cluster.receive(f'work/{n}/{p}')
        if _STOP in work:
            if work[_STOP] is not True:
                raise ClusterError(f'process 0 stopped: {work[_STOP]}')
            logging.info('Process %d: process 0 finished the search', p)
            return
        done = 0

        def send(j: int, result: base.EvalResult) -> None:
            nonlocal done
            cluster.send(f'result/{n}/{p}/{done}',
                         {'index': j, 'result': result.to_json()})
            done += 1

        try:
            local.evaluate(work['sources'], work['seeds'], on_result=send,
                           build_only=work['build_only'])
        except Exception as e:
            # Process 0 stops with this error instead of waiting for results.
            cluster.send(f'result/{n}/{p}/{done}',
                         {'error': f'{type(e).__name__}: {e}'})
            raise
        n += 1
