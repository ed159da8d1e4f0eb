"""A label-budget sweep with a pseudo-label arm (tiny heatmap nets on a fully annotated phantom): rows
per arm and budget, the pseudo-labelled data made from the teacher of the same budget, the arm that
has nothing to pseudo-label being its teacher, the curve figure, and a --set of the swept key that
runs one budget with the same run folders."""
import json

import numpy as np
import pytest
import yaml

from conftest import recompute_errors, tiny_config
from dentcae.data.phantom import write_phantom
from dentcae.tables.run import run_table

pytestmark = pytest.mark.slow


def _curve_table(tmp):
    root = write_phantom(tmp / "all_annotated", images=12, annotated=12, seed=3)
    common = {"prepare": {"input_size": 96, "resize": "pad"}, "solver": {"max_iter": 4, "batch_size": 4}}
    scratch = tiny_config(tmp, root, name="scratch", model={"head": "heatmap", "head_width": 16}, **common)
    pseudo = tiny_config(tmp, root, name="pseudo", model={"head": "heatmap", "head_width": 16,
                                                          "partial_labels": True}, **common)
    pre = tiny_config(tmp, root, stage="pretrain", name="cae", solver={"max_iter": 2})
    cae = tiny_config(tmp, root, name="cae_arm", model={"head": "heatmap", "head_width": 16, "init": "cae",
                                                                  "copy_layers": ["conv1", "conv2"]}, **common)
    table = {"name": "curve", "title": "tiny curve", "results_dir": str(tmp / "results"),
             "sweep": {"key": "dataset.label_budget", "values": [3, None]}, "pretrainings": {"cae": str(pre)},
             "arms": [{"key": "scratch", "label": "scratch", "config": str(scratch)},
                      {"key": "cae", "label": "CAE", "config": str(cae)},
                      {"key": "pseudo", "label": "pseudo-labels", "config": str(pseudo),
                       "pseudo_labels_from": "scratch"},
                      {"key": "pseudo2", "label": "pseudo-labels, round 2", "config": str(pseudo),
                       "pseudo_labels_from": "pseudo"}],
             "comparisons": [["scratch", "pseudo"]]}
    path = tmp / "curve.yaml"
    path.write_text(yaml.safe_dump(table, sort_keys=False))
    return path


def test_label_curve_rows_pseudo_arms_and_one_budget(clean_tmp, quiet):
    path = _curve_table(clean_tmp)
    logs = []
    result = run_table(path, log=logs.append)
    runs, results = clean_tmp / "runs" / "curve", clean_tmp / "results"
    rows = {(r["arm"], r["label_budget"]): r for r in json.loads((results / "curve.json").read_text())["rows"]}
    n_train = rows["scratch", max(b for _, b in rows)]["label_budget"]
    assert set(rows) == {(a, b) for a in ("scratch", "cae", "pseudo", "pseudo2") for b in (3, n_train)} and n_train > 3
    for (arm, budget), row in rows.items():
        assert row["run_key"] == f"{arm}_{3 if budget == 3 else 'all'}"
        assert row["baseline_mean_shape_mre_mm"] > 0 and row["sweep"] == {"dataset.label_budget": 3 if budget == 3 else None}
    # the pseudo arm at 3 labels trained on its teacher's pseudo-labels of the other training images
    report = json.loads((runs / "pseudo_3_r0_data" / "pseudo.json").read_text())
    assert report["source_run"] == str((runs / "scratch_3_r0").resolve())
    assert report["images"]["labelled"] == 3 and report["images"]["candidate"] == n_train - 3
    student = yaml.safe_load((runs / "pseudo_3_r0" / "config.yaml").read_text())
    assert student["dataset"]["root"] == str(runs / "pseudo_3_r0_data") and student["model"]["partial_labels"]
    e = recompute_errors(runs / "pseudo_3_r0" / "predictions.csv")
    np.testing.assert_allclose(rows["pseudo", 3]["ours_mre_mm"], e.mean(), atol=1e-3)
    assert result["pseudo_labels"]["pseudo_3"][0]["candidate_images"] == n_train - 3
    # a second round: the student of round 1 labels the same images anew; accuracy against the real labels
    second = json.loads((runs / "pseudo2_3_r0_data" / "pseudo.json").read_text())
    assert second["round"] == 2 and second["source_run"] == str((runs / "pseudo_3_r0").resolve())
    assert second["candidates"] == report["candidates"] and second["truth_dataset"] == report["source_dataset"]
    assert second["images"]["labelled"] == 3 and second["accuracy_on_withheld_labels"]["images"] == n_train - 3
    # with every label there is nothing to pseudo-label: the arm is its teacher, and the table says so
    assert not (runs / "pseudo_all_r0").exists()
    assert rows["pseudo", n_train]["ours_mre_mm"] == rows["scratch", n_train]["ours_mre_mm"]
    assert "pseudo_all: no training image was left unlabelled" in (results / "curve.md").read_text()
    assert (results / "curve.png").stat().st_size > 0
    # one budget from the command line: the same run folders (the pre-training's too: it serves every
    # budget) and pseudo-labels, reused; its own results
    logs.clear()
    one = run_table(path, overrides=["dataset.label_budget=3"], log=logs.append)
    assert [r["run_key"] for r in one["rows"]] == ["scratch_3", "cae_3", "pseudo_3", "pseudo2_3"]
    assert any("reusing the pseudo-labels" in line for line in logs)
    reused = sorted(line.rsplit("/", 1)[-1] for line in logs if "reusing finished run" in line)
    assert reused == ["cae_3_r0", "cae_r0", "pseudo2_3_r0", "pseudo_3_r0", "scratch_3_r0"]
    assert (results / "curve_label_budget-3.json").exists() and (results / "curve.json").exists()
