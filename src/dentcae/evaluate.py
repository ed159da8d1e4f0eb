"""Evaluate a landmark checkpoint: predict a split, map back to image pixels, score, write files.

    summary = evaluate_checkpoint(cfg, "runs/x")        # or "runs/x/snapshots/..._iter_N.caffemodel"

Inference is infer.py's, scoring metrics.py's (pure), drawing figures.py's; this module joins
them. Predictions are mapped back to original-image pixels (undo the resize, un-mirror right
halves) and compared with the annotations of landmarks.csv. Writes predictions.csv, summary.json,
results.md, detections.png and error_cdf.png into the run folder (or `out`).
"""
import json
from pathlib import Path

import h5py
import numpy as np

from .atomic import write_atomic, write_csv_atomic
from .config import load_config
from .data import read_image
from .figures import plot_detections, plot_error_cdf
from .infer import net_shapes, predict_split
from .metrics import (PRED_FIELDS, SDR_MM, markdown_table, prediction_rows, radial_errors_mm,
                      read_predictions, summarize)
from . import heatmap, refine
from .prepare import configured_dataset, prepare, sample_box, to_pixels
from .transfer import mismatches


class EvaluationError(ValueError):
    pass


def check_checkpoint(deploy, weights, head, num_landmarks):
    """Refuse, before predicting, weights that do not fill the deploy net exactly (Caffe would keep
    missing layers random, or abort on a shape) and a net whose output does not fit K landmarks."""
    expected, out_shape = net_shapes(deploy)
    problems = mismatches(expected, weights)
    want = 2 * num_landmarks if head == "regression" else num_landmarks
    if out_shape[1] != want:
        problems.append(f"the net outputs {out_shape[1]} {'values' if head == 'regression' else 'heatmaps'} per "
                        f"sample, the data has {num_landmarks} landmarks per sample (needs {want})")
    if problems:
        raise EvaluationError(f"{weights} does not fit {deploy} and this data: " + "; ".join(problems))


def check_refine_net(run, head, num_landmarks):
    """A run configured with model.refine needs its trained refine net in <run>/refine."""
    fine = Path(run) / "refine"
    for f in (fine / "deploy.prototxt", fine / "final.caffemodel"):
        if not f.exists():
            raise EvaluationError(f"{f} not found: the run's config has model.refine.patch > 0 but its refine "
                                  "net is not trained; finish it with `dentcae finetune --config C --resume`")
    check_checkpoint(fine / "deploy.prototxt", fine / "final.caffemodel", head, num_landmarks)


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


# Each head's decoder: net outputs -> (N, K, 2) normalised crop coordinates (then to image pixels).
# The heatmap decoder is robust to far-off peaks through a shape prior from the training labels.
DECODERS = {
    "regression": lambda outputs, size, train_labels: np.asarray(outputs, float).reshape(len(outputs), -1, 2),
    "heatmap": lambda outputs, size, train_labels: heatmap.decode_with_prior(
        outputs, size, heatmap.ShapePrior(train_labels)),
    "heatmap_argmax": lambda outputs, size, train_labels: heatmap.decode(outputs, size)}


def train_labels(prepared):
    """(N, K, 2) normalised labels of the original (not augmented) training samples."""
    with h5py.File(prepared.h5("reg_train"), "r") as f:
        return f["label"][...].reshape(len(f["label"]), -1, 2).astype(np.float64)


def labels_to_pixels(labels, samples):
    """(N, K, 2) normalised sample labels -> original-image pixels; the scoring below never knows
    which head made them."""
    return np.array([to_pixels(p, *sample_box(s)) for p, s in zip(labels, samples)])


def outputs_to_pixels(decoder, outputs, samples, size, labels_train):
    """A head's outputs for `samples` -> (N, K, 2) original-image pixels."""
    return labels_to_pixels(DECODERS[decoder](outputs, size, labels_train), samples)


def mean_shape_pixels(labels_train, samples):
    """The no-learning baseline: the training set's mean label, placed in every test sample."""
    mean = labels_train.mean(0)
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


