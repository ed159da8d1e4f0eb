"""`dentcae pseudo-label RUN [RUN ...] --out DIR`: trained detectors (one, or an ensemble seen through
test-time views) label the training images that have no labels, and a new dataset folder holds the
landmarks the filters keep beside the real labels.

    report = pseudo_label(["runs/t/scratch_r0", "runs/t/scratch_r1"], "data/isbi-pseudo",
                          {"filters": ["spread", "shape"], "views": [{"rotate": 3}]})

Which images: the runs' training side only (the runs must share their data: teachers.py). Labelled
training images keep their labels; every other training image (unannotated, or annotated but withheld
by `dataset.label_budget`) is predicted, and its landmarks pass the filters (filters.py: the
confidence, the spread across teachers and views, the residual under the labelled shapes' model) or
stay empty. Test images, and training images that are one radiograph with a test image (one group),
are never predicted: test images are copied with their own labels, pinned to the test set they were
in, so the new dataset scores on exactly the same images; leaked images are left out. Every row is
pinned (`split`: train or its test set), so the splits do not move.

Train on it with the heatmap head's `model.partial_labels: true` (configs/ours/heatmap_pseudo.yaml):
a sample's missing landmarks are masked out of the loss, in the first net and the refine net.
`pseudo_labels.csv` lists every candidate landmark with its confidence, spread and shape residual and
whether it was kept; `pseudo.json` the settings, the kept share and, on the images whose real labels
the budget withheld, how far the kept and rejected pseudo-labels are from them (report.py; never
measured on test images, never used to choose). A second round is the same command on a run trained
on the new dataset: its pseudo-labelled images (pseudo.json `candidates`) are labelled anew, the real
labels stay, accuracy is measured against the first round's source dataset. `round` in pseudo.json
counts what the teachers learnt from: a teacher fine-tuned on the real labels from a pseudo-label
student (model.init: run) makes round 2 as well.
"""
import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import yaml

from ..config import load_config
from ..data.dataset import load_dataset, pseudo_report, select_landmarks
from ..data.landmarks_csv import is_test
from ..data.prepare import configured_dataset
from ..data.splits import prepared_roles
from ..inference.runs import weights_stamp
from ..runtime.atomic import staged_folder
from ..runtime.outputs import overlap
from ..runtime.yamlio import read_yaml_mapping
from .choose import DEFAULTS, check_settings, choose
from .report import accuracy, filter_curves, plot_filter_curves, write_table
from .teachers import label_images, teacher_model


def _previous_round(ds):
    """pseudo.json of a dataset this command wrote (the run trained on pseudo-labels), else None."""
    return pseudo_report(ds.root)


def _rounds_learnt(cfg, seen=()):
    """The latest pseudo-label round a teacher learnt from: its data's (a pseudo-labelled dataset), or
    that of the run its weights started from (model.init: run; a pseudo-pre-trained net fine-tuned on
    the real labels learnt from its first round), 0 for real labels only."""
    data = pseudo_report((cfg.get("dataset") or {}).get("root"))
    latest = data.get("round", 1) if data else 0
    m = cfg.get("model") or {}
    start = Path(m["init_run"]).resolve() if m.get("init") == "run" and m.get("init_run") else None
    if start is not None and start not in seen and (start / "config.yaml").is_file():
        start_cfg = read_yaml_mapping(start / "config.yaml", "run config", ValueError)
        latest = max(latest, _rounds_learnt(start_cfg, seen + (start,)))
    return latest


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


def _labelled_shapes_mm(recs, roles):
    """(M, L, 2) the labelled training images' complete shapes, in mm."""
    shapes = [recs[n].landmarks * recs[n].spacing_mm for n, r in roles.items()
              if r == "labelled" and recs[n].annotated and np.isfinite(recs[n].landmarks).all()]
    return np.stack(shapes) if shapes else np.zeros((0, 0, 2))


def _withheld(truth, names):
    """{image: (L, 2) real labels} of candidates whose labels the budget withheld (for the report)."""
    out = {}
    for n in names:
        real = truth.get(n)
        if real is not None and real.annotated and np.isfinite(real.landmarks).all():
            out[n] = real.landmarks
    return out


def _rows(ds, recs, roles, kept_points, test_pins):
    rows = [["image"] + [f"{a}{i}" for i in range(1, len(ds.landmark_names) + 1) for a in "xy"] +
            ["spacing_mm", "group", "split"]]
    for name, role in roles.items():
        rec = recs[name]
        if role == "candidate":          # every row is pinned; a row with no landmark labels nothing
            rows.append(_row(rec, kept_points[name], "train"))
        else:
            points = rec.landmarks if rec.annotated else np.full((len(ds.landmark_names), 2), np.nan)
            rows.append(_row(rec, points, "train" if role == "labelled" else test_pins.get(name, "test")))
    return rows


