"""What every importer shares: the atomic dataset-folder writer and point checks."""
import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml

from ...runtime.atomic import StagedFolder, write_csv_atomic, written_by
from ...runtime.outputs import overlap
from ..dataset import DataError, load_dataset


def regular_file(path, what):
    """`path` itself when it is a regular file (or a link to one); a FIFO, a folder or a device is
    refused before anything reads it (reading a FIFO would hang)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} is {'missing' if not path.exists() else 'not a regular file'}")
    return path


def check_spacing(spacing):
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) or not math.isfinite(spacing) or spacing <= 0:
        raise DataError(f"--spacing must be a positive, finite number of mm per pixel, got {spacing!r}")
    return float(spacing)


MARKER = "dentcae import"       # import.json's written_by: the folder is dentcae's (only such are replaced)


def check_paths(src, out, overwrite):
    """The output folder is never the source, never contains it and never lies inside it, and an
    existing one is replaced (with `overwrite`) only when an earlier import wrote it."""
    how = overlap(out, src)
    if how:
        raise DataError(f"--out {out} {how} the source folder {src}; choose an output folder outside it "
                        "(nothing was written or deleted)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise DataError(f"{out} exists and is not empty: choose another --out or pass --overwrite")
        if not written_by(out / "import.json", MARKER, ("source", "format")):
            raise DataError(f"{out} exists and holds no import.json of `dentcae import`: it was not written by "
                            "dentcae, so --overwrite does not replace it (nothing was deleted)")


def image_size(path_or_bytes, where):
    """(width, height) of an image file or of encoded image bytes; DataError naming `where`."""
    raw = path_or_bytes if isinstance(path_or_bytes, bytes) else regular_file(path_or_bytes, "image").read_bytes()
    if not raw:
        what = "" if isinstance(path_or_bytes, bytes) else f" {path_or_bytes}"
        raise DataError(f"{where}: the image{what} is empty (0 bytes)")
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DataError(f"{where}: cannot read the image (unreadable or truncated file)")
    return img.shape[1], img.shape[0]


def check_inside(points, size, where):
    """Points (K, 2) must lie in the image (pixel centres 0..W-1, half a pixel of slack)."""
    w, h = size
    for i, (x, y) in enumerate(points):
        if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
            raise DataError(f"{where}: point {i + 1} ({x:g}, {y:g}) lies outside the {w}x{h} image")


def _coords(points, k):
    """x1,y1,...,xK,yK cells (3 decimals; original integers stay exact), or K empty pairs."""
    if points is None:
        return [""] * (2 * k)
    return [f"{v:.3f}".rstrip("0").rstrip(".") for v in np.asarray(points, float).reshape(-1)]


class DatasetWriter:
    """Builds a dataset folder in a staged folder (runtime.atomic.StagedFolder); `finish` validates
    it with the dataset loader and renames it into place. Leaving the `with` block by an error
    removes it."""

    def __init__(self, src, out, overwrite=False):
        self.out = Path(out)
        check_paths(src, out, overwrite)
        self.stage = StagedFolder(self.out)
        self.tmp = self.stage.path
        self.linked = self.copied = 0

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        self.stage.__exit__(kind, *exc)

    def add_file(self, src, name):
        """Link (else copy) the image file `src` to `name` inside the dataset; returns `name`."""
        dst = self.tmp / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(Path(src).resolve(), dst)
            self.linked += 1
        except OSError:
            shutil.copyfile(src, dst)
            self.copied += 1
        return name

    def add_bytes(self, data, name):
        dst = self.tmp / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        self.copied += 1
        return name

    def add_annotations(self, annotator, points, k):
        """annotations/<annotator>.csv: another annotator's landmarks {image name: (K, 2)}, for evaluation."""
        header = ["image", *[f"{a}{i}" for i in range(1, k + 1) for a in "xy"]]
        (self.tmp / "annotations").mkdir(exist_ok=True)
        write_csv_atomic(self.tmp / "annotations" / f"{annotator}.csv",
                         [header] + [[name, *_coords(pts, k)] for name, pts in sorted(points.items())])

    def finish(self, meta, rows, report):
        """Write dataset.yaml, landmarks.csv (rows: dicts) and import.json; check; rename into place."""
        k = len(meta["landmarks"])
        header = ["image", *[f"{a}{i}" for i in range(1, k + 1) for a in "xy"], "group", "split"]
        lines = [header] + [[r["image"], *_coords(r["points"], k), r["group"], r.get("split", "")] for r in rows]
        write_csv_atomic(self.tmp / "landmarks.csv", lines)
        (self.tmp / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        report = {"written_by": MARKER, **report, "images_linked": self.linked, "images_written": self.copied}
        (self.tmp / "import.json").write_text(json.dumps(report, indent=1))
        ds = load_dataset(self.tmp)      # the format's own checks, before anything is in place
        self.stage.commit()
        return ds
