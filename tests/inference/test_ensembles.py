"""One inference path: test-time views and ensembles give the same landmarks in evaluate and predict,
an ensemble of one run is that run, bundles refuse members of other landmarks, spread is measured.

Three tiny heatmap runs with refine nets on the SYNTHETIC phantom: `a` configured with test-time views
for both nets, `b` another seed without views, `c` trained on fewer landmarks.
"""
import csv
import json
import shutil

import numpy as np
import pytest

from conftest import predicted_rows, evaluated_points, run_cli, images_of_test_split, tiny
from dentcae.data.dataset import read_image
from dentcae.deploy.bundle import BundleError, export_bundle
from dentcae.deploy.predict import FIELDS
from dentcae.evaluation.evaluate import evaluate_checkpoint
from dentcae.inference.detector import Detector
from dentcae.inference.model import Model
from dentcae.inference.runs import run_model
from dentcae.train.loop import train
from dentcae.train.runfiles import run_dir

pytestmark = pytest.mark.slow
VIEWS = [{"shift": [4, -4]}, {"rotate": 4.0, "scale": 1.06}]
REFINE_VIEWS = [{"scale": 1.08}, {"shift": [-4, 4]}]


def _run(tmp, phantom, name, seed=0, **over):
    model = {"head": "heatmap", "head_width": 16, "refine": {"patch": 80, "fine_size": 192, "draws": 2,
                                                             "max_iter": 6, "batch_size": 8}}
    model["refine"].update(over.pop("refine", {}))
    cfg = tiny(tmp, phantom, name=name, seed=seed, prepare={"input_size": 96, "resize": "pad"}, model=model,
               solver={"max_iter": 4, "batch_size": 4, "random_seed": seed}, **over)
    train(cfg, log=lambda *a, **k: None)
    return cfg, run_dir(cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, phantom):
    tmp = tmp_path_factory.mktemp("ensembles")
    a = _run(tmp, phantom, "a", test_time={"views": VIEWS}, refine={"views": REFINE_VIEWS})
    b = _run(tmp, phantom, "b", seed=1)
    c = _run(tmp, phantom, "c", dataset={"landmarks": ["gonion_left", "mental_left"]})
    yield tmp, a, b, c
    shutil.rmtree(tmp, ignore_errors=True)


def test_an_ensemble_of_one_run_is_that_run_and_of_a_run_twice_too(runs):
    tmp, (cfg, run), _, _ = runs
    single, _ = run_model([run], calibrate=False)
    twice = Model(run, single.info, single.members * 2)
    grey = read_image(images_of_test_split(cfg)[0])
    one, two = Detector(single)(grey), Detector(twice)(grey)
    np.testing.assert_array_equal(one.points, two.points)
    np.testing.assert_array_equal(one.confidence, two.confidence)
    assert np.isfinite(one.spread).all() and (one.spread > 0).any()      # its views disagree a little
    np.testing.assert_allclose(two.spread, one.spread, rtol=1e-12)       # the same views again: same spread
    alone = evaluate_checkpoint(None, run, out=tmp / "alone")
    bundled = export_bundle([run], tmp / "bundle_a")
    rc, out = run_cli("predict", str(bundled.path), *map(str, images_of_test_split(cfg)), "--out", str(tmp / "p_a"))
    assert rc == 0, out
    got, want = predicted_rows(tmp / "p_a"), evaluated_points(cfg, alone["out"])
    assert max(np.abs(np.subtract((float(got[k]["x_px"]), float(got[k]["y_px"])), want[k])).max()
               for k in want) <= 0.001 + 1e-9


def test_evaluate_and_predict_agree_on_an_ensemble_with_views(runs):
    tmp, (cfg, a), (_, b), _ = runs
    summary = evaluate_checkpoint(None, [a, b], out=tmp / "ens_eval")
    assert summary["members"] == [str(a.resolve()), str(b.resolve())]
    assert summary["uncertainty"]["members"] == 2 and summary["uncertainty"]["calibration"]["spread_threshold"] > 0
    bundle = export_bundle([a, b], tmp / "bundle_ab")
    assert len(bundle.members) == 2 and (tmp / "bundle_ab" / "nets" / "m1_refine.caffemodel").exists()
    rc, out = run_cli("predict", str(bundle.path), *map(str, images_of_test_split(cfg)), "--out", str(tmp / "p_ab"))
    assert rc == 0, out
    got, want = predicted_rows(tmp / "p_ab"), evaluated_points(cfg, tmp / "ens_eval")
    assert len(got) == len(want) > 0
    assert max(np.abs(np.subtract((float(got[k]["x_px"]), float(got[k]["y_px"])), want[k])).max()
               for k in want) <= 0.001 + 1e-9
    assert all(float(r["spread_px"]) > 0 for r in got.values())        # two nets never agree exactly
    evaluate_checkpoint(None, tmp / "bundle_ab", out=tmp / "bundle_eval")      # the bundle scores as its runs did
    assert evaluated_points(cfg, tmp / "bundle_eval") == want
    rc, text = run_cli("evaluate", str(tmp / "bundle_ab"))
    assert rc != 0 and "give --out" in text and not (tmp / "bundle_ab" / "predictions.csv").exists()
    with open(tmp / "p_ab" / "predictions.csv") as fh:
        header = next(csv.reader(fh))
    assert header[:8] == ["image", "landmark", "x_px", "y_px", "x_mm", "y_mm", "confidence", "flag"]
    assert header == FIELDS and header[8] == "spread_mm"


def test_a_bundle_of_other_landmarks_is_refused_by_name(runs):
    tmp, (_, a), _, (_, c) = runs
    with pytest.raises(BundleError, match=r"runs/c differs from .*runs/a in landmarks"):
        export_bundle([a, c], tmp / "never")
    assert not (tmp / "never").exists()
    rc, out = run_cli("evaluate", str(a), str(c), "--out", str(tmp / "never_eval"))
    assert rc != 0 and "landmarks" in out


def test_evaluate_rescores_with_other_views_without_retraining(runs):
    tmp, _, (cfg, b), _ = runs
    weights = {p: p.stat().st_mtime_ns for p in b.rglob("*.caffemodel")}
    rc, out = run_cli("evaluate", str(b), "--set", "test_time.views=[{shift: [4, 0]}]",
                      "--set", "model.refine.views=[{rotate: 3}]", "--out", str(tmp / "b_views"))
    assert rc == 0, out
    summary = json.loads((tmp / "b_views" / "summary.json").read_text())
    assert summary["test_time"]["test_time"] == {"views": [{"shift": [4, 0]}]}
    assert summary["test_time"]["model.refine.views"] == [{"rotate": 3}]
    assert {p: p.stat().st_mtime_ns for p in b.rglob("*.caffemodel")} == weights     # nothing retrained
    plain = evaluate_checkpoint(None, b, out=tmp / "b_plain")
    assert summary["mre_mm"] != plain["mre_mm"]                          # the views changed the answer
    assert plain["uncertainty"]["calibration"]["spread_threshold"] is None     # one net, no views: no spread
