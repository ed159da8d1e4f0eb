"""Read and validate a dataset folder (format: data/README.md).

    ds = load_dataset("data/phantom")        # dataset.yaml + landmarks.csv, checked
    ds = select_landmarks(ds, ["menton"])    # a subset of the landmarks, by name
    img = read_image(ds.images[0].path)      # float32 HxW grayscale in [0, 255]

Images are every regular image file under the folder (recursively, hidden folders skipped), named
by their path relative to it (`images/a/001.png`). landmarks.csv names them the same way; a name
that is absolute or leaves the folder is an error naming its row, and is never opened.

Every problem raises DataError naming the file, and the row or key, that is wrong.
"""
import csv
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from ..runtime.yamlio import read_yaml_mapping

IMAGE_EXTS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
DATASET_KEYS = {"name", "landmarks", "spacing_mm", "layout", "sides", "description", "synthetic"}
LAYOUTS = ("bilateral", "whole")


class DataError(ValueError):
    pass


SPLIT_PINS = ("train", "test")


@dataclass
class ImageRecord:
    name: str                      # path relative to the dataset folder, with / separators
    path: Path
    group: str                     # images of one group are never split apart
    spacing_mm: float              # mm per pixel
    landmarks: np.ndarray = None   # (K, 2) float64 x, y in pixels (NaN = not annotated); None = no row
    row: int = 0                   # 1-based CSV line, for error messages
    split: str = ""                # "train" or "test" when landmarks.csv pins it, else ""

    @property
    def annotated(self):
        return self.landmarks is not None


@dataclass
class Dataset:
    root: Path
    name: str
    landmark_names: list
    layout: str
    left: list = field(default_factory=list)    # bilateral: indices of the left-side landmarks
    right: list = field(default_factory=list)   # paired with left: right[i] mirrors onto left[i]
    images: list = field(default_factory=list)
    synthetic: bool = False        # dataset.yaml `synthetic: true`: results are never the paper's

    def side_indices(self, side):
        """Landmark indices of a sample's side: 'left', 'right' (bilateral) or 'whole'."""
        return {"left": self.left, "right": self.right}.get(side, list(range(len(self.landmark_names))))

    @property
    def sample_landmarks(self):
        """Landmarks per sample (a half for bilateral data): the regressor predicts 2x this."""
        return len(self.left) if self.layout == "bilateral" else len(self.landmark_names)


def _load_yaml(path):
    meta = read_yaml_mapping(path, "dataset.yaml", DataError, allow_empty=False,
                             missing=f"{path}: missing (every dataset folder needs a dataset.yaml)")
    for key in meta:
        if key not in DATASET_KEYS:
            raise DataError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(DATASET_KEYS))})")
    for key in ("name", "landmarks", "layout"):
        if key not in meta:
            raise DataError(f"{path}: missing key '{key}'")
    names = meta["landmarks"]
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
        raise DataError(f"{path}: key 'landmarks' must be a list of distinct landmark names")
    if meta["layout"] not in LAYOUTS:
        raise DataError(f"{path}: key 'layout' must be one of {LAYOUTS}, got {meta['layout']!r}")
    if "spacing_mm" in meta:
        sp = meta["spacing_mm"]
        if isinstance(sp, bool) or not isinstance(sp, (int, float)) or not sp > 0:
            raise DataError(f"{path}: key 'spacing_mm' must be a positive number (mm per pixel), got {sp!r}")
    return meta


def _sides(meta, path):
    names = [str(n) for n in meta["landmarks"]]
    if meta["layout"] != "bilateral":
        return [], []
    sides = meta.get("sides")
    if not isinstance(sides, dict) or set(sides) != {"left", "right"}:
        raise DataError(f"{path}: bilateral layout needs key 'sides' with lists 'left' and 'right'")
    out = []
    for side in ("left", "right"):
        idx = []
        for n in sides[side]:
            if str(n) not in names:
                raise DataError(f"{path}: sides.{side} names landmark '{n}', not in 'landmarks'")
            idx.append(names.index(str(n)))
        out.append(idx)
    left, right = out
    if len(left) != len(right) or set(left) & set(right) or len(left) + len(right) != len(names):
        raise DataError(f"{path}: sides.left and sides.right must pair every landmark exactly once")
    return left, right


def _number(text, what, where):
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {what} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {what} is not finite: {text!r}")
    return value


def _read_csv(path, k, default_spacing):
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
        if pin not in ("",) + SPLIT_PINS:
            raise DataError(f"{where}: split must be train, test or empty, got {pin!r}")
        out[name] = (pts, spacing, cells.get("group") or "", n, pin)
    return out


