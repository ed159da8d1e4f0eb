"""Train one stage with a pycaffe solver: pre-training (model.pretext) or fine-tuning (model.head).

    summary = train(cfg, gpu=None, resume=False)

The run folder runs_dir/name holds config.yaml (resolved), train/deploy/solver prototxts, log.txt,
loss.csv (iter, phase, loss), transfer.json (what was copied where), snapshots/ and final.caffemodel.
Loss rows reach loss.csv at each snapshot, together with snapshots/latest.json (written last, by
rename), so `resume=True` restarts exactly from the newest complete snapshot with the CSV cut to it.
A non-finite or exploding loss stops the run naming the iteration; the last good snapshot stays.
"""
import json
import shutil
import signal
import time
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from . import nets
from .atomic import atomic_path, write_atomic
from .backend import caffe_pb2, get_caffe, set_device
from .config import ConfigError, dump_config
from .figures import plot_learning_curves, plot_reconstructions
from .infer import predict, split_data
from .locks import exclusive
from .losslog import LossLog
from .prepare import ensure_dataset, prepare
from .snapshots import Snapshots
from .solver import solver_param, write_solver
from .transfer import TransferError, check_imagenet_weights, copy_layers

ENCODER_CONVS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


class TrainingError(RuntimeError):
    pass


def run_dir(cfg):
    return Path(cfg["runs_dir"]) / cfg["name"]


def stage_splits(cfg):
    return ("cae_train", "cae_test") if cfg["stage"] == "pretrain" else ("reg_train", "reg_test")


def _test_batch(count, wanted):
    """Largest batch <= wanted dividing count, so one test pass sees each sample exactly once."""
    return max(d for d in range(1, min(count, wanted) + 1) if count % d == 0)


def _check_finite(prep, splits):
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
    train_split, test_split = stage_splits(cfg)
    test_count = prep.count(test_split)
    test_batch = _test_batch(test_count, cfg["solver"]["test_batch_size"])
    train_net, deploy = nets.for_config(cfg, _num_landmarks(cfg, prep),
                                        (prep.source(train_split), prep.source(test_split)), test_batch)
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


def init_source(cfg):
    """Where the first weights come from: (file or None, layers, warning). Raises before any work
    when the configured file is missing."""
    m, stage = cfg["model"], cfg["stage"]
    if m["init"] == "scratch":
        return None, [], None
    if m["init"] == "imagenet":
        try:
            warning = check_imagenet_weights(m["imagenet_weights"])
        except TransferError as e:
            raise TrainingError(str(e)) from None
        layers = [l for l in m["copy_layers"] if stage == "finetune" or l in ENCODER_CONVS + ["fc6", "fc7"]]
        return Path(m["imagenet_weights"]), layers, warning
    if stage == "pretrain":
        raise TrainingError("model.init: cae is for finetune configs; a CAE starts from imagenet or scratch")
    if not m["cae_run"]:
        raise TrainingError("model.init: cae needs model.cae_run (the pretrain run folder)")
    source = Path(m["cae_run"]) / "final.caffemodel"
    if not source.exists():
        raise TrainingError(f"CAE checkpoint {source} not found: run the pre-training first "
                            f"(make pretrain, or dentcae pretrain --config ...)")
    return source, m["copy_layers"], None


def init_weights(net, source, layers, warning=None):
    """Copy `layers` of `source` into `net`; returns the transfer report (also for scratch)."""
    if source is None:
        return {"source": "scratch (MSRA/Xavier random initialisation; no ImageNet weights)",
                "copied": {}, "fresh": list(net.params.keys())}
    try:
        report = copy_layers(net, source, layers)
    except TransferError as e:
        raise TrainingError(str(e)) from None
    if warning:
        report["warning"] = warning
    return report


def _loss(net, value=None):
    """The loss the solver minimises: the loss blob times its loss_weight (pycaffe shows it raw)."""
    raw = float(net.blobs["loss"].data if value is None else value)
    return raw * float(net.blob_loss_weights["loss"])


def _bad_params(net):
    """Layers whose weights are no longer finite. Checked after every step: a NaN that reaches the
    next forward pass makes Caffe's max pooling record index -1, and its backward pass then writes
    out of bounds (heap corruption), so training must stop before that step."""
    return [name for name, blobs in net.params.items()
            if not all(np.isfinite(np.add.reduce(b.data, axis=None)) for b in blobs)]


def _test_loss(test_net, test_iter):
    return float(np.mean([_loss(test_net, test_net.forward()["loss"]) for _ in range(test_iter)]))


def _open_run(cfg, resume, overwrite):
    """The run folder, emptied for a fresh start when `overwrite` (or when an interrupted start left
    nothing to resume: no snapshot, no final weights); checks a resume can resume.
    Only runs_dir/name itself is ever deleted, and only when it lies inside runs_dir."""
    run = run_dir(cfg)
    root = Path(cfg["runs_dir"]).resolve()
    if run.resolve().parent != root:
        raise TrainingError(f"run folder {run} is not a folder directly inside runs_dir {root}; refusing")
    resumable = run.exists() and Snapshots(None, run, nets.stage_builder(cfg)[0], log=lambda m: None).latest()
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


def _check_step(cfg, solver, first, snaps, losses):
    """Stop, naming the iteration, when the loss or the weights went bad in the last step."""
    loss, bad = _loss(solver.net), _bad_params(solver.net)
    if bad:
        loss = float("nan")
    if np.isfinite(loss) and loss <= cfg["train"]["loss_explode_factor"] * max(first, 1e-12):
        return
    losses.flush()
    last = snaps.latest()
    what = f"weights of {', '.join(bad)} became NaN/inf" if bad else \
        f"loss {'is ' + str(loss) if not np.isfinite(loss) else f'exploded to {loss:.4g}'}"
    raise TrainingError(f"{what} at iteration {solver.iter} (first loss {first:.4g}); stopped. Last good "
                        f"snapshot: {last['caffemodel'] if last else 'none yet'}. Lower solver.base_lr "
                        "or check the data.")


