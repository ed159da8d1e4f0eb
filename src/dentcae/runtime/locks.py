"""Exclusive locks on run folders and cache entries: a second process fails at once, naming the first.

    with exclusive("runs/.cae.lock", "run folder runs/cae"):
        ...   # train

The lock is an flock on a small file beside the folder (so deleting the folder for --overwrite
cannot drop it) holding the owner's pid; the kernel releases it when the process dies, even by kill -9.
"""
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


class LockedError(RuntimeError):
    pass


@contextmanager
def exclusive(lock_path, what, remove=False):
    """Hold an exclusive lock on `lock_path` for the block; `remove` deletes the lock file after."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise LockedError(f"{what} is in use by another dentcae process (pid {holder}); wait for it "
                              f"to finish or stop it (lock: {lock_path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
        if remove:
            lock_path.unlink(missing_ok=True)
    except BaseException:
        if remove and os.pread(fd, 64, 0).decode(errors="replace").strip() == str(os.getpid()):
            lock_path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)                 # closing releases the flock
