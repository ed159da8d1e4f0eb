"""The dense pre-training (pretexts/denoise.py): corruption and target geometry, and its layers
copying into the heatmap detector by name (a mismatch named)."""
import json

import numpy as np
import pytest

from conftest import ROOT, tiny
from dentcae.config import ConfigError, load_config
from dentcae.nets.transfer import read_caffemodel
from dentcae.pretexts.denoise import OFFSET, STRIDE, alpha_bar, corrupt, diffuse, on_grid, target
from dentcae.train.loop import train
from dentcae.train.runfiles import run_dir

DECODER = ["hm_reduce5", "hm_up4", "hm_skip4", "hm_conv4", "hm_up2", "hm_skip2", "hm_conv2"]
COPIED = ["conv1", "conv2", "conv3", "conv4", "conv5"] + DECODER


def test_the_target_lies_on_the_decoders_grid_and_corruption_hides_what_it_says():
    grey = np.zeros((96, 96), np.float32)
    grey[OFFSET + STRIDE * 7, OFFSET + STRIDE * 3] = 255.0           # input pixel 4p + 5 of cell (7, 3)
    t = target(grey, 0.0)
    assert t.shape == ((96 - 11) // 4 + 1,) * 2 and np.unravel_index(t.argmax(), t.shape) == (7, 3)
    d = {"mask_fraction": 0.25, "mask_patch": 8, "noise": 0.0}
    ramp = np.tile(np.arange(96, dtype=np.float32), (96, 1))
    hidden = corrupt(np.random.default_rng(0), ramp, d) == ramp.mean()
    assert 0.1 < hidden.mean() <= 0.3                                  # overlapping squares hide up to a quarter


def test_the_many_level_objective_targets_exactly_the_noise_it_added():
    """objective: noise (DDPM-style): x_t = sqrt(a) x0 + sqrt(1 - a) eps, and the target is eps on the
    decoder's grid, so (x_t's grid - sqrt(a) x0's grid) / sqrt(1 - a) is the target, up to its scale."""
    grey = np.tile(np.linspace(0, 255, 128, dtype=np.float32), (128, 1))
    x, eps = diffuse(np.random.default_rng(3), grey, np.array([0.3]))
    noise = (on_grid(x / 127.5 - 1) - np.sqrt(0.3) * on_grid(grey / 127.5 - 1)) / np.sqrt(0.7)
    assert eps.shape == ((128 - 11) // 4 + 1,) * 2
    scale = eps.std() / noise.std()
    assert np.allclose(noise * scale, eps, atol=1e-3) and 0.85 < eps.std() < 1.15      # rescaled to unit sd
    abar = alpha_bar(1000)
    assert abar[0] > 0.999 and abar[-1] < 1e-4 and np.all(np.diff(abar) < 0)          # none to nearly pure noise
    assert np.allclose(alpha_bar(10), abar[np.round(np.linspace(0, 999, 10)).astype(int)])
    with pytest.raises(ConfigError, match="model.denoise.objective' must be one of clean, noise, got 'image'"):
        load_config(ROOT / "configs/ours/denoise_ddpm_pretrain.yaml", ["model.denoise.objective=image"])


@pytest.mark.slow
def test_a_tiny_denoising_run_copies_encoder_and_decoder_into_the_detector(phantom, clean_tmp, quiet):
    small = {"input_size": 96, "resize": "pad"}
    pre = tiny(clean_tmp, phantom, stage="pretrain", name="dn", prepare=small,
               model={"pretext": "denoise", "head_width": 16, "denoise": {"copies": 1}})
    train(pre, log=quiet)
    run = run_dir(pre)
    assert (run / "reconstructions.png").exists() and (run / "final.caffemodel").exists()
    source = read_caffemodel(run / "final.caffemodel")
    assert "dn_reconstruction" in source and source["hm_conv2"][0].shape == (8, 8, 3, 3)
    ft = tiny(clean_tmp, phantom, name="from_dn", prepare=small, train={"save_init": True},
              model={"head": "heatmap", "head_width": 16, "init": "denoise", "pretrain_run": str(run),
                     "copy_layers": COPIED}, solver={"max_iter": 1, "snapshot": 1})
    train(ft, log=quiet)
    report = json.loads((run_dir(ft) / "transfer.json").read_text())
    assert list(report["copied"]) == COPIED and report["fresh"] == ["heatmaps"]
    assert report["pretraining"] == f"dense denoising run {run}"
    init = read_caffemodel(run_dir(ft) / "init.caffemodel", set(COPIED))
    for layer in COPIED:
        for a, b in zip(source[layer], init[layer]):
            np.testing.assert_array_equal(a, b)
    wider = tiny(clean_tmp, phantom, name="wider", prepare=small,
                 model={"head": "heatmap", "head_width": 32, "init": "denoise", "pretrain_run": str(run),
                        "copy_layers": COPIED}, solver={"max_iter": 1, "snapshot": 1})
    with pytest.raises(RuntimeError, match=r"layer 'hm_reduce5' blob 0: shape \[16, 256, 1, 1\] in .* != \[32, 256, 1, 1\]"):
        train(wider, log=quiet)


@pytest.mark.slow
def test_a_tiny_many_level_run_trains_on_noise_targets(phantom, clean_tmp, quiet):
    pre = tiny(clean_tmp, phantom, stage="pretrain", name="ddpm", prepare={"input_size": 96, "resize": "pad"},
               model={"pretext": "denoise", "head_width": 16, "denoise": {"objective": "noise", "copies": 2}})
    train(pre, log=quiet)
    run = run_dir(pre)
    summary = json.loads((run / "training.json").read_text())
    assert (run / "reconstructions.png").exists() and np.isfinite(summary["final_train_loss"])
