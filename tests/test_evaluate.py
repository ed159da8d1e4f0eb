"""Issue 6: radial-error metrics, evaluation of a checkpoint, the paper's tables and figures."""
import csv
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml
from scipy.stats import wilcoxon

from conftest import ROOT, run_cli, tiny_config
from dentcae.config import ConfigError, load_config
from dentcae.metrics import radial_errors_mm, read_prediction_errors, summarize
from dentcae.prepare import prepare, sample_box, to_normalised, to_pixels
from dentcae.report import _tabulate, load_table, run_table
from dentcae.train import run_dir, train


def test_radial_errors_on_known_distances():
    gt = np.zeros((2, 2, 2))
    pred = np.array([[[3, 4], [0, 0]], [[6, 8], [1, 0]]], float)   # 5 px, 0 px, 10 px, 1 px
    e = radial_errors_mm(pred, gt, [0.1, 0.5])
    np.testing.assert_allclose(e, [[0.5, 0.0], [5.0, 0.5]])
    s = summarize(e, ["a", "b"])
    assert s["landmarks"][0]["mean_mm"] == pytest.approx(2.75)
    assert s["landmarks"][0]["std_mm"] == pytest.approx(np.std([0.5, 5.0], ddof=1))
    assert s["mre_mm"] == pytest.approx(1.5)
    assert s["sdr"] == {"2mm": 0.75, "2.5mm": 0.75, "3mm": 0.75, "4mm": 0.75}


def test_mirrored_prediction_maps_back_before_measuring():
    # Right half of a 400-px wide image (x0 = 200, w = 200), mirrored. The truth is at x = 350.
    # A prediction 10 px to the right *in the mirrored crop* is 10 px to the left in the image.
    truth = np.array([[350.0, 100.0]])
    label = to_normalised(truth, 200, 0, 200, 300, flipped=True)
    moved = label + [[10 / 200, 0]]
    back = to_pixels(moved, 200, 0, 200, 300, flipped=True)
    np.testing.assert_allclose(back, [[340.0, 100.0]])
    assert radial_errors_mm(back[None], truth[None], [0.25])[0, 0] == pytest.approx(2.5)


def _recompute(pred_csv):
    with open(pred_csv) as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:   # error columns agree with the coordinates
        px = np.hypot(float(r["pred_x"]) - float(r["gt_x"]), float(r["pred_y"]) - float(r["gt_y"]))
        assert float(r["error_px"]) == pytest.approx(px, abs=2e-3)
    return read_prediction_errors(pred_csv)[0]


def _baseline_mm(cfg, pred_csv):
    """The mean-shape baseline recomputed by hand: mean training label, mapped into each test sample."""
    prep = prepare(cfg)
    with h5py.File(prep.h5("reg_train"), "r") as f:
        mean = f["label"][...].mean(0).reshape(-1, 2)
    samples = {s["index"]: s for s in prep.samples()}
    errs = []
    for r in csv.DictReader(open(pred_csv)):
        s = samples[r["sample"]]
        x, y = to_pixels(mean, *sample_box(s))[int(r["landmark"]) - 1]
        errs.append(np.hypot(x - float(r["gt_x"]), y - float(r["gt_y"])) * float(s["spacing_mm"]))
    return float(np.mean(errs))


