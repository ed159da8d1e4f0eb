"""A table end to end (tiny nets on the phantom), its validation, and the numbers it reports."""
import json

import numpy as np
import pytest
import yaml
from scipy.stats import wilcoxon

from conftest import baseline_mm, recompute_errors, tiny_config
from dentcae.config import ConfigError, load_config
from dentcae.evaluation.metrics import read_prediction_errors
from dentcae.tables.render import tabulate
from dentcae.tables.run import run_table
from dentcae.tables.spec import load_table


def _tiny_table(tmp, phantom, repeats=1):
    pre = tiny_config(tmp, phantom, stage="pretrain", name="cae")
    arms = {}
    for key, init in (("imagenet_fc6tuned", "imagenet"), ("cae_fc6frozen", "cae")):
        arms[key] = tiny_config(tmp, phantom, name=key, model={
            "init": init, "freeze": ["fc6"] if init == "cae" else [], "imagenet_weights": str(tmp / "absent.caffemodel")})
    table = {"name": "tiny", "title": "tiny table", "results_dir": str(tmp / "results"), "repeats": repeats,
             "pretrainings": {"cae": str(pre)}, "set": {"solver.max_iter": 3},
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
        e = recompute_errors(runs / f"{row['arm']}_r0" / "predictions.csv")
        np.testing.assert_allclose(row["ours_mean_mm"], e.mean(0), atol=1e-3)
        assert f"{e[:, 0].mean():.4f} ± {e[:, 0].std(ddof=1):.4f}" in md
    comp = data["comparisons"][0]
    ea, eb = (read_prediction_errors(runs / f"{k}_r0" / "predictions.csv")[0].mean(1)
              for k in ("imagenet_fc6tuned", "cae_fc6frozen"))
    assert comp["wilcoxon_p"] == pytest.approx(wilcoxon(ea, eb).pvalue)
    assert comp["n_pairs"] == data["rows"][0]["n_samples"] == len(ea)
    assert data["baseline_mean_shape_mre_mm"] == pytest.approx(
        baseline_mm(load_config(runs / "cae_fc6frozen_r0/config.yaml"), runs / "cae_fc6frozen_r0/predictions.csv"),
        abs=1e-3)
    assert "markdown_text" not in data and data["markdown"].endswith("tiny.md")
    for fig in ("learning_curves", "detections", "best_detections", "error_cdf", "cae_reconstructions", "cae_learning_curves"):
        assert (results / f"tiny_{fig}.png").exists(), fig
    assert (results / "tiny.csv").read_text().startswith("arm,source,l1_mean_mm")
    assert yaml.safe_load((runs / "imagenet_fc6tuned_r0/config.yaml").read_text())["model"]["init"] == "scratch"
    logs.clear()
    run_table(path, log=logs.append)     # finished runs with the same config are reused
    assert sum("reusing finished run" in m for m in logs) == 3
    # the same table with another schedule would retrain in place: refused before any work, unless --overwrite
    made = {p: p.stat().st_mtime_ns for p in runs.glob("*/final.caffemodel")}
    with pytest.raises(ConfigError, match=r"3 run folder\(s\) hold runs made with other settings: .*cae_r0 "
                                          r"\(solver.max_iter\).*--overwrite"):
        run_table(path, overrides=["solver.max_iter=4"], log=logs.append)
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/final.caffemodel")} == made
    run_table(path, overrides=["solver.max_iter=4"], overwrite=True, log=logs.append)
    assert load_config(runs / "cae_fc6frozen_r0/config.yaml")["solver"]["max_iter"] == 4
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
    res = tabulate(table, arms, {"a": a, "b": b}, ["l1", "l2", "l3", "l4"], [], True)
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
    same = tabulate(table, arms, errors, ["1", "2", "3", "4"], [], True, {"a": [[0, 1, 2, 3, 4]], "b": [[0, 1, 2, 3, 4]]})
    assert same["comparisons"][0]["n_pairs"] == 5
    with pytest.raises(ValueError, match="cannot compare arms 'a' and 'b': .*different samples"):
        tabulate(table, arms, errors, ["1", "2", "3", "4"], [], True, {"a": [[0, 1, 2, 3, 4]], "b": [[0, 1, 2, 3, 5]]})


@pytest.mark.slow
def test_a_table_scores_an_arms_repeats_as_an_ensemble(phantom, clean_tmp):
    """ensembles: true: the repeats' landmarks averaged (checked against the single runs' own
    predictions), a row beside the single nets' mean +- sd."""
    import csv
    arm = tiny_config(clean_tmp, phantom, name="reg")
    table = {"name": "ens", "results_dir": str(clean_tmp / "results"), "repeats": 2, "ensembles": True,
             "set": {"solver.max_iter": 3}, "arms": [{"key": "reg", "label": "regressor", "config": str(arm)}]}
    path = clean_tmp / "ens.yaml"
    path.write_text(yaml.safe_dump(table, sort_keys=False))
    result = run_table(path, log=lambda *a: None)
    runs = clean_tmp / "runs" / "ens"
    ensemble = result["ensembles"]["reg"]
    assert [p.rsplit("/", 1)[-1] for p in ensemble["members"]] == ["reg_r0", "reg_r1"]

    def points(folder):
        with open(folder / "predictions.csv") as fh:
            return {(r["sample"], r["landmark"]): np.array([float(r["pred_x"]), float(r["pred_y"])])
                    for r in csv.DictReader(fh)}
    r0, r1, both = points(runs / "reg_r0"), points(runs / "reg_r1"), points(runs / "reg_ensemble")
    assert max(np.abs(both[k] - (r0[k] + r1[k]) / 2).max() for k in both) <= 0.001
    assert np.any([np.abs(r0[k] - r1[k]).max() > 0.01 for k in r0])          # two seeds: two different nets
    md = (clean_tmp / "results" / "ens.md").read_text()
    single = result["rows"][0]["ours_mre_per_repeat"]
    assert f"{np.mean(single):.3f} ± {np.std(single, ddof=1):.3f} mm (2 nets) | {ensemble['mre_mm']:.3f} mm (2 nets)" in md
