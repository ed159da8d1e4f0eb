"""What one job of a table does, here or on a Ray worker: train a run, or reuse or resume it.

    train_and_evaluate(cfg, device)      # an arm: train (or reuse, or resume) it, then score it
    train_pretraining(cfg, device)       # a pre-training: train (or reuse, or resume) it

A finished run with the same resolved config is reused, an interrupted one resumed from its last
snapshot (so a job retried after its worker died goes on where it stopped), and a finished first net
is kept when only its head's sub-run settings changed.
"""
from ..config import ConfigError, differing_keys, dump_config, load_config
from ..evaluation.evaluate import evaluate_checkpoint
from ..schema import first_net_settings, training_settings
from ..train.loop import train, train_subrun
from ..train.runfiles import run_dir
from ..train.stages import subruns


def _saved_config(run):
    """The config a run folder was made with, or None (no run, or a config that no longer loads)."""
    try:
        return load_config(run / "config.yaml") if (run / "config.yaml").is_file() else None
    except ConfigError:
        return None


def made_by(run, cfg, first_net_only=False):
    """The run folder's saved config is `cfg` (keys added to the schema since it was written count
    with their defaults, so older runs of the same settings are still recognised), apart from the
    head's test-time keys; with `first_net_only`, apart from everything only its sub-runs read."""
    saved = _saved_config(run)
    settings = first_net_settings if first_net_only else training_settings
    return saved is not None and settings(saved) == settings(cfg)


def other_settings(cfg):
    """The dotted keys in which the run already in cfg's run folder was made with other settings than
    cfg's first net (training it would replace that run); [] when there is none or it matches."""
    saved = _saved_config(run_dir(cfg))
    return [] if saved is None else differing_keys(first_net_settings(saved), first_net_settings(cfg))


def train_or_reuse(cfg, gpu, log):
    """Reuse a finished run of the same config, resume an interrupted one, else train afresh. A
    run whose first net was made with the same settings keeps it when only its sub-runs' settings
    changed (the heatmap's model.refine), and trains (or resumes) those sub-runs alone."""
    run = run_dir(cfg)
    if made_by(run, cfg, first_net_only=True) and (run / "final.caffemodel").exists():
        same = made_by(run, cfg)
        dump_config(cfg, run / "config.yaml")           # the same, or new test-time or sub-run settings
        todo = [name for name in subruns(cfg) if not same or not (run / name / "final.caffemodel").exists()]
        if not todo:
            log(f"reusing finished run {run}")
            return
        log(f"reusing the first net of {run}; training its {', '.join(todo)} net")
        for name in todo:
            train_subrun(cfg, name, gpu, resume=True, log=log)
        return
    resume = made_by(run, cfg, first_net_only=True) and (run / "snapshots" / "latest.json").exists()
    train(cfg, gpu=gpu, resume=resume, overwrite=not resume, log=log)


def train_pretraining(cfg, device, log=print):
    """A pre-training's job: train (or reuse, or resume) it; returns its run folder."""
    train_or_reuse(cfg, device, log)
    return str(run_dir(cfg))


def train_and_evaluate(cfg, device, log=print):
    """An arm's job: train (or reuse, or resume) it, then score it on its test split; returns the
    evaluation summary (on a Ray worker, logs go to the worker's stdout, which Ray shows)."""
    train_or_reuse(cfg, device, log)
    return evaluate_checkpoint(cfg, run_dir(cfg), gpu=device)
