"""Radial-error metrics, evaluation of a checkpoint, and figures that need no net."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, baseline_mm, recompute_errors, run_cli, tiny_config
from dentcae.config import load_config
from dentcae.data.geometry import to_normalised, to_pixels
from dentcae.evaluation.metrics import radial_errors_mm, summarize
from dentcae.train.loop import train
from dentcae.train.runfiles import run_dir


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


@pytest.mark.slow
def test_evaluate_writes_consistent_files(phantom, clean_tmp, quiet):
    path = tiny_config(clean_tmp, phantom)
    cfg = load_config(path)
    train(cfg, log=quiet)
    run = run_dir(cfg)
    code, out = run_cli("evaluate", str(run / "final.caffemodel"), "--config", str(path),
                        "--out", str(clean_tmp / "eval"))
    assert code == 0, out
    ev = clean_tmp / "eval"
    for name in ("predictions.csv", "summary.json", "results.md", "detections.png", "error_cdf.png"):
        assert (ev / name).exists(), name
    summary = json.loads((ev / "summary.json").read_text())
    e = recompute_errors(ev / "predictions.csv")
    assert e.shape == (summary["n_samples"], 4) and summary["synthetic"] is True
    for i, lm in enumerate(summary["landmarks"]):
        assert lm["mean_mm"] == pytest.approx(e[:, i].mean(), abs=1e-3)
        assert lm["std_mm"] == pytest.approx(e[:, i].std(ddof=1), abs=1e-3)
        assert f"{lm['mean_mm']:.4f} ± {lm['std_mm']:.4f}" in (ev / "results.md").read_text()
    assert summary["mre_mm"] == pytest.approx(e.mean(), abs=1e-3)
    assert summary["baseline_mean_shape_mre_mm"] == pytest.approx(baseline_mm(cfg, ev / "predictions.csv"), abs=1e-3)
    code, out = run_cli("evaluate", "--config", str(path))     # no checkpoint: the config's own run
    assert code == 0, out
    assert json.loads((run / "summary.json").read_text())["mre_mm"] == pytest.approx(summary["mre_mm"])


def test_figures_import_no_caffe_and_no_evaluation_code():
    """figures.py is a leaf every stage may use: it imports only the atomic writer, and draws in a
    process where `import caffe` fails (the package registers its plug-ins on import; none imports Caffe)."""
    import ast
    tree = ast.parse((ROOT / "src/dentcae/figures.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m and (m.startswith(".") or "dentcae" in m)} <= {"runtime.atomic"}, imported
    code = ("import sys; sys.modules['caffe'] = None\n"
            "import numpy as np, dentcae.figures as f\n"
            "f.plot_error_cdf({'a': np.array([1.0, 2.0, 3.0])}, " + repr(str(ROOT / 'build_fig_check.png')) + ")\n"
            "print([m for m in sys.modules if m.split('.')[0] == 'caffe' and sys.modules[m] is not None])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    (ROOT / "build_fig_check.png").unlink(missing_ok=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


@pytest.mark.slow
def test_evaluate_refuses_settings_that_change_the_trained_run_and_damaged_prototxts(phantom, clean_tmp, quiet):
    cfg = load_config(tiny_config(clean_tmp, phantom))
    train(cfg, log=quiet)
    run = run_dir(cfg)
    for setting, key in (("prepare.split_seed=5", "prepare.split_seed"), ("prepare.input_size=99", "prepare.input_size"),
                         ("dataset.label_budget=2", "dataset.label_budget")):
        code, out = run_cli("evaluate", str(run), "--set", setting, "--out", str(clean_tmp / "x"))
        assert code != 0 and key in out and "evaluate may change only test-time keys" in out, out
        assert "Traceback" not in out and not (clean_tmp / "x").exists()
    deploy = run / "deploy.prototxt"
    text = deploy.read_text()
    deploy.write_text(text[:len(text) // 2])                          # truncated mid-layer
    code, out = run_cli("evaluate", str(run), "--out", str(clean_tmp / "x"))
    assert code == 1 and "deploy.prototxt: not a readable net prototxt" in out and "Traceback" not in out, out
    cut = text.index("layer {", len(text) // 2)                       # truncated between two layers
    deploy.write_text(text[:cut])
    code, out = run_cli("evaluate", str(run), "--out", str(clean_tmp / "x"))
    assert code == 1 and "deploy.prototxt" in out and "Traceback" not in out, out
    deploy.write_text(text)
    assert run_cli("evaluate", str(run), "--out", str(clean_tmp / "x"))[0] == 0