@pytest.mark.slow
def test_evaluate_writes_consistent_files(phantom, clean_tmp):
    path = tiny_config(clean_tmp, phantom)
    cfg = load_config(path)
    train(cfg, log=lambda m: None)
    run = run_dir(cfg)
    code, out = run_cli("evaluate", str(run / "final.caffemodel"), "--config", str(path),
                        "--out", str(clean_tmp / "eval"))
    assert code == 0, out
    ev = clean_tmp / "eval"
    for name in ("predictions.csv", "summary.json", "results.md", "detections.png", "error_cdf.png"):
        assert (ev / name).exists(), name
    summary = json.loads((ev / "summary.json").read_text())
    e = _recompute(ev / "predictions.csv")
    assert e.shape == (summary["n_samples"], 4) and summary["synthetic"] is True
    for i, lm in enumerate(summary["landmarks"]):
        assert lm["mean_mm"] == pytest.approx(e[:, i].mean(), abs=1e-3)
        assert lm["std_mm"] == pytest.approx(e[:, i].std(ddof=1), abs=1e-3)
        assert f"{lm['mean_mm']:.4f} ± {lm['std_mm']:.4f}" in (ev / "results.md").read_text()
    assert summary["mre_mm"] == pytest.approx(e.mean(), abs=1e-3)
    assert summary["baseline_mean_shape_mre_mm"] == pytest.approx(_baseline_mm(cfg, ev / "predictions.csv"), abs=1e-3)
    code, out = run_cli("evaluate", "--config", str(path))     # no checkpoint: the config's own run
    assert code == 0, out
    assert json.loads((run / "summary.json").read_text())["mre_mm"] == pytest.approx(summary["mre_mm"])


def _tiny_table(tmp, phantom, repeats=1):
    pre = tiny_config(tmp, phantom, stage="pretrain", name="cae")
    arms = {}
    for key, init in (("imagenet_fc6tuned", "imagenet"), ("cae_fc6frozen", "cae")):
        arms[key] = tiny_config(tmp, phantom, name=key, model={
            "init": init, "freeze": ["fc6"] if init == "cae" else [], "imagenet_weights": str(tmp / "absent.caffemodel")})
    table = {"name": "tiny", "title": "tiny table", "results_dir": str(tmp / "results"), "repeats": repeats,
             "pretrain": str(pre), "set": {"solver.max_iter": 3},
             "arms": [{"key": k, "label": k.replace("_", " "), "config": str(path),
                       "paper": {"mean": [6.6, 8.0, 7.6, 6.9], "std": [2.9, 5.4, 4.6, 3.5]}} for k, path in arms.items()],
             "comparisons": [["imagenet_fc6tuned", "cae_fc6frozen"]]}
    path = tmp / "table.yaml"
    path.write_text(yaml.safe_dump(table, sort_keys=False))
    return path


@pytest.mark.slow
def test_table_runs_arms_and_matches_predictions(phantom, clean_tmp):
    path = _tiny_table(clean_tmp, phantom)
    logs = []
    result = run_table(path, log=logs.append)
    results = clean_tmp / "results"
    md = (results / "tiny.md").read_text()
    assert "SYNTHETIC" in md and "Replaced: imagenet_fc6tuned: ImageNet weights" in md
    assert "| imagenet fc6tuned | paper | 6.6000 ± 2.9000" in md
    assert "cae fc6frozen vs imagenet fc6tuned" in md
    data = json.loads((results / "tiny.json").read_text())
    runs = clean_tmp / "runs" / "tiny"
    for row in data["rows"]:
        e = _recompute(runs / f"{row['arm']}_r0" / "predictions.csv")
        np.testing.assert_allclose(row["ours_mean_mm"], e.mean(0), atol=1e-3)
        assert f"{e[:, 0].mean():.4f} ± {e[:, 0].std(ddof=1):.4f}" in md
    comp = data["comparisons"][0]
    ea, eb = (read_prediction_errors(runs / f"{k}_r0" / "predictions.csv")[0].mean(1)
              for k in ("imagenet_fc6tuned", "cae_fc6frozen"))
    assert comp["wilcoxon_p"] == pytest.approx(wilcoxon(ea, eb).pvalue)
    assert comp["n_pairs"] == data["rows"][0]["n_samples"] == len(ea)
    assert data["baseline_mean_shape_mre_mm"] == pytest.approx(
        _baseline_mm(load_config(runs / "cae_fc6frozen_r0/config.yaml"), runs / "cae_fc6frozen_r0/predictions.csv"),
        abs=1e-3)
    assert "markdown_text" not in data and data["markdown"].endswith("tiny.md")
    for fig in ("learning_curves", "detections", "best_detections", "error_cdf", "cae_reconstructions", "cae_learning_curves"):
        assert (results / f"tiny_{fig}.png").exists(), fig
    assert (results / "tiny.csv").read_text().startswith("arm,source,l1_mean_mm")
    assert yaml.safe_load((runs / "imagenet_fc6tuned_r0/config.yaml").read_text())["model"]["init"] == "scratch"
    logs.clear()
    run_table(path, log=logs.append)     # finished runs with the same config are reused
    assert sum("reusing finished run" in m for m in logs) == 3
    assert result["markdown"].endswith("tiny.md")


