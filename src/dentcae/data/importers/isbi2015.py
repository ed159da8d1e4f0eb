"""ISBI 2015 cephalometric challenge layout -> a dataset folder.

    RawImage/TrainingData/001.bmp|png ...     -> images/TrainingData/001.png, split: train
    RawImage/Test1Data/151.bmp, Test2Data/... -> images/Test1Data/151.png,   split: test
    AnnotationsByMD/400_senior/001.txt         19 lines "x,y" (integers or decimals; lines after the
    AnnotationsByMD/400_junior/001.txt         19th are ignored), pixels of the image as shipped

The challenge's originals are 1935 x 2400 px at 0.1 mm/px (the default spacing); give --spacing for
resampled copies. `annotator="mean"` averages the annotators present for each image.
"""
from pathlib import Path

import numpy as np

from ..dataset import DataError
from .common import DatasetWriter, check_inside, image_size

LANDMARKS = ["sella", "nasion", "orbitale", "porion", "subspinale", "supramentale", "pogonion", "menton",
             "gnathion", "gonion", "lower_incisal_incision", "upper_incisal_incision", "upper_lip",
             "lower_lip", "subnasale", "soft_tissue_pogonion", "posterior_nasal_spine",
             "anterior_nasal_spine", "articulare"]
SPLIT_OF = {"TrainingData": "train", "Test1Data": "test", "Test2Data": "test"}
ANNOTATORS = {"senior": ["400_senior"], "junior": ["400_junior"], "mean": ["400_senior", "400_junior"]}
IMAGE_SUFFIXES = (".bmp", ".png")


def read_points(path, k=len(LANDMARKS)):
    """The first k lines "x,y" of an annotation file as a (k, 2) array; DataError naming file and line."""
    lines = Path(path).read_text(errors="replace").splitlines()
    if len(lines) < k:
        raise DataError(f"{path}: has {len(lines)} lines, expected {k} landmark lines 'x,y'")
    pts = []
    for n, line in enumerate(lines[:k], start=1):
        parts = line.strip().split(",")
        try:
            x, y = (float(v) for v in parts)
        except ValueError:
            raise DataError(f"{path}: line {n}: expected 'x,y' with two numbers, got {line.strip()!r}") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise DataError(f"{path}: line {n}: coordinates must be finite, got {line.strip()!r}")
        pts.append((x, y))
    return np.array(pts)


def _annotation(src, stem, annotator):
    """(mean points or None, the annotator folders used) of one image."""
    found = [d for d in ANNOTATORS[annotator] if (src / "AnnotationsByMD" / d / f"{stem}.txt").exists()]
    if not found:
        return None, []
    pts = [read_points(src / "AnnotationsByMD" / d / f"{stem}.txt") for d in found]
    return np.mean(pts, axis=0), found


def import_isbi2015(src, out, spacing=0.1, annotator="senior", overwrite=False, log=print):
    """Write the dataset folder `out` from the challenge layout under `src`; returns the Dataset."""
    src = Path(src)
    if annotator not in ANNOTATORS:
        raise DataError(f"--annotator must be one of {', '.join(ANNOTATORS)}, got {annotator!r}")
    if not (isinstance(spacing, (int, float)) and spacing > 0):
        raise DataError(f"--spacing must be a positive number of mm per pixel, got {spacing!r}")
    images = sorted(p for p in (src / "RawImage").glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(f"{src}: no RawImage/<folder>/NNN.bmp|png images (is this the ISBI 2015 layout?)")
    rows, used = [], {}
    with DatasetWriter(out, overwrite) as writer:
        for path in images:
            pts, found = _annotation(src, path.stem, annotator)
            if pts is not None:
                check_inside(pts, image_size(path, path), f"{found[0]}/{path.stem}.txt for {path}")
            name = writer.add_file(path, f"images/{path.parent.name}/{path.name}")
            rows.append({"image": name, "points": pts, "group": path.stem,
                         "split": SPLIT_OF.get(path.parent.name, "")})
            used[name] = found
        meta = {"name": f"isbi2015-{annotator}", "landmarks": LANDMARKS, "spacing_mm": float(spacing),
                "layout": "whole", "synthetic": False,
                "description": f"ISBI 2015 cephalograms imported from {src.resolve()} ({annotator} annotation)"}
        report = {"source": str(src.resolve()), "format": "isbi2015", "annotator": annotator,
                  "annotation_folders": used}
        ds = writer.finish(meta, rows, report)
    annotated = sum(r["points"] is not None for r in rows)
    log(f"wrote {out}: {len(rows)} images ({annotated} annotated), {len(LANDMARKS)} landmarks, "
        f"{spacing:g} mm/px, layout whole; {writer.linked} images linked, {writer.copied} copied")
    return ds
