"""Pseudo-labels: trained detectors (one, or an ensemble with views) label the unlabelled training
images of a new dataset, never a test image, the filters keep what their rules say, and the detector
trains on it with the missing landmarks masked in both nets."""
import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_cli, tiny
from dentcae.data.dataset import load_dataset
from dentcae.data.prepare import prepare
from dentcae.unlabelled import pseudo_label as pseudo, teachers
from dentcae.evaluation.evaluate import evaluate_checkpoint
from dentcae.train.loop import train
from dentcae.train.runfiles import run_dir

pytestmark = pytest.mark.slow


def _heatmap(tmp, root, name, **over):
    return tiny(tmp, root, name=name, prepare={"input_size": 96, "resize": "pad"},
                model={"head": "heatmap", "head_width": 16, **over.pop("model", {})},
                solver={"max_iter": 4, "batch_size": 4}, **over)


def test_pseudo_labels_never_touch_a_test_image_and_train_masked(phantom, clean_tmp, monkeypatch, quiet):
    cfg = _heatmap(clean_tmp, phantom, "teacher", dataset={"label_budget": 3})
    train(cfg, log=quiet)
    prep = prepare(cfg)
    test_images = {s["image"] for s in prep.samples() if int(s["reg_test"])}
    labelled = {s["image"] for s in prep.samples() if int(s["reg_train"])}
    assert test_images and len(labelled) == 3
    seen = []
    real_read = teachers.read_image
    monkeypatch.setattr(teachers, "read_image", lambda path: seen.append(Path(path).name) or real_read(path))
    report = pseudo.pseudo_label(run_dir(cfg), clean_tmp / "pseudo", {"min_confidence": 0.0}, progress=False)
    assert seen and not set(seen) & test_images and not set(seen) & labelled     # only the other training images
    assert report["images"] == {"labelled": 3, "candidate": len(seen), "test": len(test_images)}
    acc = report["accuracy_on_withheld_labels"]
    assert acc["images"] > 0 and acc["kept_landmarks"] == 8 * acc["images"] and acc["kept_mre_mm"] > 0

    old, new = load_dataset(phantom), load_dataset(clean_tmp / "pseudo")
    old_recs, new_recs = {r.name: r for r in old.images}, {r.name: r for r in new.images}
    for name in test_images | labelled:                    # real labels, untouched, pinned where they were
        np.testing.assert_allclose(new_recs[name].landmarks, old_recs[name].landmarks, atol=1e-3)
        assert new_recs[name].split == ("train" if name in labelled else "test")
    assert all(new_recs[n].split == "train" and np.isfinite(new_recs[n].landmarks).all() for n in seen)

    student = _heatmap(clean_tmp, clean_tmp / "pseudo", "student", model={"partial_labels": True},
                       dataset={"synth": None})
    train(student, log=quiet)
    sprep = prepare(student)
    assert {s["image"] for s in sprep.samples() if int(s["reg_test"])} == test_images
    assert sprep.meta["labelled_train_images"] == 3 + len(seen)
    assert np.isfinite(evaluate_checkpoint(None, run_dir(student))["mre_mm"])


def test_unconfident_landmarks_stay_empty_and_are_masked(phantom, clean_tmp, quiet):
    cfg = _heatmap(clean_tmp, phantom, "teacher", dataset={"label_budget": 3})
    train(cfg, log=quiet)
    from dentcae.deploy.bundle import open_model
    from dentcae.inference.detector import Detector
    detector = Detector(open_model(run_dir(cfg)))
    median = float(np.median(detector(teachers.read_image(sorted(Path(phantom).glob("*.png"))[-1])).confidence))
    report = pseudo.pseudo_label(run_dir(cfg), clean_tmp / "pseudo", {"min_confidence": median}, progress=False)
    kept = sum(report["kept_per_landmark"].values())
    assert 0 < kept < 8 * report["images"]["candidate"]             # some landmarks kept, some left empty
    with open(clean_tmp / "pseudo" / "landmarks.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert any(r["x1"] == "" for r in rows if r["split"] == "train")
    student = _heatmap(clean_tmp, clean_tmp / "pseudo", "student", model={"partial_labels": True},
                       dataset={"synth": None})
    sprep = prepare(student)
    with h5py.File(sprep.h5("reg_train"), "r") as f:
        mask, label, hm = f["heatmap_mask"][...], f["label"][...].reshape(len(f["label"]), -1, 2), f["heatmap"][...]
    assert np.array_equal(mask.astype(bool), np.isfinite(label).all(-1))
    assert np.all(hm[mask == 0] == 0) and (mask == 0).any()
    assert json.loads((clean_tmp / "pseudo" / "pseudo.json").read_text())["threshold"] == median


def test_pseudo_label_cli_refuses_an_existing_folder(phantom, clean_tmp, quiet):
    cfg = _heatmap(clean_tmp, phantom, "teacher")
    train(cfg, log=quiet)
    (clean_tmp / "taken").mkdir()
    rc, out = run_cli("pseudo-label", str(run_dir(cfg)), "--out", str(clean_tmp / "taken"))
    assert rc == 1 and "exists" in out
    before = sorted(p.name for p in Path(phantom).iterdir())
    for inside in (Path(phantom) / "pseudo", run_dir(cfg) / "pseudo"):     # never into what it reads
        rc, out = run_cli("pseudo-label", str(run_dir(cfg)), "--out", str(inside))
        assert rc == 1 and "lies inside" in out and not inside.exists()
    assert sorted(p.name for p in Path(phantom).iterdir()) == before
    for bad in ("nan", "inf", "-0.1"):
        rc, out = run_cli("pseudo-label", str(run_dir(cfg)), "--out", str(clean_tmp / "p2"), "--min-confidence", bad)
        assert rc == 1 and "min_confidence" in out and not (clean_tmp / "p2").exists()
