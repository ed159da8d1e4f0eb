"""A table's unlabelled-data arms (tiny heatmap nets on the phantom): an ensemble of every scratch
repeat pseudo-labels once for all the student's repeats, a `starts_from` arm fine-tunes from the
student of its own repeat, an `ensemble_of` control scores the scratch repeats together, and
`--arms` pulls in every arm those need."""
import json

import pytest
import yaml

from conftest import tiny_config
from dentcae.tables.run import run_table
from dentcae.tables.spec import load_table

pytestmark = pytest.mark.slow


def _table(tmp, root):
    common = {"prepare": {"input_size": 96, "resize": "pad"}, "solver": {"max_iter": 4, "batch_size": 4},
              "dataset": {"label_budget": 4}}
    scratch = tiny_config(tmp, root, name="scratch", model={"head": "heatmap", "head_width": 16}, **common)
    student = tiny_config(tmp, root, name="student", model={"head": "heatmap", "head_width": 16, "partial_labels": True},
                          pseudo_labels={"filters": ["spread"], "spread_keep": 0.6}, **common)
    tuned = tiny_config(tmp, root, name="tuned", model={"head": "heatmap", "head_width": 16, "init": "run",
                                                        "copied_lr_mult": 0.5}, **common)
    table = {"name": "unl", "title": "tiny", "results_dir": str(tmp / "results"), "repeats": 2,
             "arms": [{"key": "scratch", "label": "scratch", "config": str(scratch)},
                      {"key": "pseudo_mixed", "label": "pseudo", "config": str(student),
                       "pseudo_labels_from": "scratch", "teachers": "ensemble"},
                      {"key": "unlabelled", "label": "tuned", "config": str(tuned), "starts_from": "pseudo_mixed"},
                      {"key": "scratch_ensemble", "label": "control", "ensemble_of": "scratch",
                       "set": {"test_time.views": [{"shift": [2, 0]}]}}],
             "comparisons": [["scratch", "unlabelled"]]}
    path = tmp / "unl.yaml"
    path.write_text(yaml.safe_dump(table, sort_keys=False))
    return path


def test_ensemble_teachers_run_starts_and_the_control(phantom, clean_tmp, quiet):
    path = _table(clean_tmp, phantom)
    assert [a["key"] for a in load_table(path, only=["unlabelled"])["arms"]] == ["scratch", "pseudo_mixed", "unlabelled"]
    result = run_table(path, log=quiet)
    runs = clean_tmp / "runs" / "unl"
    report = json.loads((runs / "pseudo_mixed_data" / "pseudo.json").read_text())
    assert report["source_runs"] == [str((runs / f"scratch_r{r}").resolve()) for r in (0, 1)]
    assert not (runs / "pseudo_mixed_r0_data").exists()            # one ensemble, one folder
    for r in (0, 1):
        student = yaml.safe_load((runs / f"pseudo_mixed_r{r}" / "config.yaml").read_text())
        assert student["dataset"]["root"] == str(runs / "pseudo_mixed_data") and student["seed"] == r
        tuned = yaml.safe_load((runs / f"unlabelled_r{r}" / "config.yaml").read_text())
        assert tuned["model"]["init_run"] == str(runs / f"pseudo_mixed_r{r}")
        assert tuned["dataset"]["root"] == str(phantom) and tuned["dataset"]["label_budget"] == 4
        transfer = json.loads((runs / f"unlabelled_r{r}" / "transfer.json").read_text())
        assert transfer["source"] == str(runs / f"pseudo_mixed_r{r}" / "final.caffemodel") and transfer["fresh"] == []
    rows = {row["arm"]: row for row in result["rows"]}
    assert set(rows) == {"scratch", "pseudo_mixed", "unlabelled", "scratch_ensemble"}
    assert len(rows["scratch"]["ours_mre_per_repeat"]) == 2 and len(rows["scratch_ensemble"]["ours_mre_per_repeat"]) == 1
    control = json.loads((runs / "scratch_ensemble_r0" / "summary.json").read_text())
    assert len(control["members"]) == 2 and control["test_time"]["test_time"]["views"] == [{"shift": [2, 0]}]
    assert len(result["pseudo_labels"]["pseudo_mixed"]) == 1 and result["pseudo_labels"]["pseudo_mixed"][0]["teachers"] == 2
    assert "best half by each criterion" in (clean_tmp / "results" / "unl.md").read_text()
