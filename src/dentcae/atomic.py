"""Every file dentcae writes appears whole or not at all: write a temporary name, then rename.

    write_atomic("runs/x/summary.json", text)          # str or bytes
    with atomic_path("runs/x/final.caffemodel") as tmp:  # for writers that want a file name
        net.save(str(tmp))
    write_csv_atomic("runs/x/predictions.csv", rows)     # the csv module quotes commas and quotes
    folder_once(prep.dir / "pretext-ab12", "pretext data", "pretext.json", write)   # a derived folder

A reader never sees a half-written file; an exception leaves the old file (if any) and no temporary.
"""
import csv
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .locks import exclusive


@contextmanager
def atomic_path(path):
    """Yield a temporary sibling of `path` (same suffix, so format-sniffing writers still work);
    rename it onto `path` when the block succeeds, remove it when it raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def folder_once(out, what, marker, write):
    """Build the folder `out` once: `write(tmp)` fills a temporary sibling, which is renamed to `out`
    only when complete (its `marker` file written last shows it is). Other processes wait on a lock."""
    out = Path(out)
    with exclusive(out.parent / f".{out.name}.lock", f"{what} {out}", remove=True):
        if not (out / marker).exists():
            tmp = Path(tempfile.mkdtemp(prefix=out.name + ".partial-", dir=out.parent))
            try:
                write(tmp)
                shutil.rmtree(out, ignore_errors=True)
                shutil.move(str(tmp), str(out))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return out
