"""`dentcae pseudo-label RUN --out DIR`: a trained detector labels the training images that have no
labels, and a new dataset folder holds its confident landmarks beside the real labels.

    report = pseudo_label("runs/heatmap_scratch", "data/isbi-pseudo", min_confidence=None)

Which images: the run's training side only. Its labelled training images keep their labels; every
other training image (unannotated, or annotated but withheld by `dataset.label_budget`) is predicted
and gets the landmarks whose confidence (deploy/confidence.py) is at least `min_confidence` (default:
the run's flag threshold, chosen on its labelled training images) and that lie on the image; the
others stay empty. Test images, and training images that are one radiograph with a test image
(one group), are never predicted: test images are copied with their own labels, pinned to the test set they were in, so
the new dataset scores on exactly the same images; leaked images are left out. Every row is pinned
(`split`: train or its test set), so the splits do not move.

Train on it with the heatmap head's `model.partial_labels: true` (configs/ours/heatmap_pseudo.yaml):
a sample's missing landmarks are masked out of the loss. `pseudo.json` records how many landmarks
were kept and, on the images whose real labels the budget withheld, how far the kept and the
rejected pseudo-labels are from them (mm): the pseudo-labels' accuracy, never measured on test images.
A second round is the same command on a run trained on the new dataset: its pseudo-labelled images
(pseudo.json `candidates`) are labelled anew, the real labels stay, accuracy is measured against the
first round's source dataset (`truth_dataset`), and `round` counts the rounds.
"""
import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from ..data.dataset import load_dataset, read_image, select_landmarks
from ..data.landmarks_csv import is_test
from ..data.prepare import configured_dataset
from ..runtime.atomic import staged_folder
from ..runtime.yamlio import read_yaml_mapping
from ..inference.detector import Detector
from ..inference.model import ModelError
from ..inference.runs import run_model, weights_stamp


def _previous_round(ds):
    """pseudo.json of a dataset this command wrote (the run trained on pseudo-labels), else None."""
    path = ds.root / "pseudo.json"
    return json.loads(path.read_text()) if path.exists() else None


def _roles(prep, previous):
    """{image: "labelled" | "test" | "candidate"} of a run's prepared data; leaked images are left out.
    On a pseudo-labelled dataset (`previous`: its pseudo.json) its pseudo-labelled images are
    candidates again: a new round labels them anew from the real labels alone."""
    leaks = set((prep.meta.get("leaks") or {}).get("images") or [])
    again = set((previous or {}).get("candidates") or [])
    roles = {}
    for s in prep.samples():
        role = "test" if int(s["reg_test"]) or is_test(s["pin"]) else \
            "labelled" if int(s["reg_train"]) and s["image"] not in again else "candidate"
        if roles.get(s["image"]) in ("test", "labelled"):
            continue
        roles[s["image"]] = role
    return {name: role for name, role in roles.items() if not (role == "candidate" and name in leaks)}


def _truth(ds, previous):
    """{image: record} holding the real labels: the first round's source dataset's, or this one's."""
    if previous is None:
        return {r.name: r for r in ds.images}
    source = select_landmarks(load_dataset(previous["truth_dataset"]), previous.get("truth_landmarks"))
    return {r.name: r for r in source.images}


