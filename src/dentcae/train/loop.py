"""Train one stage with a pycaffe solver: pre-training (model.pretext) or fine-tuning (model.head).

    summary = train(cfg, gpu=None, resume=False)

The run folder runs_dir/name holds config.yaml (resolved), train/deploy/solver prototxts, log.txt,
loss.csv (iter, phase, loss), transfer.json (what was copied where), snapshots/ and final.caffemodel.
Loss rows reach loss.csv at each snapshot, together with snapshots/latest.json (written last, by
rename), so `resume=True` restarts exactly from the newest complete snapshot with the CSV cut to it.
A non-finite or exploding loss stops the run naming the iteration; the last good snapshot stays.
training.json records the seconds spent in steps, test passes and snapshots. What a stage trains
(its nets, data, figures) comes from its plug-in (registry.stage_plugin); a head's sub-runs (the
heatmap head's refine net) then train the same way in <run>/<name>.
"""
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import load_config
from ..data.prepare import ensure_dataset, prepare
from ..figures import plot_learning_curves
from ..registry import stage_plugin
from ..runtime.atomic import atomic_path, write_atomic
from ..runtime.backend import caffe_pb2, get_caffe, seed_caffe, set_device
from ..runtime.locks import exclusive
from ..schema import training_settings
from .losslog import LossLog
from .runfiles import check_finite, run_dir, write_run_files
from .snapshots import Snapshots, non_finite_layers, replay
from .stages import TrainingError, init_source, init_weights, stage_data, stage_splits, subruns  # noqa: F401






def _loss(net, value=None):
    """The loss the solver minimises: the loss blob times its loss_weight (pycaffe shows it raw)."""
    raw = float(net.blobs["loss"].data if value is None else value)
    return raw * float(net.blob_loss_weights["loss"])


def run_test_pass(test_net, test_iter):
    """One pass over the test split: {"test": mean loss, "test_accuracy": mean accuracy (nets with
    an Accuracy output, the augmentation pretext)}."""
    outs = [test_net.forward() for _ in range(test_iter)]
    result = {"test": float(np.mean([_loss(test_net, o["loss"]) for o in outs]))}
    if "accuracy" in outs[0]:
        result["test_accuracy"] = float(np.mean([float(o["accuracy"]) for o in outs]))
    return result


def _open_run(cfg, resume, overwrite):
    """The run folder, emptied for a fresh start when `overwrite` (or when an interrupted start left
    nothing to resume: no snapshot, no final weights); checks a resume can resume.
    Only runs_dir/name itself is ever deleted, and only when it lies inside runs_dir."""
    run = run_dir(cfg)
    root = Path(cfg["runs_dir"]).resolve()
    if run.resolve().parent != root:
        raise TrainingError(f"run folder {run} is not a folder directly inside runs_dir {root}; refusing")
    resumable = run.exists() and Snapshots(None, run, stage_plugin(cfg).STEM, log=lambda m: None).latest()
    if resume and not resumable:
        raise TrainingError(f"--resume: no complete snapshot in {run / 'snapshots'} to resume from")
    if not resume and run.exists() and any(run.iterdir()):
        if (resumable or (run / "final.caffemodel").exists()) and not overwrite:
            raise TrainingError(f"run folder {run} exists: pass --resume to continue it or "
                                "--overwrite to start again")
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    return run


def _logger(run, log):
    def say(msg):
        log(msg)
        with (run / "log.txt").open("a") as fh:
            fh.write(msg + "\n")
    return say


def _solverstate_here(state):
    """The solverstate, pointing at its caffemodel where it is now (Caffe stores the absolute path it
    had when written, and aborts if that file is gone, e.g. after the run folder was moved)."""
    pb2 = caffe_pb2()
    msg = pb2.SolverState()
    path = Path(state["solverstate"])
    msg.ParseFromString(path.read_bytes())
    if msg.learned_net == state["caffemodel"]:
        return path
    msg.learned_net = state["caffemodel"]
    return write_atomic(path.with_name(path.stem + ".here.solverstate"), msg.SerializeToString())


