"""Read and validate a dataset folder (format: data/README.md).

    ds = load_dataset("data/phantom")        # dataset.yaml + landmarks.csv, checked
    ds = select_landmarks(ds, ["menton"])    # a subset of the landmarks, by name
    img = read_image(ds.images[0].path)      # float32 HxW grayscale in [0, 255]

Images are every regular image file under the folder (recursively, hidden folders skipped), named
by their path relative to it (`images/a/001.png`). landmarks.csv names them the same way; a name
that is absolute or leaves the folder is an error naming its row, and is never opened. Other
annotators' landmarks of the same images may sit in annotations/<annotator>.csv (same columns):
they train nothing; evaluation scores against them too (`ds.annotations`).

Every problem raises DataError naming the file, and the row or key, that is wrong.
"""
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..runtime.yamlio import read_yaml_mapping
from .landmarks_csv import DataError, is_test, read_landmarks_csv, safe_name  # noqa: F401 (re-exported)

IMAGE_EXTS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
DATASET_KEYS = {"name", "landmarks", "spacing_mm", "layout", "sides", "description", "synthetic", "annotator"}
LAYOUTS = ("bilateral", "whole")




@dataclass
class ImageRecord:
    name: str                      # path relative to the dataset folder, with / separators
    path: Path
    group: str                     # images of one group are never split apart
    spacing_mm: float              # mm per pixel
    landmarks: np.ndarray = None   # (K, 2) float64 x, y in pixels (NaN = not annotated); None = no row
    row: int = 0                   # 1-based CSV line, for error messages
    split: str = ""                # "train", "test" or a test set (test1) when pinned, else ""

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
    annotator: str = ""            # whose landmarks landmarks.csv holds (dataset.yaml `annotator`)
    annotations: dict = field(default_factory=dict)   # {annotator: {image: (K, 2)}}: annotations/*.csv

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


def _read_annotations(root, k, known):
    """{annotator: {image: (K, 2) pixels}} of annotations/<annotator>.csv, images checked."""
    out = {}
    for path in sorted((root / "annotations").glob("*.csv")):
        rows = read_landmarks_csv(path, k, 1.0)       # spacing is landmarks.csv's business
        for name, (_, _, _, n, _) in rows.items():
            if name not in known:
                raise DataError(f"{path}: row {n}: image '{name}' is not in {root}")
        out[path.stem] = {name: row[0] for name, row in rows.items()}
    return out


def load_dataset(root):
    """Read dataset.yaml and landmarks.csv of `root` and list its images (not yet decoded)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (make one with `dentcae synth --out {root}`)")
    meta = _load_yaml(root / "dataset.yaml")
    left, right = _sides(meta, root / "dataset.yaml")
    k = len(meta["landmarks"])
    rows = read_landmarks_csv(root / "landmarks.csv", k, meta.get("spacing_mm"))
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
                   left, right, images, bool(meta.get("synthetic", False)), str(meta.get("annotator", "")),
                   _read_annotations(root, k, known))


def pseudo_report(root):
    """The pseudo.json of a dataset folder `dentcae pseudo-label` wrote (which images carry a
    teacher's labels, and how they were made), or None for a dataset of annotators' labels only."""
    path = Path(root) / "pseudo.json" if root else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"{path}: not the JSON that `dentcae pseudo-label` writes: {err}") from err


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
    annotations = {a: {name: pts[keep] for name, pts in rows.items()} for a, rows in ds.annotations.items()}
    return dataclasses.replace(ds, landmark_names=[ds.landmark_names[i] for i in keep], left=new_left,
                               right=new_right, images=images, annotations=annotations)


MIN_SIDE, MAX_BYTES = 16, 512 * 2 ** 20


def check_size(img, path):
    """`img` itself; refused, naming it, when under MIN_SIDE pixels a side."""
    if min(img.shape[:2]) < MIN_SIDE:
        raise DataError(f"{path}: {img.shape[1]}x{img.shape[0]} px is too small (at least {MIN_SIDE} px a side)")
    return img


def read_image(path):
    """Decode any 8/16-bit gray or RGB(A) image to float32 grayscale HxW scaled to [0, 255].
    Only a regular file (or a link to one) of at most MAX_BYTES is read; both sides must be at
    least MIN_SIDE pixels."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: a link to {os.readlink(path)}, which does not exist" if path.is_symlink()
                        else f"{path}: image file missing")
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
    check_size(img, path)
    if img.ndim == 3:
        img = img[..., :3]
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[..., 0]
    scale = {np.dtype(np.uint8): 1.0, np.dtype(np.uint16): 255.0 / 65535.0}.get(img.dtype)
    if scale is None:
        img = img.astype(np.float64)
        if not np.isfinite(img).all():
            raise DataError(f"{path}: {int((~np.isfinite(img)).sum())} pixels are NaN or infinite; "
                            "an image must hold finite values")
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
