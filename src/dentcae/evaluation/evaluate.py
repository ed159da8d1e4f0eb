"""Evaluate a landmark checkpoint: predict a split, map back to image pixels, score, write files.

    summary = evaluate_checkpoint(cfg, "runs/x")        # or "runs/x/snapshots/..._iter_N.caffemodel"

Inference is nets/infer.py's, decoding the head's (asked through the registry), scoring
metrics.py's (pure), drawing figures.py's; this module joins them. Predictions are mapped back to
original-image pixels (undo the resize, un-mirror right halves) and compared with the annotations of
landmarks.csv. Writes predictions.csv, summary.json, results.md, detections.png and error_cdf.png
into the run folder (or `out`).
"""
import json
from pathlib import Path

import numpy as np

from ..config import load_config
from ..schema import training_settings
from ..data.dataset import read_image
from ..data.geometry import sample_box, to_pixels
from ..data.inputs import split_inputs, split_labels
from ..data.prepare import configured_dataset, prepare
from ..nets.infer import CheckpointError, check_weights, predict
from ..registry import HEADS
from ..runtime.atomic import write_atomic, write_csv_atomic
from ..runtime.backend import set_device
from . import cephalometry
from .annotators import annotation_pixels, brief, protocol_lines, protocols, test_set_of
from .describe import data_description, describe
from .figures import plot_detections, plot_error_cdf
from .metrics import (PRED_FIELDS, SDR_MM, markdown_table, prediction_rows, radial_errors_mm,
                      read_predictions, summarize)


class EvaluationError(CheckpointError):
    pass


def check_checkpoint(deploy, weights, head, num_landmarks):
    """Refuse, before predicting, weights that do not fill the deploy net exactly and a net whose
    output does not fit K landmarks of the head `head`."""
    try:
        check_weights(deploy, weights, *HEADS.get(head).outputs(num_landmarks), num_landmarks)
    except CheckpointError as e:
        raise EvaluationError(str(e)) from None


def resolve_checkpoint(checkpoint):
    """A run folder (-> its final.caffemodel and deploy.prototxt) or a .caffemodel inside one."""
    p = Path(checkpoint)
    run = p if p.is_dir() else p.parent
    weights = p / "final.caffemodel" if p.is_dir() else p
    if weights.parent.name == "snapshots":
        run = weights.parent.parent
    for f in (weights, run / "deploy.prototxt"):
        if not f.exists():
            raise FileNotFoundError(f"{f} not found (evaluate takes a finetune run folder or a "
                                    ".caffemodel inside one)")
    return run, weights


def predict_split(deploy, weights, prepared, split, gpu=None, batch=16):
    """Net outputs for every sample of a prepared split, on CPU or CUDA device `gpu`."""
    set_device(gpu)
    return predict(deploy, weights, split_inputs(prepared, split), batch)


def labels_to_pixels(labels, samples):
    """(N, K, 2) normalised sample labels -> original-image pixels; the scoring below never knows
    which head made them."""
    return np.array([to_pixels(p, *sample_box(s)) for p, s in zip(labels, samples)])


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


def _decoded(cfg, run, weights, prep, split, gpu):
    """(the head's final labels, {what it reports beside them: label arrays or passes}) of a split."""
    head, size, labels_train = HEADS.get(cfg["model"]["head"]), prep.meta["input_size"], split_labels(prep)
    check_checkpoint(run / "deploy.prototxt", weights, cfg["model"]["head"], prep.meta["num_landmarks"])
    outputs = predict_split(run / "deploy.prototxt", weights, prep, split, gpu)
    labels = head.decode(outputs, size, labels_train)
    beside = dict(head.alternative_decodings(outputs, size, labels_train))
    passes = head.after_decode(cfg, run, prep, split, labels)     # a sub-run's refinement, if any
    if passes:
        beside["coarse_decoding"], beside["passes"], labels = labels, passes, passes[-1]
    return labels, beside


