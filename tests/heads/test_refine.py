"""The heatmap head's coarse-to-fine refine net (heads/heatmap/refine.py, its sub-run): patches, their
labels, decoding, a tiny run, and tables that keep a first net when only the refine settings change."""
import copy
import json

import h5py
import numpy as np
import pytest

from conftest import run_cli, tiny
from dentcae.codecs import heatmap
from dentcae.config import ConfigError, load_config
from dentcae.evaluation.evaluate import evaluate_checkpoint
from dentcae.heads.heatmap import refine
from dentcae import views
from dentcae.nets.infer import CheckpointError
from dentcae.schema import training_settings
from dentcae.data.prepare import prepare
from dentcae.train.runfiles import run_dir
from dentcae.train.loop import train


def test_a_painted_dot_lands_on_its_patch_label_through_rotation_and_scale():
    size, patch = 300, 96
    rng = np.random.default_rng(4)
    labels = (rng.integers(40, 260, (3, 2)) + 0.5) / size
    image = np.zeros((size, size), np.float32)
    for x, y in np.round(labels * size - 0.5).astype(int):
        image[y - 1:y + 2, x - 1:x + 2] = 255
    yy, xx = np.mgrid[0:patch, 0:patch]
    for angle, scale in ((0.0, 1.0), (17.0, 1.1), (-9.0, 0.9)):
        centre = labels[1] * size - 0.5 + [6.0, -4.0]
        m = refine.patch_matrix(centre, patch, angle, scale)
        grey = refine.cut(image, m, patch)
        moved = refine.to_patch(labels, m, size, patch)
        near = (np.hypot(xx - (moved[1, 0] * patch - 0.5), yy - (moved[1, 1] * patch - 0.5)) < 5)
        w = grey * near / (grey * near).sum()              # landmark 1's dot, where the patch put it
        assert np.hypot((w * xx).sum() - (moved[1, 0] * patch - 0.5), (w * yy).sum() - (moved[1, 1] * patch - 0.5)) < 0.3
        if angle == 0.0:                                   # no rotation: the centre sits mid-patch
            np.testing.assert_allclose(moved[1] * patch - 0.5, [(patch - 1) / 2 - 6.0, (patch - 1) / 2 + 4.0])


def _decode_back(hm, m, centre, size, patch, margin=0):
    """A patch heatmap decoded near the estimate and mapped back to a normalised sample label."""
    q, value = refine.decode_in_patch(hm, views.apply(m, centre), patch / 4.0, margin)
    return (views.apply(views.invert(m), q) + 0.5) / size, value


@pytest.mark.parametrize("view", [{"rotate": 6.0}, {"scale": 1.15}, {"shift": [8, -4]},
                                  {"rotate": -4.0, "scale": 0.9, "shift": [-6, 5]}])
def test_a_patch_seen_in_a_view_decodes_back_to_the_sample_label(view):
    size, patch = 512, 128
    label = np.array([0.4137, 0.6021])
    centre = label * size - 0.5 + np.array([6.2, -3.9])
    m = refine._view_matrices(centre, patch, [view])[0]
    target = heatmap.encode(refine.to_patch(label[None], m, size, patch)[None], patch, 2.0)[0, 0]
    back, _ = _decode_back(target, m, centre, size, patch)
    assert np.abs((back - label) * size).max() < 0.1          # sub-pixel, in fine-sample pixels


@pytest.mark.parametrize("offset", [(0.0, 0.0), (7.3, -11.6), (-20.2, 18.9)])
def test_refine_decoding_inverts_a_patch_target_to_the_sample_label(offset):
    size, patch = 512, 128
    label = np.array([0.4137, 0.6021])
    centre = label * size - 0.5 + np.array(offset)               # a first estimate off by `offset` px
    m = refine.patch_matrix(centre, patch)
    target = heatmap.encode(refine.to_patch(label[None], m, size, patch)[None], patch, 2.0)[0, 0]
    back, value = _decode_back(target, m, centre, size, patch)
    assert np.abs((back - label) * size).max() < 0.1
    assert 0.8 < value <= 1.0            # the Gaussian's height at the cell nearest the decoded point


@pytest.mark.parametrize("shift", [4, 16])
def test_averaged_shifted_patches_decode_to_the_sample_label(shift):
    size, patch = 512, 128
    label = np.array([0.3719, 0.5583])
    centre = label * size - 0.5 + np.array([9.1, -5.7])
    offsets = refine.shifts({"tta_shift": shift})
    assert len(offsets) == 5 and (0, 0) in offsets
    hms = [heatmap.encode(refine.to_patch(label[None], refine.patch_matrix(centre + np.array(o), patch),
                                           size, patch)[None], patch, 2.0)[0, 0] for o in offsets]
    canvas, margin = refine.averaged_heatmap(hms, offsets)
    assert margin == shift // heatmap.STRIDE and canvas.shape == (hms[0].shape[0] + 2 * margin,) * 2
    np.testing.assert_allclose(canvas[margin:-margin, margin:-margin], hms[0], atol=1e-6)   # the same Gaussian
    back, _ = _decode_back(canvas, refine.patch_matrix(centre, patch), centre, size, patch, margin)
    assert np.abs((back - label) * size).max() < 0.1
    assert refine.shifts({"tta_shift": 0}) == [(0, 0)]


