"""Evaluate a landmark checkpoint, or an ensemble of runs: detect a split, score, write files.

    summary = evaluate_checkpoint(cfg, "runs/x")        # or "runs/x/snapshots/..._iter_N.caffemodel"
    summary = evaluate_checkpoint(None, ["runs/x_r0", "runs/x_r1"], out="results/x_ensemble")

Landmarks come from inference/detector.py's Detector run on each test image as `dentcae predict`
runs it (the same decoded coordinates, by construction: test-time views and ensembles included),
scoring is metrics.py's (pure), drawing dentcae/figures.py's; this module joins them. Predictions are in
original-image pixels and compared with the annotations of landmarks.csv; confidence, spread and
flags (inference/calibration.py) are scored against the errors. Writes predictions.csv,
summary.json, results.md, detections.png and error_cdf.png into the run folder (or `out`).
"""
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..schema import test_time_settings
from ..data.dataset import read_image
from ..data.geometry import sample_box, to_pixels
from ..data.inputs import split_labels
from ..data.prepare import configured_dataset
from ..inference.bundles import is_bundle
from ..inference.calibration import flags, uncertainty_report
from ..inference.detector import Detector
from ..runtime.atomic import write_atomic, write_csv_atomic
from . import cephalometry
from .checkpoints import EvaluationError, open_runs, resolve_checkpoint  # noqa: F401 (the verbs' names)
from .annotators import annotation_pixels, brief, protocol_lines, protocols, test_set_of
from .describe import data_description, describe
from ..figures import plot_detections, plot_error_cdf
from .metrics import (PRED_FIELDS, SDR_MM, UNCERTAINTY_FIELDS, markdown_table, prediction_rows, radial_errors_mm,
                      read_predictions, summarize)


def mean_shape_pixels(labels_train, samples):
    """The no-learning baseline: the training set's mean label, placed in every test sample."""
    mean = np.nanmean(labels_train, 0)          # each landmark over the samples that label it
    return np.array([to_pixels(mean, *sample_box(s)) for s in samples])


def ground_truth_pixels(ds, samples):
    recs = {r.name: r for r in ds.images}
    return np.array([recs[s["image"]].landmarks[ds.side_indices(s["side"])] for s in samples])


def detection_panels(predictions, dataset_root, n=2):
    """Figure panels for the first n test images from {arm: predictions.csv}: the whole image,
    every sample (half) of it, ground truth, and each arm's predictions and errors in mm."""
    per_arm = {label: read_predictions(path) for label, path in predictions.items()}
    first = next(iter(per_arm.values()))
    panels = []
    for name in list(dict.fromkeys(r["image"] for r in first))[:n]:
        pick = lambda rows, *keys: np.array([[float(r[k]) for k in keys] for r in rows if r["image"] == name])  # noqa
        panels.append({"image": read_image(Path(dataset_root) / name), "title": name,
                       "gt": pick(first, "gt_x", "gt_y"),
                       "preds": {a: pick(rows, "pred_x", "pred_y") for a, rows in per_arm.items()},
                       "errors_mm": {a: pick(rows, "error_mm")[:, 0] for a, rows in per_arm.items()}})
    return panels


def score(pred_px, gt_px, samples, names, base_px=None):
    """(stats, with the mean-shape baseline when base_px is given, and the (N, K) errors in mm) of
    predictions in image pixels."""
    spacing = [float(s["spacing_mm"]) for s in samples]
    err_mm = radial_errors_mm(pred_px, gt_px, spacing)
    stats = summarize(err_mm, names)
    if base_px is not None:
        stats["baseline_mean_shape_mre_mm"] = float(radial_errors_mm(base_px, gt_px, spacing).mean())
    return stats, err_mm


def _brief(stats):
    return {k: stats[k] for k in ("mre_mm", "median_mm", "sdr")}


