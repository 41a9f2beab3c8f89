"""Run directories on disk: one writer at a time, all-or-nothing replacement, no stale temp files.

* One writer: a process that writes a run directory holds an exclusive ``fcntl.flock`` on the
  directory itself. The kernel releases it when the process ends, however it ends (kill -9
  included), so there is no stale lock to clean up. A second writer gets a one-line error.
* All or nothing: a new run is built in a temporary sibling ``.tmp-<name>-XXXXXX`` and takes the
  directory's name only once it holds its first checkpoint (the two directories are exchanged
  atomically where the system allows it). Until then an existing directory (``overwrite``) is
  untouched, and a run that fails or is killed before its first checkpoint leaves nothing that
  looks like a run. Nothing of an old run (eval.json, figures/) survives its replacement.
* No leaks: temp files (``.tmp-*``, left by a kill -9 inside an atomic write) and stale temp
  siblings are removed when a writer next opens the directory. A staged comparison
  (``.tmp-<name>-compare``, see ``pyvae.reports.compare_dir``) is not stale: the comparison that
  made it continues it or discards it.
* Files and directories are created with the modes the process's umask gives, as ``open`` and
  ``mkdir`` would.
"""
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import shutil
import tempfile

from ..errors import ConfigError
from .checkpoint import (CHECKPOINT, CONFIG, METRICS, TMP_PREFIX, atomic_write_text, dir_mode,
                         file_mode, save_checkpoint, umask, write_json)  # noqa: F401 (file_mode, umask: pyvae.training.rundir.*)


def lock(path: str) -> int:
    """An exclusive, non-blocking flock on the directory ``path``; returns the held descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ConfigError(f"{path} is in use by another pyvae process (one writer per run "
                              "directory); wait for it to finish") from None
        raise
    return fd


STAGED_SUFFIX = "-compare"  # .tmp-<name>-compare: a staged comparison, kept for its rerun


def _stale(name: str) -> bool:
    return name.startswith(TMP_PREFIX) and not name.endswith(STAGED_SUFFIX)


def _entries(path: str):
    """The directory's entries, less temp files."""
    return [n for n in os.listdir(path) if not n.startswith(TMP_PREFIX)]


def remove_stale_temp_files(path: str) -> None:
    """Remove ``.tmp-*`` entries of ``path`` (not staged comparisons); call only while holding
    the directory's lock.

    Args:
        path: the locked directory.
    """
    for name in os.listdir(path):
        if _stale(name):
            full = os.path.join(path, name)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                try:
                    os.unlink(full)
                except FileNotFoundError:
                    pass


def remove_stale_siblings(parent: str, name: str) -> None:
    """Remove the temp siblings ``.tmp-<name>-*`` whose writer is gone (their lock can be
    taken), staged comparisons (``.tmp-*-compare``) excepted.

    Args:
        parent: the directory that holds ``name``.
        name: the run or comparison directory's name.
    """
    prefix = f"{TMP_PREFIX}{name}-"
    for entry in os.listdir(parent):
        full = os.path.join(parent, entry)
        if not entry.startswith(prefix) or not _stale(entry) or not os.path.isdir(full) \
                or os.path.islink(full):
            continue
        try:
            fd = lock(full)
        except (ConfigError, OSError):
            continue  # a live writer's
        try:
            shutil.rmtree(full, ignore_errors=True)
        finally:
            os.close(fd)


def check_new(out: str, overwrite: bool = False) -> None:
    """Raise a ConfigError if a new run may not be written to ``out`` (writes nothing)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"{out} exists and is not a directory")
    if os.path.isdir(out) and not overwrite:
        if os.path.isfile(os.path.join(out, CHECKPOINT)):
            raise ConfigError(f"{out} already holds a run; resume it (--resume) or pass --overwrite")
        if _entries(out):
            raise ConfigError(f"{out} is not empty and is not a pyvae run; choose another "
                              "directory or pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(out))
    probe = parent
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ConfigError(f"cannot create {out}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create {out}: {probe} is not writable")


def replace_with(staging: str, out: str) -> None:
    """``staging`` takes ``out``'s place and what was at ``out`` is removed: one atomic exchange
    where the system has it, else two renames (a crash between them leaves the old contents in
    a temp sibling)."""
    if exchange(staging, out):
        old = staging
    else:
        old = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.path.basename(os.path.abspath(out))}-",
                               dir=os.path.dirname(os.path.abspath(out)))
        os.rmdir(old)
        os.rename(out, old)
        os.rename(staging, out)
    if os.path.islink(old):
        os.unlink(old)
    else:
        shutil.rmtree(old, ignore_errors=True)


def exchange(a: str, b: str) -> bool:
    """Atomically swap the paths ``a`` and ``b`` (Linux renameat2 RENAME_EXCHANGE); False if the
    system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


class RunDir:
    """The writer's handle on a run directory: ``path`` is where files go now.

    ``RunDir(out, resume=True)`` locks an existing run and cleans its temp files; otherwise a
    new run: ``out`` is reserved (created empty if missing) and locked, files go to a locked temp
    sibling until ``commit()`` (call it once the first checkpoint is written there) swaps it in.
    ``close()`` releases the locks; if nothing was committed, the temp sibling and a directory
    reserved here are removed again.
    """

    def __init__(self, out: str, overwrite: bool = False, resume: bool = False):
        self.out = out
        self._fds = []
        self.staging = None
        self._reserved = False
        if resume:
            if not os.path.isdir(out):
                raise ConfigError(f"cannot resume: {out} is not a directory")
            self._fds.append(lock(out))
            remove_stale_temp_files(out)
            remove_stale_siblings(*os.path.split(os.path.abspath(out)))
            self.path = out
            return
        if os.path.islink(out):  # a link to a run: the run it names is replaced, the link kept
            out = os.path.realpath(out)
        self.out = out
        check_new(out, overwrite)
        parent, name = os.path.split(os.path.abspath(out))
        os.makedirs(parent, exist_ok=True)
        try:
            os.mkdir(out, dir_mode())
            self._reserved = True
        except FileExistsError:
            pass
        try:
            self._fds.append(lock(out))
            check_new(out, overwrite)  # again, under the lock: another writer may have been first
            remove_stale_siblings(parent, name)
            self.staging = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-", dir=parent)
            os.chmod(self.staging, dir_mode())
            self._fds.append(lock(self.staging))
        except BaseException:
            self.close()
            raise
        self.path = self.staging

    @property
    def committed(self) -> bool:
        return self.staging is None

    def commit(self) -> None:
        """The temp sibling becomes ``out``; what was there before is removed."""
        if self.staging is None:
            return
        replace_with(self.staging, self.out)
        self.staging = None
        self.path = self.out

    def write_metrics(self, history) -> None:
        atomic_write_text(os.path.join(self.path, METRICS),
                          "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))

    def write(self, config: dict, history, checkpoint: dict) -> None:
        """config.json, metrics.jsonl, then checkpoint.pt (so metrics never lag the checkpoint),
        each atomically; the first checkpoint of a new run then commits it."""
        write_json(os.path.join(self.path, CONFIG), config)
        self.write_metrics(history)
        save_checkpoint(os.path.join(self.path, CHECKPOINT), checkpoint)
        self.commit()

    def close(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
            if self._reserved:
                try:
                    os.rmdir(self.out)
                except OSError:
                    pass
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
