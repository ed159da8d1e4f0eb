"""Predictions as LabelMe files, for an annotator to correct: `dentcae predict ... --labelme`.

    stems = labelme_stems(names)                        # {input name: unique stem}
    write_labelme(out / "labelme", stems[name], rec, path, xray)

One folder a LabelMe user opens as it is (`labelme predictions/labelme/`): per image `<stem>.json`
and the image beside it, `<stem>.<suffix>`, a link to the input (PNG, JPEG, BMP) or, for DICOM and
TIFF, which LabelMe cannot show as the net saw them, the grey pixels the net read as an 8-bit PNG.
The JSON's `imagePath` is that file's name (relative) and `imageData` is null unless `embed`.
Every landmark is a `point` shape named by the landmark, at the predicted pixel coordinates,
unrounded (the same numbers as predictions.csv, whose pixel convention `dentcae import labelme`
reads back). A flagged landmark (low confidence or wide spread, as predictions.csv's `flag`) has
the shape flag `check: true` and a description saying why; the image flag `check_landmarks` is set
when any landmark is flagged, so an annotator sees in LabelMe's flag list which images need a look.
After correction, `dentcae import labelme predictions/labelme --landmarks ... --out DATASET` reads
the corrected points back, and the untouched ones bit for bit.
"""
import base64
import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..runtime.atomic import atomic_path, write_atomic

FORMAT_VERSION = "5.5.0"           # the LabelMe file format written (read by LabelMe 5.x and 6.x)
SHOWN_AS_IS = (".png", ".jpg", ".jpeg", ".bmp")


def labelme_stems(names):
    """{input name: stem} with one stem per input: the name without its suffix, or, where two inputs
    share it (x.png and x.jpg), the suffix kept in it (x_png, x_jpg), so neither file is lost."""
    plain = {n: Path(n).with_suffix("").as_posix() for n in names}
    counts = {}
    for stem in plain.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {n: s if counts[s] == 1 else f"{s}_{Path(n).suffix.lstrip('.').lower() or 'file'}"
            for n, s in plain.items()}


def _place_image(folder, stem, path, xray):
    """The image beside the JSON: a link to the input when LabelMe shows it as it is (a copy where
    links fail), else the grey pixels as PNG. Returns its file name."""
    suffix = Path(path).suffix.lower()
    target = folder / f"{stem}{suffix if suffix in SHOWN_AS_IS else '.png'}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        if suffix in SHOWN_AS_IS:
            try:
                os.symlink(Path(path).resolve(), tmp)
            except OSError:
                tmp.write_bytes(Path(path).read_bytes())
        else:
            cv2.imwrite(str(tmp), np.clip(np.round(xray.grey), 0, 255).astype(np.uint8))
    return target.name


def _describe(mark):
    conf = "" if mark["confidence"] is None else f"confidence {mark['confidence']:.3f}"
    spread = "" if mark["spread_mm"] is None else f"spread {mark['spread_mm']:.2f} mm"
    said = ", ".join(x for x in (conf, spread) if x)
    return f"dentcae: CHECK this point ({said})" if mark["flag"] else f"dentcae: {said}"


def labelme_document(rec, image_name, model_name, image_bytes=None):
    """The LabelMe JSON object of one image record of predictions.json."""
    shapes = [{"label": m["name"], "points": [[m["x_px"], m["y_px"]]], "group_id": None,
               "description": _describe(m), "shape_type": "point", "flags": {"check": bool(m["flag"])},
               "mask": None}
              for m in rec["landmarks"]]
    return {"version": FORMAT_VERSION, "flags": {"check_landmarks": any(m["flag"] for m in rec["landmarks"])},
            "shapes": shapes, "imagePath": image_name,
            "imageData": None if image_bytes is None else base64.b64encode(image_bytes).decode("ascii"),
            "imageHeight": rec["height"], "imageWidth": rec["width"],
            "dentcae": {"model": model_name, "predicted_from": rec["image"],
                        "flagged": [m["name"] for m in rec["landmarks"] if m["flag"]]}}


def write_labelme(folder, stem, rec, path, xray, model_name, embed=False):
    """Write `<folder>/<stem>.json` and its image; returns the JSON's path."""
    folder = Path(folder)
    image_name = _place_image(folder, stem, path, xray)
    raw = (folder / image_name).read_bytes() if embed else None
    doc = labelme_document(rec, image_name, model_name, raw)
    return write_atomic(folder / f"{stem}.json", json.dumps(doc, indent=1))