def test_test_time_refine_settings_are_not_training_settings(phantom, tmp_path):
    cfg = tiny(tmp_path, phantom, model={"head": "heatmap", "refine": {"patch": 96}})
    other = copy.deepcopy(cfg)
    other["model"]["refine"].update(passes=3, tta_shift=8)
    assert training_settings(cfg) == training_settings(other)
    other["model"]["refine"]["max_iter"] += 1
    assert training_settings(cfg) != training_settings(other)
    assert cfg["model"]["refine"]["passes"] == 1              # training_settings copies; cfg is untouched


@pytest.mark.parametrize("bad", [{"tta_shift": 6}, {"tta_shift": -4}, {"tta_shift": 48}, {"passes": 0}])
def test_refine_test_time_settings_are_validated(phantom, tmp_path, bad):
    with pytest.raises(ConfigError, match="model.refine." + next(iter(bad))):
        tiny(tmp_path, phantom, model={"head": "heatmap", "refine": {"patch": 96, **bad}})


def test_refine_config_is_a_sub_run_with_its_own_solver(phantom, tmp_path):
    cfg = tiny(tmp_path, phantom, model={"head": "heatmap", "refine": {"patch": 96, "max_iter": 6, "batch_size": 8}},
               solver={"max_iter": 4, "stepsize": 2})
    fine = refine.refine_config(cfg)
    assert refine.enabled(cfg) and not refine.enabled(fine)
    assert run_dir(fine) == run_dir(cfg) / "refine" and fine["stage"] == "refine"
    assert (fine["solver"]["max_iter"], fine["solver"]["batch_size"], fine["solver"]["stepsize"]) == (6, 8, 3)
    assert fine["prepare"] == cfg["prepare"]                     # the same prepared-data entry


