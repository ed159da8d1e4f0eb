"""ISBI 2015 cephalometric challenge layout -> a dataset folder.

    RawImage/TrainingData/001.bmp|png ...     -> images/TrainingData/001.png, split: train
    RawImage/Test1Data/151.bmp ...            -> images/Test1Data/151.png,    split: test1
    RawImage/Test2Data/301.bmp ...            -> images/Test2Data/301.png,    split: test2
    AnnotationsByMD/400_senior/001.txt         19 lines "x,y" (integers or decimals; lines after the
    AnnotationsByMD/400_junior/001.txt         19th are ignored), pixels of the image as shipped
    duplicates.csv (optional)                  id_a,...,id_b,...: pairs of ids that are one radiograph
                                               (ids however padded: 7 = 007; chains join into one group)

The challenge's originals are 1935 x 2400 px at 0.1 mm/px (the default spacing); give --spacing for
resampled copies. landmarks.csv holds the `annotator`'s landmarks (senior, the challenge's ground
truth; junior; or mean, the midpoint of both). With both annotators present, each is also written
to annotations/<annotator>.csv, so that evaluation scores against senior, junior and their mean; the
two folders must annotate the same ids. The ids of a duplicate pair share a group (the smaller id),
so that no seeded split puts one radiograph on both sides; the challenge's own split does, and
prepare reports it (prepare.test_duplicates).
"""
import csv
import os
from pathlib import Path

import numpy as np

from ..dataset import DataError
from .common import DatasetWriter, check_inside, check_spacing, image_size, regular_file

LANDMARKS = ["sella", "nasion", "orbitale", "porion", "subspinale", "supramentale", "pogonion", "menton",
             "gnathion", "gonion", "lower_incisal_incision", "upper_incisal_incision", "upper_lip",
             "lower_lip", "subnasale", "soft_tissue_pogonion", "posterior_nasal_spine",
             "anterior_nasal_spine", "articulare"]
SPLIT_OF = {"TrainingData": "train", "Test1Data": "test1", "Test2Data": "test2"}
FOLDERS = {"senior": "400_senior", "junior": "400_junior"}
ANNOTATORS = ("senior", "junior", "mean")
IMAGE_SUFFIXES = (".bmp", ".png")


def read_points(path, k=len(LANDMARKS)):
    """The first k lines "x,y" of an annotation file as a (k, 2) array; DataError naming file and line."""
    lines = regular_file(path, "annotation file").read_text(errors="replace").splitlines()
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


def _read_annotators(src, stems, annotator, strict, log):
    """{annotator: {id: (19, 2)}} of every annotator folder present, for the ids of `stems`;
    refuses two folders that do not annotate the same ids, no folder at all, and a missing folder
    the annotator needs (junior: 400_junior; mean: both). Images without an
    annotation and annotations without an image are counted (refused with `strict`)."""
    ids = {}
    for who, folder in FOLDERS.items():
        path = src / "AnnotationsByMD" / folder
        if path.is_dir():
            ids[who] = {p.stem for p in path.glob("*.txt")}
    if len(ids) == 2 and ids["senior"] != ids["junior"]:
        only = sorted(ids["senior"] ^ ids["junior"])
        raise DataError(f"{src / 'AnnotationsByMD'}: 400_senior and 400_junior annotate different ids "
                        f"({len(only)} in one only: {', '.join(only[:5])}{', ...' if len(only) > 5 else ''})")
    if not ids:
        raise DataError(f"{src}: no AnnotationsByMD/400_senior or 400_junior folder: no landmarks to import")
    needed = ("senior", "junior") if annotator == "mean" else (annotator,)
    missing = [FOLDERS[w] for w in needed if w not in ids]
    if missing:
        raise DataError(f"{src / 'AnnotationsByMD'}: --annotator {annotator} needs {' and '.join(FOLDERS[w] for w in needed)}, "
                        f"but {', '.join(missing)} is not there (present: {', '.join(FOLDERS[w] for w in ids)})")
    marked = set().union(*ids.values())
    _orphans(sorted(stems - marked), sorted(marked - stems), src, strict, log)
    return {who: {s: read_points(src / "AnnotationsByMD" / FOLDERS[who] / f"{s}.txt") for s in stems if s in found}
            for who, found in ids.items()}


def _orphans(unmarked, imageless, src, strict, log):
    """Say how many images have no annotation and how many annotations no image; refuse with strict."""
    if not unmarked and not imageless:
        return
    text = (f"{src}: {len(unmarked)} images without an annotation ({', '.join(unmarked[:5])}"
            f"{', ...' if len(unmarked) > 5 else ''}), {len(imageless)} annotations without an image "
            f"({', '.join(imageless[:5])}{', ...' if len(imageless) > 5 else ''})")
    if strict:
        raise DataError(text + "; --strict refuses them")
    log(text + "; the images stay unannotated (they serve pre-training), the annotations are not used")