def test_table_config_is_validated(tmp_path):
    bad = tmp_path / "t.yaml"
    for text, message in (("", "the table config file is empty"), ("name: [unclosed", "not valid YAML"),
                          ("- a\n- b\n", "must be a mapping"), ("name: t\n", "needs 'arms'")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_table(bad)
    bad.write_text(yaml.safe_dump({"name": "t", "arms": [{"key": "a", "config": "x.yaml", "papr": {}}]}))
    with pytest.raises(ConfigError, match=r"arms\[0\]: unknown key 'papr'"):
        load_table(bad)
    bad.write_text(yaml.safe_dump({"name": "t", "arms": [{"key": "a", "config": "x.yaml"}], "comparisons": [["a", "b"]]}))
    with pytest.raises(ConfigError, match=r"comparison \[a, b\] names an arm"):
        load_table(bad)


def test_repeats_report_spread_across_repeats_and_a_paired_test():
    rng = np.random.default_rng(0)
    a = [rng.uniform(2, 6, (10, 4)) for _ in range(3)]            # 3 repeats x 10 samples x 4 landmarks
    b = [x - 1.0 + rng.normal(0, 0.1, x.shape) for x in a]        # arm b: about 1 mm better, paired
    table = {"name": "t", "repeats": 3, "repeat_over": "seed",
             "comparisons": [["a", "b"]]}
    arms = {"a": {"key": "a", "label": "A"}, "b": {"key": "b", "label": "B"}}
    res = _tabulate(table, arms, {"a": a, "b": b}, ["l1", "l2", "l3", "l4"], [], True)
    row_a = res["rows"][0]
    per_rep = [x.mean() for x in a]
    assert row_a["ours_mre_per_repeat"] == pytest.approx(per_rep)
    assert f"{np.concatenate(a).mean():.4f} ± {np.std(per_rep, ddof=1):.4f} (over repeats)" in res["markdown_text"]
    comp = res["comparisons"][0]
    assert comp["n_pairs"] == 30
    expected = wilcoxon(np.concatenate(a).mean(1), np.concatenate(b).mean(1)).pvalue
    assert comp["wilcoxon_p"] == pytest.approx(expected) and comp["wilcoxon_p"] < 1e-3
    assert comp["ours_relative_change"] == pytest.approx((np.concatenate(b).mean() - np.concatenate(a).mean())
                                                         / np.concatenate(a).mean())


def test_comparing_arms_evaluated_on_different_samples_is_refused():
    rng = np.random.default_rng(1)
    errors = {"a": [rng.uniform(2, 6, (5, 4))], "b": [rng.uniform(2, 6, (5, 4))]}
    table = {"name": "t", "repeats": 1, "repeat_over": "seed", "comparisons": [["a", "b"]]}
    arms = {"a": {"key": "a", "label": "A"}, "b": {"key": "b", "label": "B"}}
    same = _tabulate(table, arms, errors, ["1", "2", "3", "4"], [], True, {"a": [[0, 1, 2, 3, 4]], "b": [[0, 1, 2, 3, 4]]})
    assert same["comparisons"][0]["n_pairs"] == 5
    with pytest.raises(ValueError, match="cannot compare arms 'a' and 'b': .*different samples"):
        _tabulate(table, arms, errors, ["1", "2", "3", "4"], [], True, {"a": [[0, 1, 2, 3, 4]], "b": [[0, 1, 2, 3, 5]]})


def test_figures_import_no_caffe_and_no_evaluation_code():
    code = ("import sys, dentcae.figures; bad = [m for m in sys.modules if m.split('.')[0] == 'caffe' or "
            "m in ('dentcae.evaluate', 'dentcae.infer', 'dentcae.backend', 'dentcae.metrics', 'h5py')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