@pytest.mark.slow
def test_tiny_refine_run_trains_on_patches_and_refines_the_first_estimates(phantom, clean_tmp, quiet):
    cfg = tiny(clean_tmp, phantom, name="hm", prepare={"input_size": 96, "resize": "pad"},
               model={"head": "heatmap", "head_width": 16, "refine": {"patch": 80, "fine_size": 192, "draws": 2,
                                                                      "max_iter": 6, "batch_size": 8}},
               solver={"max_iter": 4, "batch_size": 4})
    summary = train(cfg, log=quiet)
    run = run_dir(cfg)
    assert summary["refine"]["iterations"] == 6 and (run / "refine" / "final.caffemodel").exists()
    assert json.loads((run / "training.json").read_text())["refine"]["stage"] == "refine"
    prep = prepare(cfg)
    patches = next(prep.dir.glob("patches-*"))
    with h5py.File(patches / "reg_train_0.h5", "r") as f:
        n, k = len(f["data"]), prep.meta["num_landmarks"]
        assert n == 2 * k * prep.count("reg_train") and f["data"].shape[1:] == (3, 80, 80)
        back, lab = heatmap.decode(f["heatmap"][:20], 80), f["label"][:20].reshape(20, -1, 2)
        inside = ((lab > 0.05) & (lab < 0.95)).all(-1)            # targets and labels agree in the patch
        assert inside.sum() >= 20                                 # (each patch's own landmark at least)
        np.testing.assert_allclose(back[inside], lab[inside], atol=0.1 / 80)
    got = evaluate_checkpoint(None, run)
    assert "coarse_decoding" in got and np.isfinite(got["mre_mm"])
    assert got["mre_mm"] != got["coarse_decoding"]["mre_mm"]      # the refine net moved the estimates
    assert [p["mre_mm"] for p in got["refine_passes"]] == [got["mre_mm"]]
    cfg["model"]["refine"].update(passes=2, tta_shift=8)          # test time only: two passes, 5 patches
    twice = evaluate_checkpoint(cfg, run)
    assert len(twice["refine_passes"]) == 2 and twice["mre_mm"] == twice["refine_passes"][1]["mre_mm"]
    assert twice["refine_passes"][0]["mre_mm"] != got["mre_mm"]   # the averaged patches moved them
    rc, out = run_cli("evaluate", str(run), "--set", "model.refine.passes=3", "--out", str(clean_tmp / "again"))
    assert rc == 0, out
    assert len(json.loads((clean_tmp / "again" / "summary.json").read_text())["refine_passes"]) == 3
    fine = run / "refine" / "deploy.prototxt"
    text = fine.read_text()
    fine.write_text(text[:len(text) // 3])                        # a truncated refine net: Caffe would abort
    rc, out = run_cli("evaluate", str(run), "--out", str(clean_tmp / "cut"))
    assert rc == 1 and "refine/deploy.prototxt: not a readable net prototxt" in out and "Traceback" not in out, out
    fine.write_text(text)
    (run / "refine" / "final.caffemodel").unlink()
    with pytest.raises(CheckpointError, match="net 'refine' is not trained"):
        evaluate_checkpoint(None, run)


@pytest.mark.slow
def test_a_table_keeps_the_first_net_when_only_the_refine_settings_change(phantom, clean_tmp):
    from dentcae.tables.jobs import train_or_reuse as _train_or_reuse
    said = []
    first = tiny(clean_tmp, phantom, name="hm", prepare={"input_size": 96, "resize": "pad"},
                 model={"head": "heatmap", "head_width": 16}, solver={"max_iter": 2, "batch_size": 2})
    _train_or_reuse(first, None, said.append)
    final = run_dir(first) / "final.caffemodel"
    before = (final.stat().st_ino, final.stat().st_mtime_ns)
    second = tiny(clean_tmp, phantom, name="hm", prepare={"input_size": 96, "resize": "pad"},
                  model={"head": "heatmap", "head_width": 16, "refine": {"patch": 80, "fine_size": 160, "draws": 1,
                                                                         "max_iter": 2, "batch_size": 4}},
                  solver={"max_iter": 2, "batch_size": 2})
    _train_or_reuse(second, None, said.append)
    assert (final.stat().st_ino, final.stat().st_mtime_ns) == before          # the first net was kept
    assert (run_dir(second) / "refine" / "final.caffemodel").exists()
    assert any("training its refine net" in m for m in said)
    _train_or_reuse(second, None, said.append)
    assert said[-1].startswith("reusing finished run")
    second["model"]["refine"].update(passes=2, tta_shift=4)    # test-time settings retrain nothing
    refined = run_dir(second) / "refine" / "final.caffemodel"
    kept = (refined.stat().st_ino, refined.stat().st_mtime_ns)
    _train_or_reuse(second, None, said.append)
    assert said[-1].startswith("reusing finished run") and (refined.stat().st_ino, refined.stat().st_mtime_ns) == kept
    assert load_config(run_dir(second) / "config.yaml")["model"]["refine"]["passes"] == 2   # the run says how it decodes


@pytest.mark.slow
def test_prototxt_writes_the_refine_net_beside_the_first(tmp_path):
    from dentcae.train.stages import write_config_prototxts
    written = write_config_prototxts(load_config("configs/ours/heatmap_scratch.yaml"), tmp_path, num_landmarks=19)
    deploy = tmp_path / "refine" / "alexnet_heatmaps_deploy.prototxt"
    assert deploy in written and (tmp_path / "alexnet_heatmaps_deploy.prototxt") in written
    assert "dim: 128" in deploy.read_text() and "dim: 256" in (tmp_path / "alexnet_heatmaps_deploy.prototxt").read_text()
    assert "max_iter: 1000" in (tmp_path / "refine" / "heatmaps_solver.prototxt").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["own", "inside"])
def test_refine_loss_masks_the_channels_a_patch_does_not_train(phantom, clean_tmp, quiet, loss):
    """own: only the channel of the landmark the patch was cut for; inside: those of the landmarks
    inside the patch. Masked channels hold zero targets (and get no gradient: test_heatmap.py)."""
    cfg = tiny(clean_tmp, phantom, name=loss, prepare={"input_size": 96, "resize": "pad"},
               model={"head": "heatmap", "head_width": 16, "refine": {"patch": 80, "fine_size": 192, "draws": 2,
                                                                      "max_iter": 4, "batch_size": 8, "loss": loss}},
               solver={"max_iter": 2, "batch_size": 4})
    train(cfg, log=quiet)
    prep = prepare(cfg)
    folders = list(prep.dir.glob("patches-*"))
    assert len(folders) == 1 and json.loads((folders[0] / "patches.json").read_text())["loss"] == loss
    with h5py.File(folders[0] / "reg_train_0.h5", "r") as f:
        mask, hm, lab = f["heatmap_mask"][...], f["heatmap"][...], f["label"][...].reshape(len(f["label"]), -1, 2)
    inside = ((lab >= 0) & (lab <= 1)).all(-1)
    if loss == "own":
        assert np.all(mask.sum(1) == 1) and np.all(inside[mask == 1])    # one landmark per patch: its own
    else:
        assert np.array_equal(mask.astype(bool), inside) and (mask.sum(1) > 1).any()
    assert np.all(hm[mask == 0] == 0) and np.all(hm[mask == 1].max(axis=(1, 2)) > 0.3)
    assert "heatmap_mask" in (run_dir(cfg) / "refine" / "train.prototxt").read_text()
    assert "heatmap_mask" not in (run_dir(cfg) / "refine" / "deploy.prototxt").read_text()
    assert np.isfinite(evaluate_checkpoint(None, run_dir(cfg))["mre_mm"])