def _primary(annotations, stem, annotator):
    """(points or None, the annotators used) of one image: one annotator's, or the mean of those present."""
    found = [who for who in (("senior", "junior") if annotator == "mean" else (annotator,))
             if stem in annotations.get(who, {})]
    if not found:
        return None, []
    return np.mean([annotations[who][stem] for who in found], axis=0), [FOLDERS[who] for who in found]


def _stem_of(value, stems):
    """The image id a duplicates.csv cell names, however its zeros are padded ("7", "007"); None if
    no image here has it (the list may cover more images than a subset holds)."""
    value = value.strip()
    if value in stems:
        return value
    by_number = {int(s): s for s in stems if s.isdigit()}
    return by_number.get(int(value)) if value.isdigit() else None


def _duplicate_groups(src, stems):
    """{id: group}: the ids that duplicates.csv pairs, joined transitively (a chain 001=002=003 is
    one group, named by its smallest id), for the ids here."""
    path = src / "duplicates.csv"
    if not path.is_file():
        return {}
    parent = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x
    with path.open(newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            a, b = row.get("id_a"), row.get("id_b")
            if not a or not b:
                raise DataError(f"{path}: row {n}: needs id_a and id_b")
            a, b = _stem_of(a, stems), _stem_of(b, stems)
            if a and b:
                ra, rb = root(a), root(b)
                parent[max(ra, rb)] = min(ra, rb)
    return {x: root(x) for x in parent}


def import_isbi2015(src, out, spacing=0.1, annotator="senior", overwrite=False, strict=False, log=print):
    """Write the dataset folder `out` from the challenge layout under `src`; returns the Dataset."""
    src = Path(src)
    if annotator not in ANNOTATORS:
        raise DataError(f"--annotator must be one of {', '.join(ANNOTATORS)}, got {annotator!r}")
    spacing = check_spacing(spacing)
    found = [p for p in (src / "RawImage").glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES]
    dangling = sorted(p for p in found if p.is_symlink() and not p.exists())
    if dangling:
        raise DataError(f"{dangling[0]}: a link to {os.readlink(dangling[0])}, which does not exist"
                        + (f" (and {len(dangling) - 1} more such links)" if len(dangling) > 1 else ""))
    images = sorted(p for p in found if p.is_file())
    if not images:
        raise DataError(f"{src}: no RawImage/<folder>/NNN.bmp|png images (is this the ISBI 2015 layout?)")
    stems = {p.stem for p in images}
    annotations, groups = _read_annotators(src, stems, annotator, strict, log), _duplicate_groups(src, stems)
    rows, used = [], {}
    with DatasetWriter(src, out, overwrite) as writer:
        for path in images:
            pts, found = _primary(annotations, path.stem, annotator)
            for who, points in annotations.items():
                if path.stem in points:
                    check_inside(points[path.stem], image_size(path, path), f"{FOLDERS[who]}/{path.stem}.txt for {path}")
            name = writer.add_file(path, f"images/{path.parent.name}/{path.name}")
            rows.append({"image": name, "points": pts, "group": groups.get(path.stem, path.stem),
                         "split": SPLIT_OF.get(path.parent.name, "")})
            used[name] = found
        names = {Path(r["image"]).stem: r["image"] for r in rows}
        if len(annotations) > 1:
            for who, points in annotations.items():
                writer.add_annotations(who, {names[s]: p for s, p in points.items()}, len(LANDMARKS))
        meta = {"name": f"isbi2015-{annotator}", "landmarks": LANDMARKS, "spacing_mm": float(spacing),
                "layout": "whole", "synthetic": False, "annotator": annotator,
                "description": f"ISBI 2015 cephalograms imported from {src.resolve()} ({annotator} annotation)"}
        report = {"source": str(src.resolve()), "format": "isbi2015", "annotator": annotator,
                  "annotators_present": sorted(annotations), "annotation_folders": used,
                  "duplicate_groups": {g: sorted(s for s in groups if groups[s] == g) for g in sorted(set(groups.values()))}}
        ds = writer.finish(meta, rows, report)
    annotated = sum(r["points"] is not None for r in rows)
    sets = {s or "unpinned": sum(r["split"] == s for r in rows) for s in dict.fromkeys(r["split"] for r in rows)}
    log(f"wrote {out}: {len(rows)} images ({annotated} annotated; {annotator} landmarks"
        f"{', senior and junior also in annotations/' if len(annotations) > 1 else ''}), "
        f"{', '.join(f'{n} {s}' for s, n in sets.items())}, {len(LANDMARKS)} landmarks, "
        f"{spacing:g} mm/px; {len(set(groups.values()))} duplicate pairs grouped; "
        f"{writer.linked} images linked, {writer.copied} copied")
    return ds
