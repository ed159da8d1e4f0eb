"""`dentcae predict`: landmarks, confidence and cephalometric measurements on new X-rays.

    report = predict_images("models/isbi", ["new_xrays/"], "predictions/", spacing=0.1, backend="onnx")

Writes into `out`: predictions.csv (a row per image and landmark: pixels, millimetres when the spacing
is known, confidence, flag, then the spread of the members' and views' estimates in mm and pixels;
the first eight columns keep their order), predictions.json (the same per image, with the spacing and its source,
the warnings and the model), overlays/<image>.png, labelme/<image>.json with the image beside it
(with `labelme`: LabelMe files to correct, deploy/labelme.py), measurements.csv (the ISBI 2015 challenge's 8
measurements and their classes, when the model's landmarks include those they need; a note in
predictions.json otherwise) and errors.csv (every input that could not be read or predicted, with
the reason; the others go on). Each file is written whole (temporary name, then renamed).
"""
import json
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..data.dataset import DataError
from ..evaluation import cephalometry
from ..runtime.atomic import atomic_path, staged_folder, write_atomic, write_csv_atomic, written_by
from ..runtime.outputs import overlap
from ..inference.calibration import flags
from ..inference.detector import Detector
from .bundle import open_model
from .images import list_inputs, read_xray
from .labelme import labelme_stems, write_labelme
from .overlay import draw_overlay

FIELDS = ["image", "landmark", "x_px", "y_px", "x_mm", "y_mm", "confidence", "flag", "spread_mm", "spread_px"]
MEASUREMENT_FIELDS = ["image", "measurement", "value", "unit", "class", "meaning"]
MARKER = "dentcae predict"      # predictions.json says who wrote the folder (only such a folder is replaced)
FOV_TOLERANCE = 0.35    # warn when a sample's field of view differs more than this from training's


def _num(v, digits=3):
    return "" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _fov_warning(model, xray):
    """A warning when the image covers a very different field than the training images did (the
    net sees every image resized to its input, so anatomy of another size is off its training)."""
    train = model.info.get("sample_field_of_view_mm")
    if not train or xray.spacing is None:
        return None
    h, w = xray.grey.shape
    side_w = w / 2 if model.layout == "bilateral" else w
    fov = (side_w * xray.spacing[0], h * xray.spacing[1])
    if max(abs(a / b - 1) for a, b in zip(fov, train)) > FOV_TOLERANCE:
        return (f"the image covers {fov[0]:.0f} x {fov[1]:.0f} mm; the model was trained on about "
                f"{train[0]:.0f} x {train[1]:.0f} mm: check the spacing, and expect larger errors")
    return None


def _finite(v):
    return None if v is None or not np.isfinite(v) else float(v)


def _image_record(model, name, xray, found):
    flagged = flags(found.confidence, found.spread / xray.grey.shape[0], model.calibration)
    sx, sy = xray.spacing or (None, None)
    marks = [{"name": n, "x_px": float(p[0]), "y_px": float(p[1]),
              "x_mm": None if sx is None else float(p[0] * sx), "y_mm": None if sy is None else float(p[1] * sy),
              "confidence": _finite(c), "flag": bool(f), "spread_px": _finite(d),
              "spread_mm": None if sx is None else _finite(d * (sx + sy) / 2)}
             for n, p, c, f, d in zip(model.landmarks, found.points, found.confidence, flagged, found.spread)]
    return {"image": name, "width": int(xray.grey.shape[1]), "height": int(xray.grey.shape[0]),
            "spacing_mm": None if xray.spacing is None else list(xray.spacing),
            "spacing_source": xray.spacing_source, "warnings": xray.warnings, "landmarks": marks}


def _measurements(model, rec):
    """measurements.csv rows of one image (angles need no spacing; MW needs one)."""
    pts = np.array([[m["x_px"], m["y_px"]] for m in rec["landmarks"]])
    sp = rec["spacing_mm"]
    if sp is not None:              # measure in millimetres, so unequal x and y spacings are right
        pts, sp = pts * np.asarray(sp), 1.0
    values = cephalometry.measure(pts, model.landmarks, sp)
    classes = cephalometry.classify(values)
    return [[rec["image"], m, _num(values[m], 2 if m != "FHI" else 3), cephalometry.UNITS.get(m, "deg"),
             "" if classes[m] is None else classes[m][0], "" if classes[m] is None else classes[m][1]]
            for m in cephalometry.ORDER]


def _write_overlay(out, stem, rec, xray, model):
    path = out / "overlays" / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    pts = [(m["x_px"], m["y_px"]) for m in rec["landmarks"]]
    picture = draw_overlay(xray.grey, pts, model.landmarks, [m["flag"] for m in rec["landmarks"]], rec["image"])
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), picture)