def _start(cfg, solver, run, source, snaps, losses, say):
    """Resume from the newest snapshot, or copy the initial weights and record the transfer."""
    if source is None:
        state = snaps.latest()
        solver.restore(str(_solverstate_here(state)))
        replay(solver.net, solver.iter)          # the batches and random draws the snapshot does not hold
        losses.cut_to(state["iter"])
        say(f"resumed {run} at iteration {solver.iter} from {state['solverstate']}")
        return
    report = init_weights(solver.net, *source)
    write_atomic(run / "transfer.json", json.dumps(report, indent=1))
    say(f"{cfg['stage']} {cfg['name']}: init {report['source']}")
    say(f"  copied: {', '.join(report['copied']) or 'nothing'}; fresh: {', '.join(report['fresh'])}")
    if cfg["model"]["freeze"]:
        say(f"  frozen: {', '.join(cfg['model']['freeze'])}")
    if cfg["train"]["save_init"]:
        solver.net.save(str(run / "init.caffemodel"))


def check_loss(cfg, solver, first, snaps, losses):
    """Stop, naming the iteration, when the last step's loss is not finite or exploded.

    Weights are not scanned here but before every snapshot (Snapshots.take), so no snapshot holds a
    NaN. A NaN weight cannot go unnoticed in between: the next forward pass carries it into the loss
    (and max pooling backward, patched in build_caffe.py, skips NaN windows instead of writing out of
    bounds), and this check runs after every step, before anything is written."""
    loss = _loss(solver.net)
    if np.isfinite(loss) and loss <= cfg["train"]["loss_explode_factor"] * max(first, 1e-12):
        return
    losses.flush()
    last, bad = snaps.latest(), non_finite_layers(solver.net)
    what = f"loss {'is ' + str(loss) if not np.isfinite(loss) else f'exploded to {loss:.4g}'}"
    if bad:
        what += f" (weights of {', '.join(bad)} are NaN/inf)"
    raise TrainingError(f"{what} at iteration {solver.iter} (first loss {first:.4g}); stopped. Last good "
                        f"snapshot: {last['caffemodel'] if last else 'none yet'}. Lower solver.base_lr "
                        "or check the data.")


