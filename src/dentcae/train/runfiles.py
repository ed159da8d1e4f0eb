"""The files of a run folder that a training stage needs before its first step.

    solver_path, test_iter = write_run_files(cfg, prep, run_dir(cfg))

config.yaml (resolved), train.prototxt, deploy.prototxt and solver.prototxt, from one config and its
prepared data; check_finite refuses splits that are empty or hold NaN/inf before any net is built.
"""
from pathlib import Path

import h5py
import numpy as np

from ..config import ConfigError, dump_config
from ..nets.alexnet import write_net
from ..nets.solver import solver_param, write_solver
from ..registry import stage_plugin
from .stages import TrainingError, nets_for, stage_data


def run_dir(cfg):
    return Path(cfg["runs_dir"]) / cfg["name"]


def _test_batch(count, wanted):
    """Largest batch <= wanted dividing count, so one test pass sees each sample exactly once."""
    return max(d for d in range(1, min(count, wanted) + 1) if count % d == 0)


def check_finite(prep, splits):
    """Refuse empty splits, and NaN or inf in any dataset of a split's files (only `data` of the
    pre-training splits, whose unannotated labels are NaN by design)."""
    for split in splits:
        if prep.count(split) == 0:
            raise TrainingError(f"{prep.dir}: split '{split}' has no samples: fine-tuning needs annotated "
                                "images in both its training and test splits (pre-training needs none)")
        for path in prep.h5_files(split):
            with h5py.File(path, "r") as f:
                for key in (k for k in f if k == "data" or split.startswith("reg")):
                    if not _finite_where_used(f, key):
                        raise TrainingError(f"{path}: dataset '{key}' holds NaN or inf; refusing to train on it")


def _finite_where_used(f, key):
    """All finite; a `label` only where `heatmap_mask` keeps the landmark (masked ones are NaN)."""
    values = f[key][...]
    if key == "label" and "heatmap_mask" in f:
        mask = f["heatmap_mask"][...].astype(bool)
        return bool(np.isfinite(values.reshape(*mask.shape, 2)[mask]).all())
    return bool(np.isfinite(values).all())


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
    train_net, deploy = nets_for(cfg, _num_landmarks(cfg, prep), (train_source, test_source), test_batch)
    (run / "snapshots").mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run / "config.yaml")
    write_net(train_net, run / "train.prototxt")
    write_net(deploy, run / "deploy.prototxt")
    stem = stage_plugin(cfg).STEM
    sp = solver_param(cfg["solver"], (run / "train.prototxt").resolve(), (run / "snapshots" / stem).resolve(),
                      test_count // test_batch, gpu)
    sp.snapshot = 0                              # snapshots are taken by this runner (see module docstring)
    sp.test_interval = cfg["solver"]["max_iter"] + 1   # and so are tests
    sp.display = 0
    return write_solver(sp, run / "solver.prototxt"), test_count // test_batch