def check_out(out, inputs, model=None):
    """Refuse an output that is a file, a folder holding something other than an earlier prediction,
    a folder that is, holds or lies inside an input (its overlays would be read as inputs), or one
    that is, holds or lies inside the model's folder (a bundle or run is an input too)."""
    out = Path(out)
    for given in inputs:
        how = overlap(out, given, Path(given).is_dir())
        if how:
            raise ValueError(f"--out {out} {how} the input {given}; choose a folder outside the inputs")
    how = overlap(out, model) if model is not None else None
    if how:
        raise ValueError(f"--out {out} {how} the model {model}; choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (new, empty, or an earlier prediction's)")
    if out.is_dir() and any(out.iterdir()) and not written_by(out / "predictions.json", MARKER, ("model", "images", "backend")):
        raise ValueError(f"--out {out} exists and holds other files; choose a new or empty folder (only an earlier "
                         "prediction's folder is replaced)")


def _files(model, out, records, errors, measure):
    rows = [FIELDS] + [[r["image"], m["name"], _num(m["x_px"]), _num(m["y_px"]), _num(m["x_mm"]), _num(m["y_mm"]),
                        _num(m["confidence"]), int(m["flag"]), _num(m["spread_mm"]), _num(m["spread_px"])]
                       for r in records for m in r["landmarks"]]
    write_csv_atomic(out / "predictions.csv", rows)
    if measure:
        write_csv_atomic(out / "measurements.csv",
                         [MEASUREMENT_FIELDS] + [row for r in records for row in _measurements(model, r)])
    write_csv_atomic(out / "errors.csv", [["image", "error"]] + errors)


def _predict_all(model, detector, files, out, spacing, overlays, labelme, embed):
    """(image records, [[name, error]]) of every input, their overlays and LabelMe files into `out`."""
    stems, records, errors, start = labelme_stems([name for _, name in files]), [], [], time.time()
    bar = tqdm(files, desc="predict", unit="image")
    for path, name in bar:
        try:
            xray = read_xray(path, spacing)
            found = detector(xray.grey)
        except (DataError, OSError, ValueError) as e:
            errors.append([name, str(e)])
            continue
        warning = _fov_warning(model, xray)
        xray.warnings += [warning] if warning else []
        if xray.spacing is None:
            xray.warnings.append("no pixel spacing (none in the file, no --spacing): coordinates in pixels only")
        records.append(_image_record(model, name, xray, found))
        if overlays:
            _write_overlay(out, stems[name], records[-1], xray, model)
        if labelme:
            write_labelme(out / "labelme", stems[name], records[-1], path, xray, model.name, embed)
        bar.set_postfix(images_per_s=f"{len(records) / max(time.time() - start, 1e-9):.2f}")
    return records, errors


def predict_images(model_path, inputs, out, spacing=None, backend="caffe", gpu=None, overlays=True,
                   labelme=False, embed=False):
    """Predict every input image into `out`, built in a staged folder and renamed into place when
    complete (an earlier prediction there is replaced whole; a failure, a full disk among them,
    leaves it as it was). Returns {"images", "failed", "seconds", "out", "warnings"}. `labelme`: also
    LabelMe files to correct (`embed`: with the image inside each)."""
    check_out(out, inputs, model_path)
    model = open_model(model_path)
    files = list_inputs(inputs)
    if not files:
        raise FileNotFoundError(f"no images among {', '.join(map(str, inputs))} (suffixes: png, jpg, bmp, tif, dcm)")
    detector, measure, start = Detector(model, backend, gpu), cephalometry.has_landmarks(model.landmarks), time.time()
    with staged_folder(out) as tmp:
        records, errors = _predict_all(model, detector, files, tmp, spacing, overlays, labelme, embed)
        seconds = time.time() - start
        _files(model, tmp, records, errors, measure)
        summary = {"written_by": MARKER,
                   "model": {"name": model.name, "path": str(model.path), "head": model.info["head"],
                             "members": len(model.members), "trained_on": model.info.get("training_data"),
                             "test_metrics": model.info.get("test_metrics"), "confidence": model.info.get("confidence")},
                   "backend": backend, "images": records, "failed": [{"image": n, "error": e} for n, e in errors],
                   "measurements": "measurements.csv" if measure else
                   "none: the model's landmarks do not include the ISBI 2015 set the 8 measurements need",
                   "seconds": seconds}
        write_atomic(tmp / "predictions.json", json.dumps(summary, indent=1))
    return {"images": len(records), "failed": len(errors), "seconds": seconds, "out": str(out),
            "warnings": sorted({w for r in records for w in r["warnings"]})}
