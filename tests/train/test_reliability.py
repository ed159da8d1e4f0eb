"""Nothing outside the run folder is touched, wrong models are refused, locks,
and inputs Caffe would abort on are refused with a clear error first."""
import json
import re
import shutil

import pytest
import yaml

from conftest import run_cli, tiny, tiny_config
from dentcae.runtime.atomic import write_csv_atomic
from dentcae.config import ConfigError, load_config
from dentcae.data.dataset import load_dataset
from dentcae.evaluation.evaluate import EvaluationError, evaluate_checkpoint
from dentcae.inference.runs import check_nets
from dentcae.nets.infer import CheckpointError
from dentcae.runtime.locks import LockedError, exclusive
from dentcae.evaluation.metrics import PRED_FIELDS, read_prediction_errors, read_predictions
from dentcae.train.runfiles import run_dir
from dentcae.train.loop import train


@pytest.mark.parametrize("name", ["", ".", "..", "../victim", "/tmp/victim", "a/b", "~"])
def test_run_names_that_leave_runs_dir_are_refused_and_nothing_is_deleted(phantom, tmp_path, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    (tmp_path / "runs").mkdir()
    path = tiny_config(tmp_path, phantom, name="ok")
    with pytest.raises(ConfigError, match=r"'name' must be a plain folder name"):
        load_config(path, {"name": name})
    code, out = run_cli("finetune", "--config", str(path), "--set", f"name={name!r}", "--overwrite")
    assert code == 2 and "plain folder name" in out
    assert (victim / "keep.txt").read_text() == "precious" and (tmp_path / "runs").exists()


def test_table_names_are_checked_too(tmp_path):
    from dentcae.tables.spec import load_table
    t = tmp_path / "t.yaml"
    t.write_text(yaml.safe_dump({"name": "../x", "arms": [{"key": "a", "config": "c.yaml"}]}))
    with pytest.raises(ConfigError, match=r"t.yaml: config key 'name' must be a plain folder name"):
        load_table(t)


def test_a_second_process_on_a_locked_run_fails_at_once_naming_the_holder(phantom, tmp_path):
    path = tiny_config(tmp_path, phantom)
    cfg = load_config(path)
    with exclusive(tmp_path / "runs" / f".{cfg['name']}.lock", "run"):
        code, out = run_cli("finetune", "--config", str(path))
    assert code == 1 and "is in use by another dentcae process (pid" in out
    assert not run_dir(cfg).exists()
    with exclusive(tmp_path / "x.lock", "x"):
        with pytest.raises(LockedError, match="x is in use"):
            with exclusive(tmp_path / "x.lock", "x"):
                pass


def test_config_ranges_and_numbers_written_as_1e_minus_3(phantom, tmp_path):
    path = tiny_config(tmp_path, phantom)
    assert load_config(path, ["solver.base_lr=1e-3"])["solver"]["base_lr"] == 0.001
    path.write_text(path.read_text().replace("base_lr: 0.0001", "base_lr: 1e-4"))
    assert load_config(path)["solver"]["base_lr"] == 1e-4
    for bad, key in (("solver.max_iter=0", "max_iter"), ("solver.batch_size=0", "batch_size"),
                     ("solver.test_interval=0", "test_interval"), ("solver.snapshot=-1", "snapshot")):
        with pytest.raises(ConfigError, match=rf"'solver.{key}' must be (at least|between)"):
            load_config(path, [bad])
    with pytest.raises(ConfigError, match=r"'solver.stepsize' must be at least 1"):
        load_config(path, ["solver.lr_policy=step", "solver.stepsize=0"])
    with pytest.raises(ConfigError, match=r"--set 'solver.base_lr=\[1': not a valid YAML value"):
        load_config(path, ["solver.base_lr=[1"])


def test_tiny_images_and_non_files_are_refused(phantom, tmp_path):
    import cv2
    import numpy as np
    from dentcae.data.dataset import DataError, read_image
    cv2.imwrite(str(tmp_path / "dot.png"), np.zeros((1, 1), np.uint8))
    with pytest.raises(DataError, match=r"dot.png: 1x1 px is too small"):
        read_image(tmp_path / "dot.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(DataError, match=r"folder.png: not a regular file"):
        read_image(tmp_path / "folder.png")
    root = tmp_path / "ds"
    shutil.copytree(phantom, root)
    (root / "sub.png").mkdir()                             # a folder named like an image is no image
    assert len(load_dataset(root).images) == 12


def test_excel_bom_and_commas_in_names_survive(phantom, tmp_path):
    root = tmp_path / "bom"
    shutil.copytree(phantom, root)
    csv_path = root / "landmarks.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())
    assert sum(r.annotated for r in load_dataset(root).images) == 8
    odd = 'a,b "c".png'
    row = [0, odd, "whole", 1, "p", 1.0, 2.0, 4.0, 6.0, 5.0, 1.25]
    write_csv_atomic(tmp_path / "p.csv", [PRED_FIELDS, row])
    assert read_predictions(tmp_path / "p.csv")[0]["image"] == odd
    assert read_prediction_errors(tmp_path / "p.csv")[0].tolist() == [[1.25]]


@pytest.mark.slow
def test_evaluate_refuses_weights_or_data_that_do_not_fit(phantom, clean_tmp, quiet):
    cae = tiny(clean_tmp, phantom, stage="pretrain", name="cae", solver={"max_iter": 1})
    train(cae, log=quiet)
    reg = tiny(clean_tmp, phantom, name="reg", solver={"max_iter": 1})
    train(reg, log=quiet)
    wrong = run_dir(reg) / "snapshots" / "cae_weights.caffemodel"
    shutil.copy(run_dir(cae) / "final.caffemodel", wrong)           # CAE weights put in a regressor run
    with pytest.raises(EvaluationError, match=r"layer 'fc8_landmarks' is not in .*cae_weights.caffemodel"):
        evaluate_checkpoint(None, wrong)
    one = dict(reg, dataset={**reg["dataset"], "landmarks": ["gonion_left"]})    # 4-landmark model, 1-landmark data
    with pytest.raises(EvaluationError, match=r"trained with other settings of dataset.landmarks"):
        evaluate_checkpoint(one, run_dir(reg))                     # refused by its config, before any net
    with pytest.raises(CheckpointError, match=r"outputs 8 values per sample, the data has 1 landmarks"):
        check_nets({"first": {"prototxt": run_dir(reg) / "deploy.prototxt",
                              "caffemodel": run_dir(reg) / "final.caffemodel"}}, "regression", 1)
    code, out = run_cli("evaluate", str(wrong))
    assert code == 1 and "does not fit" in out and "Traceback" not in out
    assert not (run_dir(reg) / "predictions.csv").exists()


@pytest.mark.slow
def test_resume_after_moving_the_run_with_a_corrupt_marker_and_a_truncated_snapshot(phantom, clean_tmp, quiet):
    cfg = tiny(clean_tmp, phantom, name="moved", solver={"max_iter": 2, "snapshot": 2})
    train(cfg, log=quiet)
    moved = dict(cfg, runs_dir=str(clean_tmp / "elsewhere"), solver={**cfg["solver"], "max_iter": 3})
    shutil.move(cfg["runs_dir"], moved["runs_dir"])           # the solverstate still names the old path
    snapshots = run_dir(moved) / "snapshots"
    (snapshots / "latest.json").write_text('{"iter": 2, "caffemo')          # and its marker is corrupt
    assert train(moved, resume=True, log=quiet)["iterations"] == 3
    marker = yaml.safe_load((snapshots / "latest.json").read_text())
    assert marker["iter"] == 3 and not marker["caffemodel"].startswith("/")
    weights = snapshots / marker["caffemodel"]
    weights.write_bytes(weights.read_bytes()[:1000])                          # a truncated snapshot
    again = dict(moved, solver={**moved["solver"], "max_iter": 4})
    said = []
    with pytest.raises(RuntimeError, match=r"--resume: no complete snapshot"):   # the only one is truncated
        train(again, resume=True, log=said.append)
    (snapshots / "latest.json").unlink()              # and without a marker to vouch for sizes
    with pytest.raises(RuntimeError, match=r"--resume: no complete snapshot"):
        train(again, resume=True, log=quiet)


@pytest.mark.slow
def test_an_older_marker_naming_deleted_files_falls_back_to_the_newest_complete_snapshot(phantom, clean_tmp):
    cfg = tiny(clean_tmp, phantom, name="older", solver={"max_iter": 4, "snapshot": 2})
    train(cfg, log=lambda m: None)
    snapshots = run_dir(cfg) / "snapshots"
    marker = json.loads((snapshots / "latest.json").read_text())
    assert marker["iter"] == 4 and not list(snapshots.glob("*_iter_2.*"))      # iteration 2's pair is gone
    older = {**marker, "iter": 2, "caffemodel": marker["caffemodel"].replace("_4.", "_2."),
             "solverstate": marker["solverstate"].replace("_4.", "_2.")}
    (snapshots / "latest.json").write_text(json.dumps(older))                  # valid, but names deleted files
    said = []
    longer = dict(cfg, solver={**cfg["solver"], "max_iter": 6})
    assert train(longer, resume=True, log=said.append)["iterations"] == 6
    assert any("missing or truncated" in m for m in said) and any("resumed" in m and "iteration 4" in m for m in said)


@pytest.mark.slow
def test_a_full_disk_stops_before_caffe_writes_and_keeps_the_last_snapshot(phantom, clean_tmp, monkeypatch, quiet):
    import collections
    import dentcae.train.snapshots as snapshots
    cfg = tiny(clean_tmp, phantom, name="full", solver={"max_iter": 6, "snapshot": 2})
    real = snapshots.shutil.disk_usage
    calls = {"n": 0}

    def filling(path):                      # free space runs out after the first snapshot
        calls["n"] += 1
        usage = real(path)
        return usage if calls["n"] == 1 else collections.namedtuple("u", "total used free")(usage.total, usage.total, 1024)
    monkeypatch.setattr(snapshots.shutil, "disk_usage", filling)
    with pytest.raises(snapshots.SnapshotError, match=r"not enough free disk space for a snapshot at iteration 4"):
        train(cfg, log=quiet)
    snaps = run_dir(cfg) / "snapshots"
    marker = yaml.safe_load((snaps / "latest.json").read_text())
    assert marker["iter"] == 2 and (snaps / marker["caffemodel"]).stat().st_size == marker["sizes"][0]
    assert not list(snaps.glob("*_iter_4.*"))
    monkeypatch.setattr(snapshots.shutil, "disk_usage", real)
    assert train(cfg, resume=True, log=quiet)["iterations"] == 6


def test_pretraining_needs_no_labels_and_fine_tuning_says_it_does(phantom, tmp_path):
    from dentcae.data.prepare import prepare
    root = tmp_path / "unlabelled"
    shutil.copytree(phantom, root)
    lines = (root / "landmarks.csv").read_text().splitlines()
    (root / "landmarks.csv").write_text(lines[0] + "\n")
    prep = prepare(tiny(tmp_path, root, stage="pretrain"))
    assert prep.count("cae_train") + prep.count("cae_test") == 24 and prep.count("reg_train") == 0


def test_a_truncated_prepared_cache_is_rebuilt(phantom, tmp_path):
    from dentcae.data.prepare import prepare
    cfg = tiny(tmp_path, phantom)
    first = prepare(cfg)
    h5 = first.h5("reg_train")
    h5.write_bytes(h5.read_bytes()[:500])
    logs = []
    again = prepare(cfg, log=logs.append)
    assert again.dir == first.dir and any("incomplete or changed" in m for m in logs)
    import h5py
    with h5py.File(again.h5("reg_train"), "r") as f:
        assert f["data"].shape[0] == again.count("reg_train")


@pytest.mark.slow
def test_an_interrupted_start_does_not_block_the_next_plain_run(phantom, clean_tmp, quiet):
    cfg = tiny(clean_tmp, phantom, name="early", solver={"max_iter": 1})
    run = run_dir(cfg)
    (run / "snapshots").mkdir(parents=True)
    (run / "config.yaml").write_text("half")            # what a SIGTERM before the first snapshot leaves
    (run / "log.txt").write_text("started\n")
    assert train(cfg, log=quiet)["iterations"] == 1
    from dentcae.train.stages import TrainingError
    with pytest.raises(TrainingError, match="exists: pass --resume"):      # a finished run is protected
        train(cfg, log=quiet)


BAD_VALUES = [("model.heatmap_sigma=0", "model.heatmap_sigma"), ("prepare.augment.scale=1.5", "prepare.augment.scale"),
              ("model.head_width=0", "model.head_width"), ("solver.random_seed=-1", "solver.random_seed"),
              ("prepare.augment.rotate_deg=400", "prepare.augment.rotate_deg"), ("seed=-3", "seed"),
              ("train.loss_explode_factor=0.5", "train.loss_explode_factor"), ("solver.base_lr=.nan", "solver.base_lr"),
              ("solver.stepvalue=[5, 2]", "solver.stepvalue"), ("prepare.augment.noise=-1", "prepare.augment.noise"),
              ("model.num_landmarks=0", "model.num_landmarks"), ("prepare.folds=3", None)]


@pytest.mark.parametrize("setting, key", BAD_VALUES)
def test_every_numeric_key_has_a_checked_range(phantom, tmp_path, setting, key):
    path = tiny_config(tmp_path, phantom, model={"head": "heatmap"})
    if key is None:                                   # folds 3 with fold 5: the fold does not exist
        with pytest.raises(ConfigError, match=r"'prepare.fold' must be below prepare.folds \(3\)"):
            load_config(path, [setting, "prepare.fold=5"])
        return
    with pytest.raises(ConfigError, match=rf"'{re.escape(key)}' must (be|list)"):
        load_config(path, [setting])
    code, out = run_cli("finetune", "--config", str(path), "--set", setting)
    assert code == 2 and key in out and "Traceback" not in out


def test_a_pretraining_run_of_another_kind_is_refused_by_name(phantom, tmp_path):
    from dentcae.config import dump_config
    cae = tiny(tmp_path, phantom, stage="pretrain", name="cae_run")
    run = run_dir(cae)
    run.mkdir(parents=True)
    dump_config(cae, run / "config.yaml")
    (run / "final.caffemodel").write_bytes(b"")
    cfg = tiny(tmp_path, phantom, model={"init": "augment", "pretrain_run": str(run)})
    code, out = run_cli("finetune", "--config", str(tiny_config(tmp_path, phantom, model={"init": "augment",
                                                                                         "pretrain_run": str(run)})))
    assert code == 1 and "is a 'pretrain' run of model.pretext 'cae', not a 'augment' pre-training" in out
    assert not run_dir(cfg).exists()


def test_a_heatmap_run_without_labelled_training_images_says_so(tmp_path, quiet):
    from dentcae.data.phantom import write_phantom
    from dentcae.train.stages import TrainingError
    root = write_phantom(tmp_path / "unlabelled", images=6, annotated=0, seed=1)
    cfg = tiny(tmp_path, root, model={"head": "heatmap"})
    with pytest.raises(TrainingError, match=r"split 'reg_train' has no samples: fine-tuning needs annotated"):
        train(cfg, log=quiet)


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"\x0a\x05trunc"])
def test_an_empty_or_truncated_start_is_refused_before_a_run_folder_is_made(phantom, tmp_path, content):
    start = tmp_path / "start"
    start.mkdir()
    (start / "final.caffemodel").write_bytes(content)
    (start / "config.yaml").write_text(yaml.safe_dump({"stage": "finetune", "model": {"head": "regression"}}))
    path = tiny_config(tmp_path, phantom, name="from_start", model={"init": "run", "init_run": str(start)})
    code, out = run_cli("finetune", "--config", str(path))
    assert code != 0 and "model.init run:" in out and "Traceback" not in out, out[-2000:]
    assert not (tmp_path / "runs" / "from_start").exists()


@pytest.mark.slow
def test_export_and_predict_refuse_a_truncated_final_caffemodel_without_a_caffe_abort(phantom, clean_tmp, quiet):
    reg = tiny(clean_tmp, phantom, name="cut", solver={"max_iter": 1})
    train(reg, log=quiet)
    weights = run_dir(reg) / "final.caffemodel"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    image = next(p for p in sorted(phantom.glob("*.png")))
    for args in (["export", str(run_dir(reg)), "--out", str(clean_tmp / "bundle")],
                 ["predict", str(run_dir(reg)), str(image), "--out", str(clean_tmp / "pred")]):
        code, out = run_cli(*args)
        assert code in (1, 2) and "final.caffemodel" in out and "Traceback" not in out, out[-2000:]
    assert not (clean_tmp / "bundle").exists() and not (clean_tmp / "pred").exists()
