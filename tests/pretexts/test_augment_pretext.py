"""The augmentation-classification pretext (model.pretext: augment) and its transfer."""
import json

import numpy as np
import pytest

from conftest import tiny
from dentcae.config import ConfigError
from dentcae.pretexts.augment import METHODS, check_methods, confusion, transformed_copies
from dentcae.train.runfiles import run_dir
from dentcae.train.loop import train
from dentcae.nets.transfer import read_caffemodel

ROTATIONS = ["identity", "rot90", "rot180", "rot270"]


def _painted(n=3, size=16):
    """Grey samples with one bright dot each, at a different place per sample (none on a symmetry axis)."""
    gray = np.full((n, size, size), 40.0, np.float32)
    for i in range(n):
        gray[i, 2 + i, 5 + 2 * i] = 250.0
    return gray


def test_each_copy_carries_the_index_of_the_method_that_made_it():
    gray, methods = _painted(), ["identity", "rot90", "rot180", "rot270", "hflip", "vflip", "gamma", "blur"]
    data, labels = transformed_copies(gray, methods)
    assert data.shape == (len(gray) * len(methods), 16, 16)
    assert labels.tolist() == list(range(len(methods))) * len(gray)     # sample-major, method-minor
    for i in range(len(gray)):
        r, c = 2 + i, 5 + 2 * i
        copies = {name: data[i * len(methods) + k] for k, name in enumerate(methods)}
        peaks = {name: np.unravel_index(np.argmax(img), img.shape) for name, img in copies.items()}
        assert peaks["identity"] == (r, c) and peaks["rot180"] == (15 - r, 15 - c)
        assert peaks["rot90"] == (15 - c, r) and peaks["rot270"] == (c, 15 - r)   # numpy: counter-clockwise
        assert peaks["hflip"] == (r, 15 - c) and peaks["vflip"] == (15 - r, c)
        assert peaks["gamma"] == (r, c) and copies["gamma"][0, 0] < gray[i, 0, 0]   # darker, same place
        assert peaks["blur"] == (r, c) and copies["blur"].max() < 250.0                  # spread out
        np.testing.assert_array_equal(copies["identity"], gray[i])


def test_methods_are_checked_and_confusion_counts_rows_by_applied_method():
    assert check_methods(ROTATIONS) == ROTATIONS
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['rotate'\]"):
        check_methods(["identity", "rotate", "hflip", "gamma"])
    with pytest.raises(ValueError, match="at least 4 distinct"):
        check_methods(["identity", "rot90", "rot90", "hflip"])
    assert set(METHODS) >= set(ROTATIONS + ["hflip", "gamma", "blur"])
    m = confusion([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_config_refuses_bad_method_lists(phantom, tmp_path):
    with pytest.raises(ConfigError, match="model.pretext_methods: unknown method"):
        tiny(tmp_path, phantom, stage="pretrain", model={"pretext": "augment", "pretext_methods": ["a", "b", "c", "d"]})


def _pretext_run(tmp, phantom, quiet, iterations=60):
    cfg = tiny(tmp, phantom, stage="pretrain", name="tiny_pretext",
               prepare={"input_size": 112},
               model={"pretext": "augment", "pretext_methods": ROTATIONS, "dropout": 0.0},
               solver={"base_lr": 3e-4, "max_iter": iterations, "batch_size": 8, "test_interval": 20,
                       "snapshot": iterations})
    train(cfg, log=quiet)
    return cfg


@pytest.mark.slow
def test_a_tiny_pretext_run_names_rotations_above_chance_and_transfers_into_both_heads(phantom, clean_tmp, quiet):
    cfg = _pretext_run(clean_tmp, phantom, quiet)
    run = run_dir(cfg)
    result = json.loads((run / "pretext.json").read_text())
    assert result["methods"] == ROTATIONS and result["held_out_samples"] % 4 == 0
    assert result["held_out_accuracy"] > result["chance"] + 0.2, result       # chance is 0.25
    assert (run / "pretext.png").exists() and (run / "learning_curves.png").exists()
    assert "test_accuracy" in (run / "loss.csv").read_text()
    source = read_caffemodel(run / "final.caffemodel")
    assert source["fc8_pretext"][0].shape == (4, 64)
    for head, copied in (("regression", ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6"]),
                         ("heatmap", ["conv1", "conv2", "conv3", "conv4", "conv5"])):
        ft = tiny(clean_tmp, phantom, name=f"from_pretext_{head}", prepare={"input_size": 112},
                  model={"head": head, "init": "augment", "pretrain_run": str(run), "copy_layers": copied},
                  solver={"max_iter": 1, "snapshot": 1}, train={"save_init": True})
        train(ft, log=quiet)
        report = json.loads((run_dir(ft) / "transfer.json").read_text())
        assert report["pretraining"] == f"augmentation-pretext run {run}" and sorted(report["copied"]) == sorted(copied)
        init = read_caffemodel(run_dir(ft) / "init.caffemodel", set(copied))
        for layer in copied:
            for a, b in zip(source[layer], init[layer]):
                np.testing.assert_array_equal(a, b, err_msg=f"{head}: {layer}")