def _copy_image(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _dataset_yaml(ds, out):
    meta = read_yaml_mapping(ds.root / "dataset.yaml", "dataset.yaml", ValueError)
    meta = {**meta, "name": f"{ds.name}-pseudo", "landmarks": list(ds.landmark_names),
            "description": f"{ds.name} with pseudo-labels (dentcae pseudo-label); the real labels of the "
                           "labelled training images and of the test images are kept"}
    if ds.layout == "bilateral":
        meta["sides"] = {"left": [ds.landmark_names[i] for i in ds.left],
                         "right": [ds.landmark_names[i] for i in ds.right]}
    (out / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def _row(rec, points, pin):
    cells = [rec.name]
    for x, y in points:
        cells += ["", ""] if not (np.isfinite(x) and np.isfinite(y)) else [f"{x:.3f}", f"{y:.3f}"]
    return cells + [f"{rec.spacing_mm:g}", rec.group, pin]


def _accuracy(records, names):
    """MRE (mm) of kept and rejected pseudo-labels against the withheld real labels."""
    kept, rejected = [], []
    per = {n: [] for n in names}
    for truth, points, keep, spacing in records:
        err = np.linalg.norm(points - truth, axis=1) * spacing
        kept += list(err[keep])
        rejected += list(err[~keep])
        for n, e, k in zip(names, err, keep):
            if k:
                per[n].append(e)
    mean = lambda v: float(np.mean(v)) if len(v) else None          # noqa: E731
    return {"images": len(records), "kept_mre_mm": mean(kept), "rejected_mre_mm": mean(rejected),
            "kept_within_2mm": mean([e <= 2.0 for e in kept]), "kept_landmarks": len(kept),
            "rejected_landmarks": len(rejected), "kept_mre_mm_per_landmark": {n: mean(v) for n, v in per.items()}}


def kept(points, confidence, threshold, shape):
    """(K,) which predicted landmarks become pseudo-labels: confidence at least `threshold`, and on
    the image (pixel centres 0..W-1 by 0..H-1, half a pixel slack, as a dataset's labels must be)."""
    h, w = shape[:2]
    x, y = points[:, 0], points[:, 1]
    inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
    return np.isfinite(confidence) & (confidence >= threshold) & inside


def _predict_candidates(model, recs, truth, roles, threshold, progress, gpu=None):
    """{image: (points, keep)} of the candidate images, and the withheld-label accuracy records."""
    detector, out, withheld = Detector(model, gpu=gpu), {}, []
    for name in tqdm([n for n, r in roles.items() if r == "candidate"], desc="pseudo-label", unit="image",
                     disable=not progress):
        rec = recs[name]
        grey = read_image(rec.path)
        found = detector(grey)
        points = found.points
        keep = kept(points, found.confidence, threshold, grey.shape)
        out[name] = (points, keep)
        real = truth.get(name)
        if real is not None and real.annotated and np.isfinite(real.landmarks).all():
            withheld.append((real.landmarks, points, keep, rec.spacing_mm))
    return out, withheld


def pseudo_label(run, out, min_confidence=None, progress=True, gpu=None):
    """Write the pseudo-labelled dataset folder `out` (whole or not at all); returns pseudo.json's dict."""
    try:
        model, prep = run_model([run])                 # its data prepared once, for the model and the roles
    except ModelError as e:
        raise ValueError(str(e)) from None
    if model.threshold is None and min_confidence is None:
        raise ValueError(f"{run}: its head gives no confidence, so no landmark can be chosen (heatmap head only)")
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} exists; choose a new folder")
    threshold = model.threshold if min_confidence is None else float(min_confidence)
    ds = configured_dataset(model.cfg)
    recs, previous = {r.name: r for r in ds.images}, _previous_round(ds)
    roles = _roles(prep, previous)
    predicted, withheld = _predict_candidates(model, recs, _truth(ds, previous), roles, threshold, progress, gpu)
    header = ["image"] + [f"{a}{i}" for i in range(1, len(ds.landmark_names) + 1) for a in "xy"] + \
        ["spacing_mm", "group", "split"]
    test_pins = {s["image"]: s["pin"] or "test" for s in prep.samples() if int(s["reg_test"]) or is_test(s["pin"])}
    with staged_folder(out) as tmp:
        rows = [header]
        for name, role in roles.items():
            rec = recs[name]
            _copy_image(rec.path, tmp / name)
            if role == "candidate":          # every row is pinned; a row with no landmark labels nothing
                points, keep = predicted[name]
                rows.append(_row(rec, np.where(keep[:, None], points, np.nan), "train"))
            else:
                points = rec.landmarks if rec.annotated else np.full((len(ds.landmark_names), 2), np.nan)
                rows.append(_row(rec, points, "train" if role == "labelled" else test_pins.get(name, "test")))
        with open(tmp / "landmarks.csv", "w", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows(rows)
        _dataset_yaml(ds, tmp)
        if (ds.root / "annotations").is_dir():
            shutil.copytree(ds.root / "annotations", tmp / "annotations")
        mask = np.array([k for _, k in predicted.values()]) if predicted else np.zeros((0, len(ds.landmark_names)))
        report = {"round": (previous or {}).get("round", 0) + 1, "source_run": str(Path(run).resolve()),
                  "source_weights_sha256": weights_stamp(model.members[0].nets), "source_dataset": str(ds.root),
                  "truth_dataset": (previous or {}).get("truth_dataset", str(ds.root)),
                  "truth_landmarks": (previous or {}).get("truth_landmarks", model.cfg["dataset"]["landmarks"]),
                  "threshold": threshold,
                  "threshold_from": "--min-confidence" if min_confidence is not None else "the run's flag threshold",
                  "images": {role: sum(r == role for r in roles.values()) for role in ("labelled", "candidate", "test")},
                  "candidates": sorted(predicted),
                  "pseudo_labelled_images": int(mask.any(1).sum()) if len(mask) else 0,
                  "kept_per_landmark": dict(zip(ds.landmark_names, map(int, mask.sum(0)))),
                  "kept_fraction": float(mask.mean()) if mask.size else 0.0,
                  "accuracy_on_withheld_labels": _accuracy(withheld, ds.landmark_names)}
        (tmp / "pseudo.json").write_text(json.dumps(report, indent=1))
    return report
