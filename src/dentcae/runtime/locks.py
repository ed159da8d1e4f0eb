"""Exclusive locks on run folders and cache entries.

    with exclusive("runs/.cae.lock", "run folder runs/cae"):            # a second process fails at once
        ...   # train
    with exclusive("cache/.x.lock", "cache entry cache/x", wait=True):  # a second one waits, then reuses
        ...   # build the entry once

The lock is an flock on a small file beside the folder (so deleting the folder for --overwrite
cannot drop it) holding the owner's pid; the kernel releases it when the process dies, even by kill -9.
A run folder is one process's (two trainings into one folder fail, naming the first); a cache entry
is built by the first process while the others wait for it (two table jobs on a cold cache), then
find it built.
"""
import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path


class LockedError(RuntimeError):
    pass


def _holder(fd):
    return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"


def _acquire(lock_path, what, wait):
    """An open descriptor of `lock_path` holding its flock. Waiting: the lock file may be removed by
    its holder meanwhile (remove=True), so the lock counts only on the file still at that path."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                holder = _holder(fd)
                os.close(fd)
                raise LockedError(f"{what} is in use by another dentcae process (pid {holder}); wait for it "
                                  f"to finish or stop it (lock: {lock_path})") from None
            print(f"waiting for {what}: another dentcae process (pid {_holder(fd)}) is making it", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextmanager
def exclusive(lock_path, what, remove=False, wait=False):
    """Hold an exclusive lock on `lock_path` for the block; `remove` deletes the lock file after;
    `wait` waits for another holder instead of failing."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock_path, what, wait)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
        if remove:
            lock_path.unlink(missing_ok=True)
    except BaseException:
        if remove and _holder(fd) == str(os.getpid()):
            lock_path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)                 # closing releases the flock
