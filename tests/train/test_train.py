"""CAE pre-training, weight transfer and fine-tuning with real Caffe; resume; NaN stop."""
import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_cli, tiny, tiny_config
from dentcae.config import ConfigError, load_config
from dentcae.train.stages import TrainingError
from dentcae.train.runfiles import run_dir
from dentcae.train.loop import train
from dentcae.nets.transfer import read_caffemodel

COPIED = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6"]


def _losses(run):
    with (run / "loss.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_pretrain_then_finetune_transfers_and_freezes(phantom, clean_tmp, quiet):
    cae_cfg = tiny(clean_tmp, phantom, stage="pretrain")
    cae = train(cae_cfg, log=quiet)
    cae_run = run_dir(cae_cfg)
    assert cae["iterations"] == 4 and (cae_run / "final.caffemodel").exists()
    assert (cae_run / "reconstructions.png").exists() and (cae_run / "learning_curves.png").exists()
    ft_cfg = tiny(clean_tmp, phantom, model={"init": "cae", "pretrain_run": str(cae_run), "freeze": ["fc6"]},
                  train={"save_init": True})
    train(ft_cfg, log=quiet)
    run = run_dir(ft_cfg)
    source = read_caffemodel(cae_run / "final.caffemodel", set(COPIED))
    first = read_caffemodel(run / "init.caffemodel")
    final = read_caffemodel(run / "final.caffemodel")
    for name in COPIED:                        # the regressor's first weights are the CAE's
        for a, b in zip(first[name], source[name]):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(final["fc6"], source["fc6"]):   # frozen fc6: unchanged by fine-tuning
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(final["conv1"][0], source["conv1"][0])   # the rest did train
    report = json.loads((run / "transfer.json").read_text())
    assert list(report["copied"]) == COPIED and report["fresh"] == ["fc7", "fc8_landmarks"]
    for r in (cae_run, run):
        rows = _losses(r)
        assert rows and all(np.isfinite(float(x["loss"])) for x in rows)
        assert {x["phase"] for x in rows} == {"train", "test"}
    for name in ("config.yaml", "train.prototxt", "deploy.prototxt", "solver.prototxt", "log.txt", "training.json"):
        assert (run / name).exists(), name
    assert load_config(run / "config.yaml") == ft_cfg   # the resolved config, loadable as is


def _wait_for_snapshot(run, it, proc, timeout=300):
    marker = run / "snapshots" / "latest.json"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if marker.exists() and json.loads(marker.read_text())["iter"] >= it:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no snapshot appeared")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_to_the_same_end(phantom, clean_tmp, sig, quiet):
    solver = {"max_iter": 6, "snapshot": 2, "test_interval": 3}
    whole = tiny(clean_tmp, phantom, name="whole", solver=solver)
    train(whole, log=quiet)
    path = tiny_config(clean_tmp, phantom, name="cut", solver=solver)
    cfg = load_config(path)
    run = run_dir(cfg)
    proc = subprocess.Popen([sys.executable, "-m", "dentcae.cli", "finetune", "--config",
                             str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for_snapshot(run, 2, proc)
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0
    if sig == signal.SIGINT:
        assert "interrupted at iteration" in out and "--resume" in out
    assert not (run / "final.caffemodel").exists()
    stopped = json.loads((run / "snapshots/latest.json").read_text())["iter"]
    assert 2 <= stopped < 6
    with pytest.raises(TrainingError, match="exists: pass --resume"):
        train(cfg, log=quiet)
    summary = train(cfg, resume=True, log=quiet)
    assert summary["iterations"] == 6
    assert _losses(run) == _losses(run_dir(whole))          # every loss, train and test


@pytest.mark.slow
def test_nan_or_exploding_loss_stops_and_keeps_the_last_good_snapshot(phantom, clean_tmp, quiet):
    cfg = tiny(clean_tmp, phantom, solver={"type": "SGD", "base_lr": 50.0, "max_iter": 30,
                                          "snapshot": 1, "test_interval": 100})
    with pytest.raises(TrainingError, match=r"at iteration (\d+) .*stopped. Last good snapshot") as err:
        train(cfg, log=quiet)
    bad = int(err.value.args[0].split("at iteration ")[1].split()[0])
    snapshots = run_dir(cfg) / "snapshots"
    latest = json.loads((snapshots / "latest.json").read_text())
    assert latest["iter"] == bad - 1 and (snapshots / latest["caffemodel"]).exists()
    assert not (run_dir(cfg) / "final.caffemodel").exists()


def _poison_snapshots(monkeypatch, at, before):
    """Snapshots that put a NaN into conv3's weights at iteration `at`, just before or just after
    the snapshot taken there."""
    import dentcae.train.loop as train_module

    class Poisoning(train_module.Snapshots):
        def take(self):
            poison = self.solver is not None and self.solver.iter == at
            if poison and before:
                self.solver.net.params["conv3"][0].data[0, 0, 0, 0] = np.nan
            state = super().take()
            if poison and not before:
                self.solver.net.params["conv3"][0].data[0, 0, 0, 0] = np.nan
            return state
    monkeypatch.setattr(train_module, "Snapshots", Poisoning)


def _finite_snapshot(snapshots):
    latest = json.loads((snapshots / "latest.json").read_text())
    weights = read_caffemodel(snapshots / latest["caffemodel"])
    assert weights and all(np.isfinite(b).all() for blobs in weights.values() for b in blobs)
    return latest["iter"]


@pytest.mark.slow
@pytest.mark.parametrize("before", [False, True], ids=["nan-after-snapshot", "nan-before-snapshot"])
def test_a_nan_weight_stops_training_and_no_snapshot_holds_it(phantom, clean_tmp, monkeypatch, before, quiet):
    """Weights are scanned only before snapshots: a NaN put in between stops the very next step
    through its loss, and one present at a snapshot is refused; the last good snapshot stays."""
    _poison_snapshots(monkeypatch, at=4, before=before)
    cfg = tiny(clean_tmp, phantom, solver={"max_iter": 8, "snapshot": 2, "test_interval": 100})
    expected = (r"weights of conv3 became NaN/inf by iteration 4; not snapshotting them.*_iter_2.caffemodel"
                if before else r"loss is nan \(weights of .*conv3.*\) at iteration 5 .*Last good snapshot: "
                r".*_iter_4.caffemodel")
    with pytest.raises(RuntimeError, match=expected):
        train(cfg, log=quiet)
    assert _finite_snapshot(run_dir(cfg) / "snapshots") == (2 if before else 4)
    assert not (run_dir(cfg) / "final.caffemodel").exists()


def test_config_errors_name_the_key(phantom, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"solver": {"max_iter": 5}}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("_base_: base.yaml\nsolver:\n  bse_lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'solver.bse_lr'"):
        load_config(bad)
    bad.write_text("_base_: base.yaml\nsolver:\n  max_iter: many\n")
    with pytest.raises(ConfigError, match=r"'solver.max_iter' must be int, got 'many'"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"--set: unknown config key 'model.frezee'"):
        load_config(base, ["model.frezee=[fc6]"])
    assert load_config(base, ["solver.base_lr=0.0005"])["solver"]["base_lr"] == 0.0005
    code, out = run_cli("finetune", "--config", str(bad))
    assert code == 2 and "solver.max_iter" in out and "Traceback" not in out


@pytest.mark.slow
def test_missing_imagenet_weights_says_where_to_get_them(phantom, clean_tmp, quiet):
    cfg = tiny(clean_tmp, phantom, stage="pretrain",
               model={"init": "imagenet", "imagenet_weights": str(clean_tmp / "bvlc_alexnet.caffemodel")})
    with pytest.raises(TrainingError, match=r"ImageNet weights not found .*sha1 9116a64c.*init: scratch"):
        train(cfg, log=quiet)
    assert not run_dir(cfg).exists()          # it stopped before any work
    cfg = tiny(clean_tmp, phantom, model={"init": "cae", "pretrain_run": str(clean_tmp / "no_cae")})
    with pytest.raises(TrainingError, match=r"CAE checkpoint .*no_cae/final.caffemodel not found: run the pre-training"):
        train(cfg, log=quiet)


KINDS = {"regression": {}, "heatmap": {"model": {"head": "heatmap", "head_width": 16}},
         "cae": {"stage": "pretrain"}, "augment": {"stage": "pretrain", "model": {"pretext": "augment"}},
         "denoise": {"stage": "pretrain", "model": {"pretext": "denoise", "head_width": 16},
                     "prepare": {"input_size": 96, "resize": "pad"}}}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_resumed_run_gives_the_same_losses_as_an_uninterrupted_one(phantom, clean_tmp, monkeypatch, quiet, kind):
    """Stopped after its iteration-4 snapshot (as Ctrl-C or SIGTERM stop it, or as kill -9 leaves it)
    and resumed: every loss, train and test, equals the uninterrupted run's, to the last digit."""
    import dentcae.train.loop as loop
    over = KINDS[kind]
    solver = {"max_iter": 8, "snapshot": 2, "test_interval": 3}
    whole = tiny(clean_tmp, phantom, name=f"whole_{kind}", solver=solver, **over)
    train(whole, log=quiet)
    cfg = tiny(clean_tmp, phantom, name=f"cut_{kind}", solver=solver, **over)

    class Stopping(loop.Snapshots):
        def take(self):
            state = super().take()
            if self.solver.iter == 4:
                raise KeyboardInterrupt
            return state
    monkeypatch.setattr(loop, "Snapshots", Stopping)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=quiet)
    monkeypatch.undo()
    assert json.loads((run_dir(cfg) / "snapshots/latest.json").read_text())["iter"] == 4
    train(cfg, resume=True, log=quiet)
    assert _losses(run_dir(cfg)) == _losses(run_dir(whole))
    assert len([r for r in _losses(run_dir(cfg)) if r["phase"] == "train"]) == 8
