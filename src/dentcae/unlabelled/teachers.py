"""Teachers: one finetune run, or several as an ensemble, seen through test-time views, label images.

    model, prep = teacher_model(["runs/t/scratch_r0", "runs/t/scratch_r1"], views=[{"rotate": 3}])
    guesses = label_images(model, records, progress=False)    # {image: Guess}

An ensemble's runs must have been trained on the same data (the same labelled, unlabelled and test
images): a pseudo-label is only new where no teacher saw a label. `views` and `refine_views` replace
the runs' own `test_time.views` and `model.refine.views` (inference/detector.py runs them). Each
Guess keeps the landmarks (image pixels), their confidence and their spread, the root-mean-square
distance of every teacher's and view's estimate from the mean, in mm.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import load_config, with_overrides
from ..data.dataset import read_image
from ..data.prepare import prepare
from ..data.splits import prepared_roles
from ..inference.detector import Detector
from ..inference.model import ModelError
from ..inference.runs import run_model


@dataclass
class Guess:
    """What the teachers say about one image."""
    points: np.ndarray          # (L, 2) image pixels
    confidence: np.ndarray      # (L,) in [0, 1], NaN where the head gives none
    spread_mm: np.ndarray       # (L,) NaN with a single estimate (one net, no views)
    shape: tuple                # the image's (height, width)


def _sides(prep):
    """(labelled training images, test images) of a run's prepared data."""
    roles = prepared_roles(prep)
    return ({n for n, r in roles.items() if r == "labelled"}, {n for n, r in roles.items() if r == "test"})


def _teacher_cfg(run, views, refine_views):
    cfg = load_config(Path(run) / "config.yaml")
    over = {}
    if views is not None:
        over["test_time"] = {"views": list(views)}
    if refine_views is not None and "refine" in cfg["model"]:
        over["model"] = {"refine": {"views": list(refine_views)}}
    return with_overrides(cfg, over) if over else cfg


def teacher_model(runs, views=None, refine_views=None, calibrate=False, progress=False, gpu=None):
    """(Model of the runs, the first run's Prepared data); every run trained on the same data."""
    runs = [Path(r) for r in runs]
    cfgs = [_teacher_cfg(r, views, refine_views) for r in runs]
    try:
        model, prep = run_model(runs, cfgs, calibrate=calibrate, progress=progress, gpu=gpu)
    except ModelError as e:
        raise ValueError(str(e)) from None
    first = _sides(prep)
    for run, cfg in zip(runs[1:], cfgs[1:]):
        if _sides(prepare(cfg)) != first:
            raise ValueError(f"{run} was trained on other labelled or test images than {runs[0]}: an ensemble's "
                             "teachers must share their data (the repeats of one arm)")
    return model, prep


def label_images(model, records, progress=True, gpu=None):
    """{image: Guess} of dataset records (data/dataset.py), each read and run through the model."""
    detector, out = Detector(model, gpu=gpu), {}
    for rec in tqdm(records, desc="teachers", unit="image", disable=not progress):
        grey = read_image(rec.path)
        found = detector(grey)
        out[rec.name] = Guess(found.points, found.confidence, found.spread * rec.spacing_mm, grey.shape[:2])
    return out
