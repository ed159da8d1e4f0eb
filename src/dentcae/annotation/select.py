"""`dentcae select`: which unlabelled X-rays of a dataset to label first.

    report = select_images("data/mine", budget=10, out="to_label.csv")                 # image descriptors
    report = select_images("data/mine", 10, "to_label.csv", features="runs/heatmap")   # a detector's encoder
    report = select_images("data/mine", 10, "to_label.csv", features="runs/cae")       # a pre-training's

Candidates are the dataset's images that are neither labelled nor test: an image pinned to a test
set in landmarks.csv (or, with `cfg`, held out as that config's test split) is never chosen, nor is
any image of its group; a group (one radiograph under several ids) is chosen whole. The images
already labelled count as chosen: the order covers what they do not (`ignore_annotations` chooses
among the labelled images as if they were not, to replay the choice on an annotated set, as the
label-selection table does).
Features: plain image descriptors (data/selection.py), or an encoder (inference/features.py): a
trained detector's (a run folder or a bundle) or a pre-training's (its run folder: no label needed). The rule (data/selection.py: kmedoids by default,
kcenter) orders every candidate group; the first that fit `budget` images are marked chosen.
Writes `out` (CSV: rank, image, group, chosen, in order: the first N rows of any N are a nested
choice) and beside it `<out stem>.png`, a contact sheet of the chosen images.
"""
import csv
import io
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..data.dataset import DataError, is_test, load_dataset, read_image
from ..data.selection import fill_budget, image_descriptors, priority_order
from ..data.splits import assign_splits
from ..deploy.bundle import open_model
from ..figures import plot_contact_sheet
from ..inference.features import encoder_features, is_pretraining_run, model_encoder, pretraining_encoder
from ..runtime.atomic import write_atomic
from ..runtime.outputs import overlap

HEADER = ["rank", "image", "group", "chosen"]


def _tested_groups(ds, cfg):
    """Groups with a test image: pinned in landmarks.csv, or (with a config) in its test split."""
    tested = {r.group for r in ds.images if is_test(r.split)}
    if cfg is not None:
        rows = [{"image": r.name, "group": r.group, "pin": r.split, "annotated": int(r.annotated)} for r in ds.images]
        assign_splits(rows, cfg["prepare"])
        tested |= {r["group"] for r in rows if r["reg_test"]}
    return tested


def roles(ds, cfg=None, ignore_annotations=False):
    """({group: [image records]} of the candidates, of the labelled groups), test groups left out;
    with `ignore_annotations` the candidates are the labelled groups (a replay needs their labels)."""
    tested = _tested_groups(ds, cfg)
    labelled = {r.group for r in ds.images if r.annotated and np.isfinite(r.landmarks).all()}
    free, done = {}, {}
    for r in ds.images:
        if r.group in tested or (ignore_annotations and r.group not in labelled):
            continue
        (done if r.group in labelled and not ignore_annotations else free).setdefault(r.group, []).append(r)
    return free, done


def check_out(out, dataset, overwrite):
    out = Path(out)
    if overlap(out, dataset) in ("is", "lies inside"):      # a CSV file holds no dataset
        raise DataError(f"--out {out} lies inside the dataset {dataset}; write the selection outside it")
    if out.suffix.lower() != ".csv":
        raise DataError(f"--out {out}: the selection is a CSV file; name it *.csv")
    if out.exists():
        head = out.read_text(errors="replace").split("\n", 1)[0].strip() if out.is_file() else ""
        if not overwrite or head != ",".join(HEADER):
            raise DataError(f"--out {out} exists; " + ("pass --overwrite to replace it" if head == ",".join(HEADER)
                            else "it is not a selection `dentcae select` wrote, so it is never replaced"))


def check_features(features):
    if features != "image" and not Path(features).exists():
        raise DataError(f"--features {features}: not found; give `image` (plain image descriptors), a finetune run "
                        "folder, a bundle from `dentcae export`, or a pre-training's run folder")


def _features(records, features, gpu):
    greys = [read_image(r.path) for r in tqdm(records, desc="reading", unit="image")]
    if features == "image":
        return image_descriptors(greys), greys
    encoder = pretraining_encoder(features) if is_pretraining_run(features) else model_encoder(open_model(features))
    return encoder_features(encoder, greys, gpu, lambda xs: tqdm(xs, desc="encoder", unit="image")), greys


def _write(out, order, free, chosen):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for rank, g in enumerate(order, 1):
        for r in sorted(free[g], key=lambda r: r.name):
            writer.writerow([rank, r.name, g, int(g in chosen)])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, buf.getvalue())


def select_images(dataset, budget, out, features="image", rule="kmedoids", cfg=None, ignore_annotations=False,
                  overwrite=False, gpu=None):
    """Order the candidate groups, mark the first `budget` images chosen, write the CSV and the
    contact sheet; returns {"chosen": [image names], "candidates", "labelled", "csv", "sheet"}."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise DataError(f"--budget must be a whole number >= 1, got {budget!r}")
    check_out(out, dataset, overwrite)
    check_features(features)
    ds = load_dataset(dataset)
    free, done = roles(ds, cfg, ignore_annotations)
    if not free:
        raise DataError(f"{dataset}: no image to choose from (every image is labelled or a test image)")
    records = [r for g in sorted({**free, **done}) for r in {**free, **done}[g]]
    feats, greys = _features(records, features, gpu)
    by_group = {}
    for r, f in zip(records, feats):
        by_group.setdefault(r.group, []).append(f)
    order = priority_order(by_group, already=set(done), rule=rule)
    rank = {g: i for i, g in enumerate(order, 1)}
    chosen = set(fill_budget(order, {g: len(free[g]) for g in free}, budget))
    _write(out, order, free, chosen)
    shown = sorted(((r, g) for r, g in zip(records, greys) if r.group in chosen), key=lambda rg: rank[rg[0].group])
    sheet = Path(out).with_suffix(".png")
    small = [cv2.resize(g, None, fx=256 / max(g.shape), fy=256 / max(g.shape), interpolation=cv2.INTER_AREA)
             for _, g in shown]
    plot_contact_sheet(small, [f"{rank[r.group]}. {Path(r.name).name}" for r, _ in shown], sheet,
                       f"{ds.name}: the {len(shown)} images to label first ({rule} on "
                       f"{'image descriptors' if features == 'image' else 'the encoder of ' + str(features)})")
    return {"chosen": [r.name for r, _ in shown], "candidates": sum(len(v) for v in free.values()),
            "labelled": sum(len(v) for v in done.values()), "csv": str(out), "sheet": str(sheet)}
