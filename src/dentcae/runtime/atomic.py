"""Every file dentcae writes appears whole or not at all: write a temporary name, then rename.

    write_atomic("runs/x/summary.json", text)          # str or bytes
    with atomic_path("runs/x/final.caffemodel") as tmp:  # for writers that want a file name
        net.save(str(tmp))
    write_csv_atomic("runs/x/predictions.csv", rows)     # the csv module quotes commas and quotes
    with staged_folder("data/cache/x") as tmp: ...     # a whole folder, renamed into place when complete
    folder_once(prep.dir / "pretext-ab12", "pretext data", "pretext.json", write)   # built once, locked

A reader never sees a half-written file or folder; an exception leaves the old one (if any) and no
temporary. StagedFolder is the one temporary-folder writer: prepared data, derived data (patches,
pretext copies), imported datasets and the phantom are all built through it.
"""
import csv
import glob
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .locks import exclusive


@contextmanager
def atomic_path(path):
    """Yield a temporary sibling of `path` (same suffix, so format-sniffing writers still work);
    rename it onto `path` when the block succeeds, remove it when it raises. A temporary that a
    killed writer left beside `path` goes first."""
    path = Path(path)
    if path.parent.is_dir():
        for stale in _left_by_dead_writers(path.parent, f".{path.stem}.tmp", rf"(\d+){re.escape(path.suffix)}"):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_sha256(path):
    """SHA-256 (hex) of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path, data):
    """Write text or bytes to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return Path(path)


def write_csv_atomic(path, rows):
    """Rows (lists) as CSV, quoted where a value holds a comma or a quote; written atomically."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return write_atomic(path, buf.getvalue())


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:           # another user's process
        return True
    return True


def _left_by_dead_writers(folder, prefix, rest):
    """The entries of `folder` named `prefix` + `rest` (a regex whose first group is the writer's
    pid) whose writer is dead (killed with -9 mid-write); a living writer's are not."""
    for entry in folder.glob(f"{glob.escape(prefix)}*"):
        m = re.fullmatch(rest, entry.name[len(prefix):])
        if m and int(m[1]) != os.getpid() and not _alive(int(m[1])):
            yield entry


def remove_stale_stages(out):
    """Remove the temporary siblings `.<name>.partial-<pid>-*` of `out` whose writer is dead; a
    living writer's stays. Returns what was removed."""
    out = Path(out)
    removed = list(_left_by_dead_writers(out.parent, f".{out.name}.partial-", r"(\d+)-.*"))
    for stale in removed:
        shutil.rmtree(stale, ignore_errors=True)
    return removed


class StagedFolder:
    """A folder built in a hidden temporary sibling (`path`) of `out`: `commit()` replaces `out` with
    it in one rename, `discard()` removes it. As a `with` block it is discarded when the block
    raises and stays staged otherwise (commit it yourself, after checking what was written). The
    sibling's name carries the writer's pid, so that the next writer of `out` removes it when a
    kill -9 left it behind."""

    def __init__(self, out):
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_stages(self.out)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-{os.getpid()}-", dir=self.out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o777 & ~umask)          # mkdtemp's 0700 would hide it from other users

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if kind is not None:
            self.discard()

    def commit(self):
        if self.out.is_dir() and not self.out.is_symlink():
            shutil.rmtree(self.out)
        elif self.out.exists() or self.out.is_symlink():
            self.out.unlink()
        self.path.rename(self.out)
        return self.out

    def discard(self):
        shutil.rmtree(self.path, ignore_errors=True)


def written_by(record, marker, legacy_keys):
    """Whether the JSON file `record` (predictions.json, import.json) says dentcae wrote its folder:
    `written_by: <marker>`, or, written before the marker, all of `legacy_keys`. Only such folders
    are ever replaced."""
    try:
        info = json.loads(Path(record).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and (info.get("written_by") == marker or set(legacy_keys) <= set(info))


@contextmanager
def staged_folder(out):
    """Yield a temporary folder; when the block succeeds it replaces `out`, when it raises it goes."""
    with StagedFolder(out) as stage:
        yield stage.path
        stage.commit()


def folder_once(out, what, marker, write):
    """Build the folder `out` once: `write(tmp)` fills a staged folder, renamed to `out` only when
    complete (its `marker` file written last shows it is). Other processes wait on a lock."""
    out = Path(out)
    with exclusive(out.parent / f".{out.name}.lock", f"{what} {out}", remove=True, wait=True):
        if not (out / marker).exists():
            with staged_folder(out) as tmp:
                write(tmp)
    return out
