"""The files of a run folder that a training stage needs before its first step.

    solver_path, test_iter = write_run_files(cfg, prep, run_dir(cfg))

config.yaml (resolved), train.prototxt, deploy.prototxt and solver.prototxt, from one config and its
prepared data; check_finite refuses splits that are empty or hold NaN/inf before any net is built.
"""
from pathlib import Path

import h5py
import numpy as np

from . import nets
from .config import ConfigError, dump_config
from .pretext import pretext_sources
from .refine import patch_sources
from .solver import solver_param, write_solver


class TrainingError(RuntimeError):
    pass


def run_dir(cfg):
    return Path(cfg["runs_dir"]) / cfg["name"]


def stage_splits(cfg):
    return ("cae_train", "cae_test") if cfg["stage"] == "pretrain" else ("reg_train", "reg_test")


def stage_data(cfg, prep):
    """(train source, test source, train count, test count): the HDF5 lists a stage trains on."""
    if cfg["stage"] == "pretrain" and cfg["model"]["pretext"] == "augment":
        return pretext_sources(cfg, prep)
    if cfg["stage"] == "refine":
        return patch_sources(cfg, prep)
    train, test = stage_splits(cfg)
    return prep.source(train), prep.source(test), prep.count(train), prep.count(test)


def _test_batch(count, wanted):
    """Largest batch <= wanted dividing count, so one test pass sees each sample exactly once."""
    return max(d for d in range(1, min(count, wanted) + 1) if count % d == 0)


def check_finite(prep, splits):
    for split in splits:
        if prep.count(split) == 0:
            raise TrainingError(f"{prep.dir}: split '{split}' has no samples: fine-tuning needs annotated "
                                "images in both its training and test splits (pre-training needs none)")
        for path in prep.h5_files(split):
            with h5py.File(path, "r") as f:
                for key in (k for k in ("data", "label", "heatmap") if k in f and (k == "data" or split.startswith("reg"))):
                    if not np.isfinite(f[key][...]).all():
                        raise TrainingError(f"{path}: dataset '{key}' holds NaN or inf; refusing to train on it")


def _num_landmarks(cfg, prep):
    k, found = cfg["model"]["num_landmarks"], prep.meta["num_landmarks"]
    if k is not None and k != found:
        raise ConfigError(f"config key 'model.num_landmarks' is {k}, but the prepared data has {found} "
                          "landmarks per sample: remove the key or fix it")
    return found


def write_run_files(cfg, prep, run, gpu=None):
    """Resolved config, train/deploy nets and solver prototxt of a stage; returns
    (solver path, test iterations per test pass)."""
    train_source, test_source, _, test_count = stage_data(cfg, prep)
    test_batch = _test_batch(test_count, cfg["solver"]["test_batch_size"])
    train_net, deploy = nets.for_config(cfg, _num_landmarks(cfg, prep), (train_source, test_source), test_batch)
    (run / "snapshots").mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run / "config.yaml")
    nets.write_net(train_net, run / "train.prototxt")
    nets.write_net(deploy, run / "deploy.prototxt")
    stem, _ = nets.stage_builder(cfg)
    sp = solver_param(cfg["solver"], (run / "train.prototxt").resolve(), (run / "snapshots" / stem).resolve(),
                      test_count // test_batch, gpu)
    sp.snapshot = 0                              # snapshots are taken by this runner (see module docstring)
    sp.test_interval = cfg["solver"]["max_iter"] + 1   # and so are tests
    sp.display = 0
    return write_solver(sp, run / "solver.prototxt"), test_count // test_batch
