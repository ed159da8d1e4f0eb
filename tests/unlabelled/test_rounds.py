"""pseudo.json's `round` counts what the teachers learnt from (hand-made run configs, no Caffe): their
data, and the run their weights started from (model.init: run)."""
import json

import yaml

from dentcae.unlabelled.pseudo_label import _rounds_learnt


def _dataset(tmp, name, round_=None):
    root = tmp / name
    root.mkdir()
    if round_ is not None:
        (root / "pseudo.json").write_text(json.dumps({"round": round_}))
    return str(root)


def _run(tmp, name, cfg):
    run = tmp / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return str(run)


def test_a_teacher_counts_its_data_and_the_run_it_started_from(tmp_path):
    real, first = _dataset(tmp_path, "real"), _dataset(tmp_path, "first_round", 1)
    scratch = {"dataset": {"root": real}, "model": {"init": "random"}}
    student = {"dataset": {"root": first}, "model": {"init": "random"}}
    assert _rounds_learnt(scratch) == 0 and _rounds_learnt(student) == 1
    # the student fine-tuned on the real labels: real data, weights from round 1
    fine_tuned = {"dataset": {"root": real}, "model": {"init": "run", "init_run": _run(tmp_path, "student", student)}}
    assert _rounds_learnt(fine_tuned) == 1
    # init_run written but init not `run`: the weights did not start there
    assert _rounds_learnt({**fine_tuned, "model": {"init": "random", "init_run": fine_tuned["model"]["init_run"]}}) == 0
    # a chain two deep, and the later of data and start wins
    second = _dataset(tmp_path, "second_round", 2)
    chain = {"dataset": {"root": real}, "model": {"init": "run", "init_run": _run(tmp_path, "ft", fine_tuned)}}
    assert _rounds_learnt(chain) == 1
    assert _rounds_learnt({**fine_tuned, "dataset": {"root": second}}) == 2


def test_a_start_that_loops_or_is_gone_ends_the_count(tmp_path):
    real = _dataset(tmp_path, "real")
    loop = tmp_path / "loop"
    _run(tmp_path, "loop", {"dataset": {"root": real}, "model": {"init": "run", "init_run": str(loop)}})
    assert _rounds_learnt(yaml.safe_load((loop / "config.yaml").read_text())) == 0
    assert _rounds_learnt({"dataset": {"root": real}, "model": {"init": "run", "init_run": str(tmp_path / "gone")}}) == 0
