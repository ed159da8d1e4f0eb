"""landmarks.csv, and every extra annotation file of a dataset (annotations/<annotator>.csv): one
row per annotated image, `image,x1,y1,...,xK,yK` and optional `spacing_mm`, `group`, `split`.

    rows = read_landmarks_csv(root / "landmarks.csv", k, default_spacing=0.1)
    # {image name: (landmarks (K, 2), spacing, group, row number, split pin)}

`split` pins an image: `train`, `test`, or a named test set (`test1`, `test2`: any name that starts
with `test`). A pinned test image of any set is never trained on. Every problem raises DataError
naming the file and the row or column.
"""
import csv
import math
import re
from pathlib import PurePosixPath

import numpy as np


class DataError(ValueError):
    pass


TEST_SET = re.compile(r"test[A-Za-z0-9_-]*")


def is_test(pin):
    """A split pin that puts its image in a test set (test, test1, test2, ...)."""
    return bool(TEST_SET.fullmatch(pin or ""))


def is_pin(pin):
    return pin == "train" or is_test(pin)


def _number(text, what, where):
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {what} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {what} is not finite: {text!r}")
    return value


def safe_name(name, where):
    """An image name of landmarks.csv as a clean relative path inside the dataset folder."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or name.startswith(("/", "\\")) or (parts and ":" in parts[0]):
        raise DataError(f"{where}: image '{name}' is an absolute path; name images relative to the "
                        "dataset folder (e.g. images/001.png)")
    if ".." in parts:
        raise DataError(f"{where}: image '{name}' leaves the dataset folder ('..'); it is not opened")
    return "/".join(p for p in parts if p != ".")


def read_landmarks_csv(path, k, default_spacing):
    """-> {image name: (landmarks (K,2), spacing, group, row, split pin)}"""
    if not path.exists():
        raise DataError(f"{path}: missing (write a header 'image,x1,y1,...' even with no rows)")
    with path.open(newline="", encoding="utf-8-sig") as fh:     # -sig: Excel's UTF-8 CSVs start with a BOM
        rows = list(csv.reader(fh))
    if not rows:
        raise DataError(f"{path}: empty file (needs at least the header)")
    header = [h.strip() for h in rows[0]]
    if not header or header[0] != "image":
        raise DataError(f"{path}: row 1: the first column must be 'image', got {header[:1]}")
    coords = [h for h in header[1:] if h not in ("spacing_mm", "group", "split")]
    expected = [f"{a}{i}" for i in range(1, k + 1) for a in "xy"]
    for col in coords:
        if col not in expected:
            raise DataError(f"{path}: row 1: column '{col}' names a landmark that dataset.yaml does not "
                            f"declare (it declares {k}: columns x1,y1..x{k},y{k})")
    if coords != expected:
        raise DataError(f"{path}: row 1: expected columns {','.join(expected)}, got {','.join(coords)}")
    if default_spacing is None and "spacing_mm" not in header:
        raise DataError(f"{path}: no pixel spacing: give 'spacing_mm' in dataset.yaml or a spacing_mm column")
    out = {}
    for n, row in enumerate(rows[1:], start=2):
        where = f"{path}: row {n}"
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{where}: has {len(row)} columns, the header has {len(header)}")
        cells = dict(zip(header, (c.strip() for c in row)))
        name = safe_name(cells["image"], where)
        if name in out:
            raise DataError(f"{where}: image '{name}' already has a row ({out[name][3]})")
        pts = np.full((k, 2), np.nan)
        for i in range(k):
            x, y = cells[f"x{i + 1}"], cells[f"y{i + 1}"]
            if (x == "") != (y == ""):
                raise DataError(f"{where}: landmark {i + 1} has only one of x{i + 1}, y{i + 1}")
            if x:
                pts[i] = _number(x, f"x{i + 1}", where), _number(y, f"y{i + 1}", where)
        spacing = default_spacing
        if cells.get("spacing_mm"):
            spacing = _number(cells["spacing_mm"], "spacing_mm", where)
        if spacing is None or not spacing > 0:
            raise DataError(f"{where}: spacing_mm must be positive (mm per pixel), got {spacing!r}")
        pin = cells.get("split", "")
        if pin and not is_pin(pin):
            raise DataError(f"{where}: split must be train, test, a named test set (test1, test2, ...) or empty, "
                            f"got {pin!r}")
        out[name] = (pts, spacing, cells.get("group") or "", n, pin)
    return out