def _write(tmp, ds, recs, roles, rows):
    for name in roles:
        _copy_image(recs[name].path, tmp / name)
    with open(tmp / "landmarks.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    _dataset_yaml(ds, tmp)
    if (ds.root / "annotations").is_dir():
        shutil.copytree(ds.root / "annotations", tmp / "annotations")


def _report(runs, model, ds, previous, settings, roles, chosen, withheld):
    mask = chosen["keep"]
    return {"round": 1 + max(_rounds_learnt(m.cfg) for m in model.members), "source_runs": [str(Path(r).resolve()) for r in runs],
            "source_run": str(Path(runs[0]).resolve()),
            "teachers_weights_sha256": [weights_stamp(m.nets) for m in model.members],
            "source_dataset": str(ds.root), "truth_dataset": (previous or {}).get("truth_dataset", str(ds.root)),
            "truth_landmarks": (previous or {}).get("truth_landmarks", model.cfg["dataset"]["landmarks"]),
            "settings": settings, "threshold": chosen["threshold"], "thresholds": chosen["thresholds"],
            "images": {role: sum(r == role for r in roles.values()) for role in ("labelled", "candidate", "test")},
            "candidates": chosen["names"], "pseudo_labelled_images": int(mask.any(1).sum()) if len(mask) else 0,
            "kept_per_landmark": dict(zip(ds.landmark_names, map(int, mask.sum(0)))),
            "kept_fraction": float(mask.mean()) if mask.size else 0.0,
            "accuracy_on_withheld_labels": accuracy(chosen, withheld, ds.landmark_names),
            "filter_curves_on_withheld_labels": filter_curves(chosen, withheld)}


def _check_out(out, runs, dataset_root):
    """The new folder may not be, hold or lie inside the dataset it reads or a teacher's run folder:
    the next run would read its copies (test images among them) as part of its own data."""
    for what, folder in [("the teachers' dataset", dataset_root)] + [("the teacher run", r) for r in runs]:
        how = overlap(out, folder)
        if how:
            raise ValueError(f"--out {out} {how} {what} {folder}; choose a folder outside it")


def pseudo_label(runs, out, settings=None, progress=True, gpu=None):
    """Write the pseudo-labelled dataset folder `out` (whole or not at all) from the teacher run(s)
    `runs` with `settings` (choose.DEFAULTS' keys); returns pseudo.json's dict."""
    runs = [runs] if isinstance(runs, (str, Path)) else list(runs)
    settings = check_settings({**DEFAULTS, **(settings or {})})
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} exists; choose a new folder")
    _check_out(out, runs, load_config(Path(runs[0]) / "config.yaml")["dataset"]["root"])
    need_threshold = "confidence" in settings["filters"] and settings["min_confidence"] is None
    model, prep = teacher_model(runs, settings["views"], settings["refine_views"], calibrate=need_threshold,
                                progress=progress, gpu=gpu)
    if need_threshold and model.threshold is None:
        raise ValueError(f"{runs[0]}: its head gives no confidence, so the confidence filter cannot choose "
                         "(heatmap head only; or leave 'confidence' out of the filters)")
    ds = configured_dataset(model.cfg)
    recs, previous = {r.name: r for r in ds.images}, _previous_round(ds)
    roles = prepared_roles(prep, (previous or {}).get("candidates") or ())   # earlier rounds' candidates again
    names = sorted(n for n, r in roles.items() if r == "candidate")
    guesses = label_images(model, [recs[n] for n in names], progress, gpu)
    chosen = choose(guesses, names, settings, model.threshold, _labelled_shapes_mm(recs, roles),
                    [recs[n].spacing_mm for n in names], len(ds.landmark_names))
    withheld = _withheld(_truth(ds, previous), names)
    test_pins = {s["image"]: s["pin"] or "test" for s in prep.samples() if int(s["reg_test"]) or is_test(s["pin"])}
    with staged_folder(out) as tmp:
        _write(tmp, ds, recs, roles, _rows(ds, recs, roles, chosen["kept_points"], test_pins))
        report = _report(runs, model, ds, previous, settings, roles, chosen, withheld)
        write_table(tmp / "pseudo_labels.csv", chosen, withheld, ds.landmark_names)
        # an SVG: a PNG in a dataset folder would be read as one more (unlabelled) image
        plot_filter_curves(report["filter_curves_on_withheld_labels"], tmp / "filter_curves.svg")
        (tmp / "pseudo.json").write_text(json.dumps(report, indent=1))
    return report