def _loop(cfg, solver, test_iter, snaps, losses, bar):
    """Step to max_iter: log losses, test every test_interval, snapshot every `snapshot` steps.
    Ctrl-C and SIGTERM set a flag checked between steps, so a stop is always at a snapshot."""
    sc, stop, first = cfg["solver"], {"flag": False}, None
    handlers = {s: signal.signal(s, lambda *_: stop.update(flag=True)) for s in (signal.SIGINT, signal.SIGTERM)}
    start, t0 = solver.iter, time.time()
    try:
        while solver.iter < sc["max_iter"]:
            solver.step(1)
            it, loss = solver.iter, _loss(solver.net)
            losses.add(it, "train", loss)
            first = loss if first is None else first
            _check_step(cfg, solver, first, snaps, losses)
            if it % sc["test_interval"] == 0 or it == sc["max_iter"]:
                losses.add(it, "test", _test_loss(solver.test_nets[0], test_iter))
            bar.set_postfix(loss=f"{loss:.4g}", img_s=f"{(it - start) * sc['batch_size'] / (time.time() - t0):.1f}")
            bar.update(1)
            if (sc["snapshot"] and it % sc["snapshot"] == 0) or it == sc["max_iter"] or stop["flag"]:
                losses.flush()
                snaps.take()
            if stop["flag"]:
                raise KeyboardInterrupt
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def reconstruction_figure(run, prep, path):
    """Input vs reconstruction of a CAE run's first two held-out samples."""
    data = split_data(prep, "cae_test", limit=2)
    recon = predict(Path(run) / "deploy.prototxt", Path(run) / "final.caffemodel", data, batch=len(data))
    mean = prep.meta["mean_bgr"][0]
    plot_reconstructions(data[:, 0] + mean, recon.reshape(data.shape)[:, 0] + mean, path, f"CAE: {Path(run).name}")


def _figures(cfg, run, prep, losses):
    plot_learning_curves({cfg["name"]: losses.read()}, run / "learning_curves.png", f"{cfg['stage']}: {cfg['name']}")
    if cfg["stage"] == "pretrain":
        reconstruction_figure(run, prep, run / "reconstructions.png")


def _finish(cfg, solver, run, prep, losses, device, done, wall):
    with atomic_path(run / "final.caffemodel") as tmp:
        solver.net.save(str(tmp))
    last = losses.last()
    summary = {"stage": cfg["stage"], "name": cfg["name"], "iterations": solver.iter, "device": device,
               "final_train_loss": last.get("train"), "final_test_loss": last.get("test"),
               "wall_s": round(wall, 1),
               "images_per_s": round(done * cfg["solver"]["batch_size"] / max(wall, 1e-9), 2),
               "prepared": str(prep.dir), "weights": str(run / "final.caffemodel")}
    write_atomic(run / "training.json", json.dumps(summary, indent=1))
    _figures(cfg, run, prep, losses)
    return summary


def train(cfg, gpu=None, resume=False, overwrite=False, log=print):
    """Run one stage to solver.max_iter; returns the training summary (also in training.json).
    The run folder is locked for the whole run: a second process on it fails at once."""
    device = set_device(gpu)     # fails before any work on a CPU-only build asked for a GPU
    source = None if resume else init_source(cfg)   # a missing weights file stops here
    ensure_dataset(cfg, log)
    prep = prepare(cfg, progress=lambda xs: tqdm(xs, desc="prepare", leave=False), log=log)
    _check_finite(prep, stage_splits(cfg))
    with exclusive(Path(cfg["runs_dir"]) / f".{cfg['name']}.lock", f"run folder {run_dir(cfg)}"):
        return _train(cfg, gpu, resume, overwrite, log, device, source, prep)


def _train(cfg, gpu, resume, overwrite, log, device, source, prep):
    caffe = get_caffe()
    run = _open_run(cfg, resume, overwrite)
    say = _logger(run, log)
    solver_path, test_iter = write_run_files(cfg, prep, run, gpu)
    caffe.set_random_seed(int(cfg["solver"]["random_seed"]))
    solver = caffe.get_solver(str(solver_path))
    solver.test_nets[0].share_with(solver.net)
    snaps, losses = Snapshots(solver, run, nets.stage_builder(cfg)[0], say), LossLog(run / "loss.csv")
    _start(cfg, solver, run, source, snaps, losses, say)
    say(f"  on {device}; data: {prep.dir} ({prep.count(stage_splits(cfg)[0])} train / "
        f"{prep.count(stage_splits(cfg)[1])} test samples)")
    start, t0 = solver.iter, time.time()
    bar = tqdm(total=cfg["solver"]["max_iter"], initial=solver.iter, desc=cfg["stage"], unit="it",
               dynamic_ncols=True)
    try:
        _loop(cfg, solver, test_iter, snaps, losses, bar)
    except KeyboardInterrupt:
        say(f"interrupted at iteration {solver.iter}; snapshot kept, continue with --resume")
        raise
    finally:
        bar.close()
    summary = _finish(cfg, solver, run, prep, losses, device, solver.iter - start, time.time() - t0)
    say(f"done: {solver.iter} iterations in {summary['wall_s']:.0f} s; final train loss "
        f"{summary['final_train_loss']}, test loss {summary['final_test_loss']}; weights {summary['weights']}")
    return summary
