"""The dense pre-training (pretexts/denoise.py): corruption and target geometry, and its layers
copying into the heatmap detector by name (a mismatch named)."""
import json

import numpy as np
import pytest

from conftest import tiny
from dentcae.nets.transfer import read_caffemodel
from dentcae.pretexts.denoise import OFFSET, STRIDE, corrupt, target
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