def detect(detector, ds, samples):
    """The Detector on every sample's image, as `dentcae predict` runs it: ((N, K, 2) image pixels,
    (N, K) confidence, (N, K) spread in pixels, {name: (N, K, 2)} what it reports beside, and with
    a refinement "passes": [(N, K, 2) after each pass])."""
    recs, found = {r.name: r for r in ds.images}, {}
    names = list(dict.fromkeys(s["image"] for s in samples))
    for name in tqdm(names, desc="detecting test images", unit="image", disable=len(names) < 2):
        found[name] = detector(read_image(recs[name].path))
    pick = lambda s, a: np.asarray(a)[ds.side_indices(s["side"])]         # noqa: E731
    points = np.array([pick(s, found[s["image"]].points) for s in samples])
    conf = np.array([pick(s, found[s["image"]].confidence) for s in samples])
    spread = np.array([pick(s, found[s["image"]].spread) for s in samples])
    names = found[samples[0]["image"]].beside if samples else {}
    beside = {n: np.array([pick(s, found[s["image"]].beside[n]) for s in samples]) for n in names}
    passes = len(found[samples[0]["image"]].passes) if samples else 0
    if passes:
        beside["passes"] = [np.array([pick(s, found[s["image"]].passes[i]) for s in samples]) for i in range(passes)]
    return points, conf, spread, beside


def _scores_beside(beside, stats, samples, gt_px, names):
    """The summary's extra scores: each alternative decoding, and with a refinement the first net's
    scores (coarse_decoding) and each pass's (refine_passes; the last pass is `stats` itself)."""
    out = {n: score(px, gt_px, samples, names)[0] for n, px in beside.items() if n != "passes"}
    if "passes" in beside:
        out["refine_passes"] = [_brief(score(p, gt_px, samples, names)[0]) for p in beside["passes"][:-1]] + [_brief(stats)]
    return out


def _test_set_rows(samples, test_set, where):
    """Indices of the samples in `test_set` (all when None); refuses a test set that has none."""
    keep = [i for i, s in enumerate(samples) if test_set is None or test_set_of(s) == test_set]
    if not keep:
        known = sorted({test_set_of(s) for s in samples})
        raise EvaluationError(f"{where}: no test samples in test set '{test_set}' (this data has: {', '.join(known)})")
    return keep


def _by_test_set(err_mm, pred_px, samples, ds):
    """Scores per test set (when there are several) and per annotation protocol (when the dataset
    has other annotators' landmarks)."""
    out = {}
    sets = sorted({test_set_of(s) for s in samples})
    if len(sets) > 1:
        out["test_sets"] = {name: brief(err_mm[[i for i, s in enumerate(samples) if test_set_of(s) == name]])
                            for name in sets}
    by_protocol = protocols(pred_px, samples, ds)
    if by_protocol:
        out["protocols"] = by_protocol
    return out


def _measurements(pred_px, gt_px, samples, names, ds):
    """The 8 ISBI measurements' agreement (cephalometry.py) over all test samples and per test set,
    and between the annotators on the same images when there are two, when the landmarks include
    those they need (whole images only: a half has no profile)."""
    if not cephalometry.has_landmarks(names) or any(s["side"] != "whole" for s in samples):
        return {}
    spacing = [float(s["spacing_mm"]) for s in samples]
    sets = sorted({test_set_of(s) for s in samples})
    groups = {"all": list(range(len(samples)))}
    groups.update({n: [i for i, s in enumerate(samples) if test_set_of(s) == n] for n in sets if len(sets) > 1})
    out = {n: cephalometry.agreement(pred_px[i], gt_px[i], names, [spacing[j] for j in i]) for n, i in groups.items()}
    pair = sorted(ds.annotations)[:2]
    if len(pair) == 2:
        a, b = (annotation_pixels(ds, samples, who) for who in pair)
        ok = [i for i in range(len(samples)) if np.isfinite(a[i]).all() and np.isfinite(b[i]).all()]
        out[f"inter_observer_{pair[1]}_vs_{pair[0]}"] = cephalometry.agreement(b[ok], a[ok], names,
                                                                                [spacing[i] for i in ok])
    return {"measurements": out}