def safe_name(name, where):
    """An image name of landmarks.csv as a clean relative path inside the dataset folder."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or name.startswith(("/", "\\")) or (parts and ":" in parts[0]):
        raise DataError(f"{where}: image '{name}' is an absolute path; name images relative to the "
                        "dataset folder (e.g. images/001.png)")
    if ".." in parts:
        raise DataError(f"{where}: image '{name}' leaves the dataset folder ('..'); it is not opened")
    return "/".join(p for p in parts if p != ".")


def list_images(root):
    """Relative names of the regular image files under `root`, hidden folders and files skipped."""
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            p = Path(folder) / f
            if not f.startswith(".") and p.suffix.lower() in IMAGE_EXTS and p.is_file():
                names.append(p.relative_to(root).as_posix())
    return sorted(names)


def load_dataset(root):
    """Read dataset.yaml and landmarks.csv of `root` and list its images (not yet decoded)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (make one with `dentcae synth --out {root}`)")
    meta = _load_yaml(root / "dataset.yaml")
    left, right = _sides(meta, root / "dataset.yaml")
    k = len(meta["landmarks"])
    rows = _read_csv(root / "landmarks.csv", k, meta.get("spacing_mm"))
    names = list_images(root)
    known = set(names)
    for name, (_, _, _, n, _) in rows.items():
        if name not in known:
            raise DataError(f"{root / 'landmarks.csv'}: row {n}: image '{name}' is not in {root}")
    images = []
    for name in names:
        pts, spacing, group, n, pin = rows.get(name, (None, meta.get("spacing_mm"), "", 0, ""))
        if spacing is None:
            raise DataError(f"{root / 'landmarks.csv'}: image '{name}' has no row, so no spacing_mm; "
                            "give spacing_mm in dataset.yaml")
        images.append(ImageRecord(name, root / name, group or name.rsplit(".", 1)[0], float(spacing), pts, n, pin))
    if not images:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTS)})")
    return Dataset(root, str(meta["name"]), [str(n) for n in meta["landmarks"]], meta["layout"],
                   left, right, images, bool(meta.get("synthetic", False)))


def select_landmarks(ds, names):
    """The dataset restricted to the landmarks `names` (None: all), in that order. For bilateral
    data, name left-side landmarks: each brings its right-side partner along."""
    if names is None:
        return ds
    pool = [ds.landmark_names[i] for i in ds.left] if ds.layout == "bilateral" else ds.landmark_names
    for n in names:
        if n not in pool:
            raise DataError(f"dataset.landmarks: '{n}' is not a landmark of {ds.root / 'dataset.yaml'} "
                            f"(known{' left-side' if ds.layout == 'bilateral' else ''}: {', '.join(pool)})")
    if len(set(names)) != len(names) or not names:
        raise DataError("dataset.landmarks must list distinct landmark names")
    if ds.layout == "bilateral":
        left = [ds.landmark_names.index(n) for n in names]
        right = [ds.right[ds.left.index(i)] for i in left]
        keep, new_left, new_right = left + right, list(range(len(left))), list(range(len(left), 2 * len(left)))
    else:
        keep, new_left, new_right = [ds.landmark_names.index(n) for n in names], [], []
    images = [dataclasses.replace(r, landmarks=None if r.landmarks is None else r.landmarks[keep])
              for r in ds.images]
    return dataclasses.replace(ds, landmark_names=[ds.landmark_names[i] for i in keep], left=new_left,
                               right=new_right, images=images)


MIN_SIDE, MAX_BYTES = 16, 512 * 2 ** 20


def read_image(path):
    """Decode any 8/16-bit gray or RGB(A) image to float32 grayscale HxW scaled to [0, 255].
    Only a regular file (or a link to one) of at most MAX_BYTES is read; both sides must be at
    least MIN_SIDE pixels."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: image file missing")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; refusing to read it as an image")
    if path.stat().st_size > MAX_BYTES:
        raise DataError(f"{path}: {path.stat().st_size / 2 ** 20:.0f} MB, more than the {MAX_BYTES >> 20} MB "
                        "an image may have")
    raw = path.read_bytes()
    if path.suffix.lower() == ".png" and not raw.rstrip(b"\0").endswith(b"IEND\xaeB`\x82"):
        raise DataError(f"{path}: truncated PNG (no IEND chunk)")
    if path.suffix.lower() in (".jpg", ".jpeg") and not raw.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DataError(f"{path}: cannot decode image (unreadable or truncated file)")
    if min(img.shape[:2]) < MIN_SIDE:
        raise DataError(f"{path}: {img.shape[1]}x{img.shape[0]} px is too small (at least {MIN_SIDE} px a side)")
    if img.ndim == 3:
        img = img[..., :3]
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[..., 0]
    scale = {np.dtype(np.uint8): 1.0, np.dtype(np.uint16): 255.0 / 65535.0}.get(img.dtype)
    if scale is None:
        img = img.astype(np.float64)
        lo, hi = float(img.min()), float(img.max())
        return ((img - lo) * (255.0 / (hi - lo or 1.0))).astype(np.float32)
    return (img.astype(np.float32) * np.float32(scale))


def check_landmarks_inside(rec, shape):
    """Annotated points must lie inside the image (pixel centres, 0..W-1 by 0..H-1, half a pixel slack)."""
    if rec.landmarks is None:
        return
    h, w = shape
    for i, (x, y) in enumerate(rec.landmarks):
        if np.isnan(x):
            continue
        if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
            raise DataError(f"landmarks.csv: row {rec.row}: landmark {i + 1} of '{rec.name}' at "
                            f"({x:g}, {y:g}) lies outside the {w}x{h} image")
