"""A copy of a run's workdir kept up to date while the run writes it.

On a Cloud TPU VM a preemption deletes the VM and its disk; with
`--mirror_to=gs://BUCKET/RUN` the search binary copies its workdir there after
every recorded child (not once a round), so a restarted VM restores the
workdir from the bucket and resumes, losing at most the children in flight.
TensorBoard can read the bucket directly.

A destination is a `gs://` URL (copied with `gcloud storage rsync
--recursive --delete-unmatched-destination-objects`, which uploads only what
changed) or a local folder (copied file by file, each file replaced
atomically, only files whose size or modification time changed; for a
mounted bucket, a network disk, or tests). Either way the copy is exact:
files the run deleted (old checkpoints, finished temporaries) are deleted
from it. So a local folder must be new, empty, or a mirror already (it holds
MARKER, written by the first copy): a folder of other files is refused, never
emptied.

Copies run on one background thread: requests made while a copy runs are
coalesced into one further copy, so the search never waits for the network
and the copy is at most one copy behind. `close` makes a last copy and waits
for it. A failed copy is logged and retried at the next request; it never
stops the search.

Files being written while they are copied are safe to restore: the store's
journal repairs a torn last line on open (`store.CandidateStore.open`), other
records are replaced atomically, and orbax ignores unfinished checkpoints.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading

from absl import logging

GCS_PREFIX = 'gs://'
# In a local mirror: marks the folder as one, so later runs may delete in it.
MARKER = '.evoprompting-mirror'


def check_destination(dest: str, workdir: str) -> None:
    """Raises ValueError for a destination that cannot mirror `workdir`."""
    if dest.startswith(GCS_PREFIX):
        if len(dest) == len(GCS_PREFIX) or dest[len(GCS_PREFIX)] == '/':
            raise ValueError(f'{dest!r} names no bucket (gs://BUCKET/PATH)')
        return
    if '://' in dest:
        raise ValueError(f'{dest!r}: only gs:// URLs and local folders are '
                         'supported')
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise ValueError(f'{dest} exists and is not a folder')
    if (os.path.isdir(dest) and os.listdir(dest)
            and not os.path.exists(os.path.join(dest, MARKER))):
        raise ValueError(f'{dest} holds files and is not a mirror (no '
                         f'{MARKER}); the mirror deletes what the workdir '
                         'does not hold, so give a new or empty folder')
    mirror, source = os.path.realpath(dest), os.path.realpath(workdir)
    if (mirror == source or mirror.startswith(source + os.sep)
            or source.startswith(mirror + os.sep)):
        raise ValueError(f'the mirror {dest} and the workdir {workdir} must '
                         'not contain one another')


def copy_tree(source: str, dest: str) -> int:
    """Copies every regular file under `source` into `dest` whose size or
    modification time differs there; each file is written to a temporary
    name and renamed. Files that vanish meanwhile are skipped; other files
    that cannot be copied are logged and skipped, so one never stops the
    rest. Then deletes from `dest` the files and folders `source` does not
    hold (except MARKER, written first). Returns the number of files copied."""
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, MARKER), 'a', encoding='utf-8'):
        pass
    copied = 0
    for folder, _, files in os.walk(source):
        target_folder = os.path.join(dest, os.path.relpath(folder, source))
        os.makedirs(target_folder, exist_ok=True)
        for name in files:
            src, dst = os.path.join(folder, name), os.path.join(target_folder,
                                                                name)
            try:
                st = os.stat(src)
                if not stat.S_ISREG(st.st_mode):
                    continue
                try:
                    dt = os.stat(dst)
                    if (dt.st_size, dt.st_mtime_ns) == (st.st_size,
                                                        st.st_mtime_ns):
                        continue
                except FileNotFoundError:
                    pass
                tmp = dst + '.mirror-tmp'
                shutil.copy2(src, tmp)
                os.replace(tmp, dst)
                copied += 1
            except FileNotFoundError:  # Replaced or removed meanwhile.
                continue
            except OSError as e:
                logging.warning('Not mirrored: %s: %s', src, e)
    _delete_unmatched(source, dest)
    return copied


def _delete_unmatched(source: str, dest: str) -> None:
    """Deletes what `dest` holds and `source` does not (see copy_tree)."""
    for folder, folders, files in os.walk(dest, topdown=False):
        relative = os.path.relpath(folder, dest)
        for name in files:
            if relative == '.' and name == MARKER:
                continue
            if not os.path.lexists(os.path.join(source, relative, name)):
                try:
                    os.remove(os.path.join(folder, name))
                except OSError as e:
                    logging.warning('Not deleted from the mirror: %s: %s',
                                    os.path.join(folder, name), e)
        for name in folders:
            if not os.path.isdir(os.path.join(source, relative, name)):
                try:
                    os.rmdir(os.path.join(folder, name))  # Emptied above.
                except OSError as e:
                    logging.warning('Not deleted from the mirror: %s: %s',
                                    os.path.join(folder, name), e)


def gcs_command(source: str, dest: str) -> list[str]:
    """The command that copies folder `source` to the gs:// URL `dest`."""
    return ['gcloud', 'storage', 'rsync', '--recursive',
            '--delete-unmatched-destination-objects', source, dest]


class Mirror:
    """Keeps `dest` a copy of `workdir` (see the module docstring).

    Use as a context manager, or call `close`: `request` after each write.
    """

    def __init__(self, workdir: str, dest: str):
        check_destination(dest, workdir)
        self.workdir, self.dest = workdir, dest
        self.copies = 0  # Copies completed.
        self._wanted = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name='mirror',
                                        daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Asks for a copy; returns at once."""
        self._wanted.set()

    def close(self) -> None:
        """Makes a last copy of the workdir as it is now, and waits for it."""
        if self._closing:
            return
        self._closing = True
        self._wanted.set()
        self._thread.join()

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            closing = self._closing
            self._copy()
            if closing:
                return

    def _copy(self) -> None:
        try:
            if self.dest.startswith(GCS_PREFIX):
                result = subprocess.run(
                    gcs_command(self.workdir, self.dest), capture_output=True,
                    text=True, timeout=3600)
                if result.returncode:
                    raise OSError(f'gcloud exit status {result.returncode}: '
                                  f'{result.stderr.strip()[-2000:]}')
            else:
                copy_tree(self.workdir, self.dest)
            self.copies += 1
        except Exception as e:  # pylint: disable=broad-except
            # Never ends the thread: the next record tries again.
            logging.warning('Mirroring %s to %s failed (retried at the next '
                            'record): %s', self.workdir, self.dest, e)