def _uncertainty(model, conf, spread_px, err_mm, samples):
    """flags (N, K), and how confidence, spread and flags tell the errors (calibration.py)."""
    heights = np.array([[float(s["crop_h"])] for s in samples])
    flagged = flags(conf, spread_px / heights, model.calibration)
    spread_mm = spread_px * np.array([[float(s["spacing_mm"])] for s in samples])
    return flagged, spread_mm, {**uncertainty_report(conf, spread_mm, err_mm, flagged),
                                "calibration": model.calibration, "members": len(model.members)}


def _out_folder(out, checkpoints, test_set):
    if out:
        return Path(out)
    if len(checkpoints) > 1 or is_bundle(checkpoints[0]):
        raise EvaluationError("several runs or a bundle: give --out (the scores belong to none of the run folders, "
                              "and nothing is written inside a bundle)")
    run = resolve_checkpoint(checkpoints[0])[0]
    return run if test_set is None else run / f"eval_{test_set}"


def evaluate_checkpoint(cfg, checkpoint, out=None, gpu=None, split="reg_test", test_set=None):
    """Evaluate a landmark checkpoint, or several run folders as one ensemble, on a split (or one
    test set of it, e.g. test2); writes and returns the summary (into the run folder, or
    <run>/eval_<test set>, unless `out`; several runs need `out`)."""
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    out = _out_folder(out, checkpoints, test_set)
    model, prep = open_runs(cfg, checkpoints, gpu)
    cfg = model.cfg
    samples = [r for r in prep.samples() if int(r[split])]
    if not samples:
        raise EvaluationError(f"{prep.dir}: split '{split}' has no annotated samples to evaluate on")
    samples = [samples[i] for i in _test_set_rows(samples, test_set, prep.dir)]
    ds, names = configured_dataset(cfg), prep.meta["landmark_names"]
    pred_px, conf, spread_px, beside = detect(Detector(model, gpu=gpu), ds, samples)
    gt_px = ground_truth_pixels(ds, samples)
    stats, err_mm = score(pred_px, gt_px, samples, names, mean_shape_pixels(split_labels(prep), samples))
    stats.update(_scores_beside(beside, stats, samples, gt_px, names))
    stats.update(_by_test_set(err_mm, pred_px, samples, ds))
    stats.update(_measurements(pred_px, gt_px, samples, names, ds))
    flagged, spread_mm, stats["uncertainty"] = _uncertainty(model, conf, spread_px, err_mm, samples)
    out.mkdir(parents=True, exist_ok=True)
    rows = prediction_rows(samples, names, gt_px, pred_px, err_mm, [float(s["spacing_mm"]) for s in samples])
    extra = np.stack([conf, spread_mm, flagged], -1).reshape(-1, 3)
    rows = [r + [_cell(c), _cell(d), int(f)] for r, (c, d, f) in zip(rows, extra)]
    write_csv_atomic(out / "predictions.csv", [PRED_FIELDS + UNCERTAINTY_FIELDS] + rows)
    training = json.loads((model.path / "training.json").read_text()) if (model.path / "training.json").exists() else {}
    summary = {"checkpoint": str(checkpoint if len(checkpoints) == 1 else [str(c) for c in checkpoints]),
               "members": [m.source for m in model.members], "split": split, "dataset": prep.meta["dataset"],
               "synthetic": ds.synthetic, "data": data_description(prep, split, samples, test_set), **stats,
               "training": training, "test_time": test_time_settings(cfg), "out": str(out)}
    title = cfg["name"] if len(model.members) == 1 else model.name
    summary["table_md"] = markdown_table(stats, title + (" (SYNTHETIC phantom)" if ds.synthetic else "")) \
        + "\n" + describe(summary["data"]) + "\n" + protocol_lines({title: stats.get("protocols")}) \
        + "\n" + cephalometry.agreement_lines(stats.get("measurements", {}))
    write_atomic(out / "results.md", summary["table_md"])
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    plot_detections(detection_panels({title: out / "predictions.csv"}, ds.root), out / "detections.png")
    plot_error_cdf({title: err_mm.reshape(-1)}, out / "error_cdf.png", SDR_MM)
    return summary


def _cell(v):
    return "" if not np.isfinite(v) else round(float(v), 4)
