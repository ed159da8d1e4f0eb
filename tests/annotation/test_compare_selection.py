"""scripts/compare_label_selection.py: the rule against the mean of the random draws, from run folders
as the label_selection table writes them (predictions.csv, summary.json)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT


def _run(folder, errors, mean_shape=10.0):
    """A finished run's predictions.csv and summary.json with these (N, K) errors in mm."""
    folder.mkdir(parents=True)
    lines = ["sample,landmark,error_mm"] + [f"{i},{k + 1},{e:.6f}" for i, row in enumerate(errors) for k, e in enumerate(row)]
    (folder / "predictions.csv").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps({"mre_mm": float(errors.mean()), "sdr": {"2mm": float((errors <= 2).mean())},
                                                     "baseline_mean_shape_mre_mm": mean_shape}))


def test_the_rule_is_compared_with_the_mean_of_the_draws_over_common_seeds(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(2, 6, (30, 4))
    for seed in (0, 1):
        for d, scale in (("random0", 1.0), ("random1", 1.1), ("random2", 0.9)):
            _run(tmp_path / f"{d}_10_r{seed}", base * scale * (1 + 0.01 * seed))
        _run(tmp_path / f"kmedoids_10_r{seed}", base * 0.9 * (1 + 0.01 * seed))
    _run(tmp_path / "kmedoids_10_r2", base)                 # a seed the draws lack: left out
    _run(tmp_path / "kmedoids_25_r0", base)                 # a budget the draws lack: left out
    out = tmp_path / "c.json"
    text = subprocess.run([sys.executable, str(ROOT / "scripts/compare_label_selection.py"), "--runs", str(tmp_path),
                           "--json", str(out)], capture_output=True, text=True, check=True).stdout
    (c,) = json.loads(out.read_text())
    assert c["budget"] == 10 and c["seeds"] == [0, 1]
    assert c["relative_change"] == pytest.approx(-0.1)       # 0.9 against the draws' mean 1.0
    assert c["against_each_draw"]["random1"]["relative_change"] == pytest.approx(0.9 / 1.1 - 1)
    assert c["wilcoxon_p"] < 1e-5 and "-10.0 %" in text


def test_no_finished_comparison_says_so(tmp_path):
    _run(tmp_path / "kmedoids_10_r0", np.ones((3, 2)))
    res = subprocess.run([sys.executable, str(ROOT / "scripts/compare_label_selection.py"), "--runs", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "no budget has finished runs of kmedoids and every draw" in res.stderr