def data_description(prep, split="reg_test"):
    """What a result is measured on: dataset, real or synthetic, landmarks, split, labels, spacing."""
    m = prep.meta
    return {"dataset": m["dataset"], "synthetic": m["synthetic"], "landmarks": m["landmark_names"],
            "layout": m["layout"], "split": split, "test_samples": m["counts"][split],
            "test_images": m.get("test_images"), "labelled_train_samples": m["counts"]["reg_train"],
            "labelled_train_images": m.get("labelled_train_images"), "label_budget": m.get("label_budget"),
            "pretrain_images": m["counts"]["cae_train"], "spacing_mm": m.get("spacing_mm"),
            "input_size": m["input_size"]}


def describe(d):
    """One sentence of data_description for results.md and the tables."""
    kind = "SYNTHETIC phantom" if d["synthetic"] else "real X-rays"
    budget = f" (label budget {d['label_budget']})" if d["label_budget"] else ""
    return (f"Data: {d['dataset']} ({kind}); {len(d['landmarks'])} landmarks per sample "
            f"({', '.join(d['landmarks'])}); trained on {d['labelled_train_images']} labelled images"
            f"{budget}, tested on {d['test_images']} images ({d['test_samples']} samples, split "
            f"{d['split']}); {d['pretrain_images']} samples for pre-training; spacing "
            f"{'/'.join(f'{s:g}' for s in d['spacing_mm'] or [])} mm/px; input {d['input_size']} px.")


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


def evaluate_checkpoint(cfg, checkpoint, out=None, gpu=None, split="reg_test"):
    """Evaluate a landmark checkpoint on a split; writes and returns the summary."""
    run, weights = resolve_checkpoint(checkpoint)
    cfg = cfg or load_config(run / "config.yaml")
    prep = prepare(cfg)
    samples = [r for r in prep.samples() if int(r[split])]
    if not samples:
        raise EvaluationError(f"{prep.dir}: split '{split}' has no annotated samples to evaluate on")
    ds = configured_dataset(cfg)
    names = prep.meta["landmark_names"]
    check_checkpoint(run / "deploy.prototxt", weights, cfg["model"]["head"], prep.meta["num_landmarks"])
    outputs = predict_split(run / "deploy.prototxt", weights, prep, split, gpu)
    size, head, labels_train = prep.meta["input_size"], cfg["model"]["head"], train_labels(prep)
    labels = DECODERS[head](outputs, size, labels_train)
    gt_px = ground_truth_pixels(ds, samples)
    first = None
    if refine.enabled(cfg):      # the refine net's estimates; the first ones are scored beside them
        check_refine_net(run, head, prep.meta["num_landmarks"])
        passes = refine.refine_passes(cfg, run, prep, split, labels)
        first, labels = labels, passes[-1]
    pred_px = labels_to_pixels(labels, samples)
    stats, err_mm = score(pred_px, gt_px, samples, names, mean_shape_pixels(labels_train, samples))
    if first is not None:
        stats["coarse_decoding"] = score(labels_to_pixels(first, samples), gt_px, samples, names)[0]
        stats["refine_passes"] = [_brief(score(labels_to_pixels(p, samples), gt_px, samples, names)[0])
                                  for p in passes[:-1]] + [_brief(stats)]       # the last pass is `stats`
    if head == "heatmap":        # what the shape prior changed: the plain argmax decoding's result
        plain = outputs_to_pixels("heatmap_argmax", outputs, samples, size, labels_train)
        stats["argmax_decoding"] = score(plain, gt_px, samples, names)[0]
    out = Path(out) if out else run
    out.mkdir(parents=True, exist_ok=True)
    rows = prediction_rows(samples, names, gt_px, pred_px, err_mm, [float(s["spacing_mm"]) for s in samples])
    write_csv_atomic(out / "predictions.csv", [PRED_FIELDS] + rows)
    training = json.loads((run / "training.json").read_text()) if (run / "training.json").exists() else {}
    summary = {"checkpoint": str(weights), "split": split, "dataset": prep.meta["dataset"],
               "synthetic": ds.synthetic, "data": data_description(prep, split), **stats,
               "training": training, "out": str(out)}
    summary["table_md"] = markdown_table(stats, cfg["name"] + (" (SYNTHETIC phantom)" if ds.synthetic else "")) \
        + "\n" + describe(summary["data"]) + "\n"
    write_atomic(out / "results.md", summary["table_md"])
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    plot_detections(detection_panels({cfg["name"]: out / "predictions.csv"}, ds.root), out / "detections.png")
    plot_error_cdf({cfg["name"]: err_mm.reshape(-1)}, out / "error_cdf.png", SDR_MM)
    return summary
