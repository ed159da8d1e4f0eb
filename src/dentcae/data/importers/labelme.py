"""LabelMe JSON files with `point` shapes -> a dataset folder.

    import_labelme("annotations/", "data/mine", landmarks=["S", "N"], spacing=0.1, names=["sella", "nasion"])

Every *.json under SRC is one image. The image is `imagePath` relative to the JSON when that file
exists inside SRC (as the path is written: a link inside SRC may point elsewhere, as those `dentcae
predict --labelme` writes do); otherwise the embedded base64 `imageData`, written out as PNG. `landmarks` names the
point labels to keep, in order (`names` renames them). A label given twice, or a requested label
missing, is an error naming the file and the label; with `skip_bad` that image stays in the dataset
unannotated (it still serves pre-training) and import.json says why.
"""
import base64
import binascii
import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..dataset import DataError
from .common import DatasetWriter, check_inside, check_spacing, image_size, regular_file


def _points(doc, landmarks, where):
    """(K, 2) points of the requested labels in one LabelMe document."""
    found = {}
    for i, shape in enumerate(doc.get("shapes") or []):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise DataError(f"{where}: shapes[{i}] is not a LabelMe shape (an object with a text 'label'), "
                            f"got {json.dumps(shape)[:80]}")
        if shape.get("shape_type", "point") != "point" or shape.get("label") not in landmarks:
            continue
        label = shape["label"]
        if label in found:
            raise DataError(f"{where}: label '{label}' is given twice")
        try:
            (x, y), = shape["points"]
            found[label] = (float(x), float(y))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: label '{label}' does not hold one [x, y] point") from None
        if not np.isfinite(found[label]).all():
            raise DataError(f"{where}: label '{label}' is at ({x}, {y}), not a finite point")
    missing = [n for n in landmarks if n not in found]
    if missing:
        raise DataError(f"{where}: requested label{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(m) for m in missing)} missing")
    return np.array([found[n] for n in landmarks])


def _image(doc, json_path, src, where):
    """('file', path) when imagePath exists inside SRC, else ('png', PNG bytes) from imageData."""
    rel = doc.get("imagePath")
    if rel:       # inside SRC as written (a link there to an X-ray elsewhere is the user's, and fine)
        path = Path(os.path.normpath(json_path.absolute().parent / rel.replace("\\", "/")))
        if path.is_relative_to(Path(os.path.normpath(src.absolute()))) and path.is_file():
            return "file", path
    if doc.get("imageData") is not None:
        if not isinstance(doc["imageData"], str):
            raise DataError(f"{where}: imageData must be a base64 text, got {type(doc['imageData']).__name__}")
        try:
            raw = base64.b64decode("".join(doc["imageData"].split()), validate=True)   # MIME line breaks too
        except (binascii.Error, ValueError):
            raise DataError(f"{where}: imageData is not valid base64") from None
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise DataError(f"{where}: imageData is not a readable image")
        return "png", cv2.imencode(".png", img)[1].tobytes()
    raise DataError(f"{where}: no image: imagePath {rel!r} is not a file inside {src}, and no imageData")


def _check_stated_size(doc, size, where):
    """The file's imageWidth x imageHeight (where it gives them) must be the image's: else its points
    were placed on another image, or on this one before it was resized."""
    stated = doc.get("imageWidth"), doc.get("imageHeight")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in stated) and tuple(stated) != tuple(size):
        raise DataError(f"{where}: the file says its image is {stated[0]}x{stated[1]} (imageWidth x imageHeight), "
                        f"the image is {size[0]}x{size[1]}: the points were placed on another image, or on this "
                        "one before it was resized" + (" (or rotated: LabelMe turns a JPEG by its EXIF orientation "
                        "tag, dentcae reads the pixels as stored; save the X-ray upright)"
                        if tuple(stated) == tuple(size)[::-1] else ""))


def _read_json(path):
    try:
        doc = json.loads(regular_file(path, "LabelMe file").read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise DataError(f"{path}: not a LabelMe file (expected a JSON object with a list 'shapes')")
    return doc


def _one(writer, path, src, landmarks, skip_bad, problems):
    """Add one LabelMe file's image; returns its landmarks.csv row (points None if unannotated)."""
    doc = _read_json(path)
    kind, image = _image(doc, path, src, path)
    stem = path.relative_to(src).with_suffix("").as_posix()
    name = f"images/{stem}{image.suffix.lower() if kind == 'file' else '.png'}"
    try:
        pts = _points(doc, landmarks, path)
        size = image_size(image, path)
        _check_stated_size(doc, size, path)
        check_inside(pts, size, path)
    except DataError as e:
        if not skip_bad:
            raise
        problems.append({"file": str(path), "error": str(e)})
        pts = None
    writer.add_file(image, name) if kind == "file" else writer.add_bytes(image, name)
    return {"image": name, "points": pts, "group": stem}


def import_labelme(src, out, landmarks, spacing, names=None, skip_bad=False, overwrite=False, strict=False,
                   log=print):
    """Write the dataset folder `out` from the LabelMe files under `src`; returns the Dataset.
    `strict` refuses files left unannotated by `skip_bad` instead of keeping their images."""
    if not landmarks:
        raise DataError("--landmarks: give the point labels to import, e.g. --landmarks S,N")
    src, names = Path(src), names or list(landmarks)
    if len(names) != len(landmarks) or len(set(names)) != len(names) or len(set(landmarks)) != len(landmarks):
        raise DataError("--landmarks and --names must give distinct labels, one new name per label")
    spacing = check_spacing(spacing)
    files = sorted(p for p in src.rglob("*.json") if not any(part.startswith(".") for part in p.relative_to(src).parts))
    if not files:
        raise DataError(f"{src}: no LabelMe *.json files")
    problems = []
    with DatasetWriter(src, out, overwrite) as writer:
        rows = [_one(writer, p, src, list(landmarks), skip_bad, problems) for p in files]
        if not any(r["points"] is not None for r in rows) or (strict and problems):
            raise DataError(f"{src}: {len(problems)} of {len(rows)} files have no usable landmarks "
                            f"({problems[0]['error'] if problems else 'none'}); "
                            f"{'--strict refuses them' if strict else 'nothing to import'}")
        meta = {"name": Path(out).name, "landmarks": list(names), "spacing_mm": float(spacing), "layout": "whole",
                "synthetic": False, "description": f"imported from LabelMe files in {src.resolve()}"}
        report = {"source": str(src.resolve()), "format": "labelme", "labels": list(landmarks),
                  "renamed_to": list(names), "unannotated": problems}
        ds = writer.finish(meta, rows, report)
    annotated = sum(r["points"] is not None for r in rows)
    log(f"wrote {out}: {len(rows)} images ({annotated} annotated), {len(names)} landmarks, {spacing:g} mm/px, "
        f"layout whole; {writer.linked} images linked, {writer.copied} written"
        + (f"; {len(problems)} left unannotated (see import.json)" if problems else ""))
    return ds