def _scores_beside(beside, stats, samples, gt_px, names):
    """The summary's extra scores: each alternative decoding, and with a refinement the first net's
    scores (coarse_decoding) and each pass's (refine_passes; the last pass is `stats` itself)."""
    out = {}
    for name, labels in beside.items():
        if name != "passes":
            out[name] = score(labels_to_pixels(labels, samples), gt_px, samples, names)[0]
    if "passes" in beside:
        out["refine_passes"] = [_brief(score(labels_to_pixels(p, samples), gt_px, samples, names)[0])
                                for p in beside["passes"][:-1]] + [_brief(stats)]
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


def _differences(a, b, where=""):
    """Dotted keys whose values differ between two nested dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _differences(a[k], b[k], f"{where}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{where}{k}")
    return out


def check_same_training(cfg, run):
    """A config given to evaluate a run may differ from the run's own only in test-time keys (the
    head's TEST_TIME_KEYS) and in what does not decide the data, the split or the nets: anything
    else would score another split or preprocessing than the one trained on, or abort Caffe."""
    saved_path = Path(run) / "config.yaml"
    if cfg is None or not saved_path.exists():
        return
    saved = load_config(saved_path)
    changed = [k for k in _differences(training_settings(saved), training_settings(cfg))
               if k.split(".")[0] in ("dataset", "prepare", "model", "stage")]
    if changed:
        raise EvaluationError(
            f"{run} was trained with other settings of {', '.join(changed)} (its config.yaml); evaluate may change "
            f"only test-time keys ({', '.join(HEADS.get(saved['model']['head']).TEST_TIME_KEYS) or 'none for this head'})")


def evaluate_checkpoint(cfg, checkpoint, out=None, gpu=None, split="reg_test", test_set=None):
    """Evaluate a landmark checkpoint on a split (or one test set of it, e.g. test2); writes and
    returns the summary (into the run folder, or <run>/eval_<test set>, unless `out`)."""
    run, weights = resolve_checkpoint(checkpoint)
    check_same_training(cfg, run)
    cfg = cfg or load_config(run / "config.yaml")
    prep = prepare(cfg)
    samples = [r for r in prep.samples() if int(r[split])]
    if not samples:
        raise EvaluationError(f"{prep.dir}: split '{split}' has no annotated samples to evaluate on")
    keep = _test_set_rows(samples, test_set, prep.dir)
    ds = configured_dataset(cfg)
    names = prep.meta["landmark_names"]
    labels, beside = _decoded(cfg, run, weights, prep, split, gpu)
    samples, labels = [samples[i] for i in keep], labels[keep]
    beside = {k: ([p[keep] for p in v] if k == "passes" else v[keep]) for k, v in beside.items()}
    gt_px, pred_px = ground_truth_pixels(ds, samples), labels_to_pixels(labels, samples)
    stats, err_mm = score(pred_px, gt_px, samples, names, mean_shape_pixels(split_labels(prep), samples))
    stats.update(_scores_beside(beside, stats, samples, gt_px, names))
    stats.update(_by_test_set(err_mm, pred_px, samples, ds))
    stats.update(_measurements(pred_px, gt_px, samples, names, ds))
    out = Path(out) if out else (run if test_set is None else run / f"eval_{test_set}")
    out.mkdir(parents=True, exist_ok=True)
    rows = prediction_rows(samples, names, gt_px, pred_px, err_mm, [float(s["spacing_mm"]) for s in samples])
    write_csv_atomic(out / "predictions.csv", [PRED_FIELDS] + rows)
    training = json.loads((run / "training.json").read_text()) if (run / "training.json").exists() else {}
    summary = {"checkpoint": str(weights), "split": split, "dataset": prep.meta["dataset"],
               "synthetic": ds.synthetic, "data": data_description(prep, split, samples, test_set), **stats,
               "training": training, "out": str(out)}
    summary["table_md"] = markdown_table(stats, cfg["name"] + (" (SYNTHETIC phantom)" if ds.synthetic else "")) \
        + "\n" + describe(summary["data"]) + "\n" + protocol_lines({cfg["name"]: stats.get("protocols")}) \
        + "\n" + cephalometry.agreement_lines(stats.get("measurements", {}))
    write_atomic(out / "results.md", summary["table_md"])
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    plot_detections(detection_panels({cfg["name"]: out / "predictions.csv"}, ds.root), out / "detections.png")
    plot_error_cdf({cfg["name"]: err_mm.reshape(-1)}, out / "error_cdf.png", SDR_MM)
    return summary