def _timed(spent, key, fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    spent[key] += time.perf_counter() - t
    return out


def _loop(cfg, solver, test_iter, snaps, losses, bar):
    """Step to max_iter: log losses, test every test_interval, snapshot every `snapshot` steps; returns
    the seconds spent in steps (with their checks), test passes and snapshots.
    Ctrl-C and SIGTERM set a flag checked between steps, so a stop is always at a snapshot."""
    sc, stop, first = cfg["solver"], {"flag": False}, None
    spent = {"steps": 0.0, "tests": 0.0, "snapshots": 0.0}
    handlers = {s: signal.signal(s, lambda *_: stop.update(flag=True)) for s in (signal.SIGINT, signal.SIGTERM)}
    start = solver.iter
    try:
        while solver.iter < sc["max_iter"]:
            loss = _timed(spent, "steps", train_step, solver, losses)
            first = loss if first is None else first
            _timed(spent, "steps", check_loss, cfg, solver, first, snaps, losses)
            it = solver.iter
            if it % sc["test_interval"] == 0 or it == sc["max_iter"]:
                for phase, value in _timed(spent, "tests", run_test_pass, solver.test_nets[0], test_iter).items():
                    losses.add(it, phase, value)
            bar.set_postfix(loss=f"{loss:.4g}", img_s=f"{(it - start) * sc['batch_size'] / spent['steps']:.1f}")
            bar.update(1)
            if (sc["snapshot"] and it % sc["snapshot"] == 0) or it == sc["max_iter"] or stop["flag"]:
                losses.flush()
                _timed(spent, "snapshots", snaps.take)
            if stop["flag"]:
                raise KeyboardInterrupt
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    return spent


def train_step(solver, losses):
    """One solver step; its loss (times loss_weight) goes to `losses` and is returned."""
    solver.step(1)
    loss = _loss(solver.net)
    losses.add(solver.iter, "train", loss)
    return loss


def _save_final(solver, run, snaps):
    """final.caffemodel: a hard link to the snapshot just taken at this iteration (Caffe writes
    snapshot weights exactly as net.save does), else a fresh save."""
    last = snaps.latest()
    with atomic_path(run / "final.caffemodel") as tmp:
        if last and last["iter"] == solver.iter:
            try:
                os.link(last["caffemodel"], tmp)
                return
            except OSError:         # a filesystem without hard links
                pass
        solver.net.save(str(tmp))


def _finish(cfg, solver, run, prep, losses, device, done, wall, spent, hook_summary=None):
    last = losses.last()
    summary = {"stage": cfg["stage"], "name": cfg["name"], "iterations": solver.iter, "device": device,
               "final_train_loss": last.get("train"), "final_test_loss": last.get("test"),
               "wall_s": round(wall, 1),
               "images_per_s": round(done * cfg["solver"]["batch_size"] / max(wall, 1e-9), 2),
               "step_images_per_s": round(done * cfg["solver"]["batch_size"] / max(spent["steps"], 1e-9), 2),
               "time_s": {k: round(v, 1) for k, v in spent.items()},
               "prepared": str(prep.dir), "weights": str(run / "final.caffemodel")}
    summary.update(hook_summary or {})  # a training hook's own numbers (consistency: its loss, targets kept)
    write_atomic(run / "training.json", json.dumps(summary, indent=1))
    curves = losses.read()
    plot_learning_curves({cfg["name"]: curves}, run / "learning_curves.png", f"{cfg['stage']}: {cfg['name']}")
    stage_plugin(cfg).figures(cfg, run, prep, curves)
    return summary


def train(cfg, gpu=None, resume=False, overwrite=False, log=print):
    """Run one stage to solver.max_iter, then the head's sub-runs; returns the training summary
    (also in training.json). The run folder is locked for the whole run: a second process on it
    fails at once."""
    if gpu is not None:
        set_device(gpu)          # a GPU asked for on a CPU-only build, or absent, fails before any work
    source = None if resume else init_source(cfg)   # a missing weights file stops here
    ensure_dataset(cfg, log)
    prep = prepare(cfg, progress=lambda xs: tqdm(xs, desc="prepare", leave=False), log=log)
    check_finite(prep, stage_splits(cfg))
    with exclusive(Path(cfg["runs_dir"]) / f".{cfg['name']}.lock", f"run folder {run_dir(cfg)}"):
        summary = _train(cfg, gpu, resume, overwrite, log, source, prep)
    for name in subruns(cfg):
        summary[name] = train_subrun(cfg, name, gpu, resume, log)
    return summary


def train_subrun(cfg, name, gpu=None, resume=False, log=print):
    """The head's sub-run `name` of a finetune run (the heatmap's refine net), in <run>/<name>:
    resumed when `resume` and it has a snapshot of the same settings, else trained afresh; its
    summary joins the run's training.json under its name."""
    sub = subruns(cfg)[name]
    saved = run_dir(sub) / "config.yaml"
    resume = resume and (run_dir(sub) / "snapshots" / "latest.json").exists() \
        and training_settings(load_config(saved)) == training_settings(sub)
    got = train(sub, gpu, resume=resume, overwrite=True, log=log)
    path = run_dir(cfg) / "training.json"
    write_atomic(path, json.dumps({**json.loads(path.read_text()), name: got}, indent=1))
    return got


def _train(cfg, gpu, resume, overwrite, log, source, prep):
    caffe = get_caffe()
    device = set_device(gpu)
    run = _open_run(cfg, resume, overwrite)
    say = _logger(run, log)
    solver_path, test_iter = write_run_files(cfg, prep, run, gpu)
    seed_caffe(cfg["solver"]["random_seed"])
    solver = caffe.get_solver(str(solver_path))
    solver.test_nets[0].share_with(solver.net)
    snaps, losses = Snapshots(solver, run, stage_plugin(cfg).STEM, say), LossLog(run / "loss.csv")
    _start(cfg, solver, run, source, snaps, losses, say)
    hooks = stage_plugin(cfg).training_hooks(cfg, solver, prep, say)
    if hooks is not None:
        solver.add_callback(hooks.on_start, hooks.on_gradients_ready)
    _, _, n_train, n_test = stage_data(cfg, prep)
    say(f"  on {device}; data: {prep.dir} ({n_train} train / {n_test} test samples)")
    start, t0 = solver.iter, time.time()
    bar = tqdm(total=cfg["solver"]["max_iter"], initial=solver.iter, desc=cfg["stage"], unit="it",
               dynamic_ncols=True)
    try:
        spent = _loop(cfg, solver, test_iter, snaps, losses, bar)
    except KeyboardInterrupt:
        say(f"interrupted at iteration {solver.iter}; snapshot kept, continue with --resume")
        raise
    finally:
        bar.close()
    _save_final(solver, run, snaps)
    summary = _finish(cfg, solver, run, prep, losses, device, solver.iter - start, time.time() - t0, spent,
                      hooks.summary() if hooks is not None else None)
    say(f"done: {solver.iter} iterations in {summary['wall_s']:.0f} s; final train loss "
        f"{summary['final_train_loss']}, test loss {summary['final_test_loss']}; weights {summary['weights']}")
    return summary
