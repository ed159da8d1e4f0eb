"""Which nets `dentcae evaluate` scores: a run folder, a snapshot inside one, several runs (an
ensemble) or a bundle, with the test-time keys a given config may change, and nothing else.

    model, prep = open_runs(cfg, ["runs/a", "runs/b"])       # a Model and its first run's data
    run, weights = resolve_checkpoint("runs/a/snapshots/x_iter_100.caffemodel")
"""
from pathlib import Path

from ..config import differing_keys, load_config
from ..data.prepare import prepare
from ..inference.bundles import is_bundle, load_bundle
from ..inference.calibration import calibrate
from ..inference.model import ModelError
from ..inference.runs import run_model
from ..nets.infer import CheckpointError
from ..schema import test_time_keys, training_settings, value_at


class EvaluationError(CheckpointError):
    pass


def resolve_checkpoint(checkpoint):
    """A run folder (-> its final.caffemodel and deploy.prototxt) or a .caffemodel inside one."""
    p = Path(checkpoint)
    run = p if p.is_dir() else p.parent
    weights = p / "final.caffemodel" if p.is_dir() else p
    if weights.parent.name == "snapshots":
        run = weights.parent.parent
    for f in (weights, run / "deploy.prototxt"):
        if not f.exists():
            raise FileNotFoundError(f"{f} not found (evaluate takes a finetune run folder or a "
                                    ".caffemodel inside one)")
    return run, weights


def check_same_training(cfg, run, saved=None):
    """A config given to evaluate a run (or a bundle's member, `saved`) may differ from the run's
    own only in test-time keys (schema.test_time_keys) and in what does not decide the data, the
    split or the nets: anything else would score another split or preprocessing than the one
    trained on, or abort Caffe."""
    saved_path = Path(run) / "config.yaml"
    if cfg is None or (saved is None and not saved_path.exists()):
        return
    saved = saved or load_config(saved_path)
    changed = [k for k in differing_keys(training_settings(saved), training_settings(cfg))
               if k.split(".")[0] in ("dataset", "prepare", "model", "stage")]
    if changed:
        raise EvaluationError(f"{run} was trained with other settings of {', '.join(changed)} (its config); "
                              f"evaluate may change only test-time keys ({', '.join(test_time_keys(saved))})")


def _with_test_time(cfg, run, own=None):
    """The run's own config (or `own`, a bundle member's) with the test-time keys of `cfg` (None:
    its own)."""
    own = own or load_config(Path(run) / "config.yaml")
    if cfg is None:
        return own
    check_same_training(cfg, run, own)
    for key in test_time_keys(own):
        *path, last = key.split(".")
        node = own
        for part in path:
            node = node[part]
        node[last] = value_at(cfg, key)
    return own


def _open_bundle(cfg, path, gpu):
    """(Model, its first member's Prepared data) of a bundle; with `cfg`, its test-time keys on
    every member and the flags calibrated again for them."""
    model = load_bundle(path)
    if cfg is not None:
        for member in model.members:
            member.cfg = _with_test_time(cfg, path, member.cfg)
    prep = prepare(model.cfg)
    if cfg is not None:
        model.info["confidence"] = calibrate(model, prep, True, gpu)
    return model, prep


def open_runs(cfg, checkpoints, gpu=None):
    """(Model, Prepared data of the first) of one or several checkpoints (run folders, or a
    .caffemodel inside one for a single run, or one bundle), with the test-time keys of `cfg`."""
    if len(checkpoints) == 1 and is_bundle(checkpoints[0]):
        try:
            return _open_bundle(cfg, checkpoints[0], gpu)
        except ModelError as e:
            raise EvaluationError(str(e)) from None
    resolved = [resolve_checkpoint(c) for c in checkpoints]
    if len(resolved) > 1 and any(w.parent.name == "snapshots" for _, w in resolved):
        raise EvaluationError("several checkpoints make an ensemble of run folders; give run folders, not snapshots")
    runs = [run for run, _ in resolved]
    cfgs = [_with_test_time(cfg, run) for run in runs]
    snapshot = resolved[0][1] if resolved[0][1] != runs[0] / "final.caffemodel" else None
    try:
        return run_model(runs, cfgs, weights=snapshot, gpu=gpu)
    except (CheckpointError, ModelError) as e:
        raise EvaluationError(str(e)) from None
