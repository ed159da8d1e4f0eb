"""Train one stage with a pycaffe solver: CAE pre-training or landmark fine-tuning.

    summary = train(cfg, gpu=None, resume=False)

The run folder runs_dir/name holds config.yaml (resolved), train/deploy/solver prototxts, log.txt,
loss.csv (iter, phase, loss), transfer.json (what was copied where), snapshots/ and final.caffemodel.
Loss rows reach loss.csv at each snapshot, together with snapshots/latest.json (written last, by
rename), so `resume=True` restarts exactly from the newest complete snapshot with the CSV cut to it.
A non-finite or exploding loss stops the run naming the iteration; the last good snapshot stays.
"""
import csv
import json
import os
import signal
import time
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from . import nets
from .backend import get_caffe, set_device
from .config import dump_config
from .prepare import ensure_dataset, prepare
from .solver import solver_param, write_solver
from .transfer import TransferError, check_imagenet_weights, copy_layers

ENCODER_CONVS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


class TrainingError(RuntimeError):
    pass


def run_dir(cfg):
    return Path(cfg["runs_dir"]) / cfg["name"]


def _test_batch(count, wanted):
    """Largest batch <= wanted dividing count, so one test pass sees each sample exactly once."""
    return max(d for d in range(1, min(count, wanted) + 1) if count % d == 0)


def _check_finite(prep, splits):
    for split in splits:
        with h5py.File(prep.h5(split), "r") as f:
            for key in ("data", "label") if split.startswith("reg") else ("data",):
                if not np.isfinite(f[key][...]).all():
                    raise TrainingError(f"{prep.h5(split)}: dataset '{key}' holds NaN or inf; "
                                        "refusing to train on it")


def write_run_files(cfg, prep, run, gpu=None):
    """Resolved config, train/deploy nets and solver prototxt of a stage; returns the solver path."""
    sc, size, freeze = cfg["solver"], prep.meta["input_size"], cfg["model"]["freeze"]
    stage = cfg["stage"]
    splits = ("cae_train", "cae_test") if stage == "pretrain" else ("reg_train", "reg_test")
    test_batch = _test_batch(prep.count(splits[1]), sc["test_batch_size"])
    kw = dict(size=size, batch=sc["batch_size"], test_batch=test_batch, freeze=freeze,
              dropout=cfg["model"]["dropout"])
    if stage == "pretrain":
        train_net = nets.cae(train=[prep.source(s) for s in splits], **kw)
        deploy = nets.cae(size=size, deploy=True)
    else:
        k = cfg["model"]["num_landmarks"] or prep.meta["num_landmarks"]
        train_net = nets.regressor(2 * k, train=[prep.source(s) for s in splits], **kw)
        deploy = nets.regressor(2 * k, size=size, deploy=True)
    (run / "snapshots").mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run / "config.yaml")
    nets.write_net(train_net, run / "train.prototxt")
    nets.write_net(deploy, run / "deploy.prototxt")
    sp = solver_param(sc, (run / "train.prototxt").resolve(), (run / "snapshots" / stage).resolve(),
                      prep.count(splits[1]) // test_batch, gpu)
    sp.snapshot = 0          # snapshots are taken by this runner (see module docstring)
    sp.test_interval = sc["max_iter"] + 1  # and so are tests
    sp.display = 0
    return write_solver(sp, run / "solver.prototxt"), prep.count(splits[1]) // test_batch


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


class _Snapshots:
    """Runner-side snapshots: caffemodel + solverstate, then latest.json by rename; keeps the newest."""

    def __init__(self, solver, run, stage):
        self.solver, self.dir, self.stage = solver, run / "snapshots", stage
        self.marker = self.dir / "latest.json"

    def latest(self):
        return json.loads(self.marker.read_text()) if self.marker.exists() else None

    def take(self):
        it = self.solver.iter
        self.solver.snapshot()
        base = self.dir / f"{self.stage}_iter_{it}"
        state = {"iter": it, "caffemodel": str(base) + ".caffemodel", "solverstate": str(base) + ".solverstate"}
        tmp = self.marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.marker)
        for p in self.dir.glob(f"{self.stage}_iter_*"):
            if not p.name.startswith(f"{self.stage}_iter_{it}."):
                p.unlink()
        return state


def _write_rows(path, rows):
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if new:
            w.writerow(["iter", "phase", "loss"])
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def _truncate_rows(path, last_iter):
    if not path.exists():
        return
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["iter"]) <= last_iter]
    path.unlink()
    _write_rows(path, [[r["iter"], r["phase"], r["loss"]] for r in rows])


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


def train(cfg, gpu=None, resume=False, overwrite=False, log=print):
    """Run one stage to solver.max_iter; returns the training summary (also in training.json)."""
    caffe = get_caffe()
    device = set_device(gpu)     # fails before any work on a CPU-only build asked for a GPU
    source = None if resume else init_source(cfg)   # a missing weights file stops here
    ensure_dataset(cfg, log)
    prep = prepare(cfg, progress=lambda xs: tqdm(xs, desc="prepare", leave=False), log=log)
    run, stage, sc = run_dir(cfg), cfg["stage"], cfg["solver"]
    splits = ("cae_train", "cae_test") if stage == "pretrain" else ("reg_train", "reg_test")
    _check_finite(prep, splits)
    marker = run / "snapshots" / "latest.json"
    if resume and not marker.exists():
        raise TrainingError(f"--resume: no complete snapshot in {run / 'snapshots'} to resume from")
    if not resume and run.exists() and any(run.iterdir()):
        if not overwrite:
            raise TrainingError(f"run folder {run} exists: pass --resume to continue it or "
                                "--overwrite to start again")
        import shutil
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)

    def say(msg):
        log(msg)
        with (run / "log.txt").open("a") as fh:
            fh.write(msg + "\n")

    solver_path, test_iter = write_run_files(cfg, prep, run, gpu)
    caffe.set_random_seed(int(sc["random_seed"]))
    solver = caffe.get_solver(str(solver_path))
    test_net = solver.test_nets[0]
    test_net.share_with(solver.net)
    snaps, losses = _Snapshots(solver, run, stage), run / "loss.csv"
    if resume:
        state = snaps.latest()
        solver.restore(state["solverstate"])
        _truncate_rows(losses, state["iter"])
        say(f"resumed {run} at iteration {solver.iter} from {state['solverstate']}")
    else:
        report = init_weights(solver.net, *source)
        (run / "transfer.json").write_text(json.dumps(report, indent=1))
        say(f"{stage} {cfg['name']} on {device}: init {report['source']}")
        say(f"  copied: {', '.join(report['copied']) or 'nothing'}; fresh: {', '.join(report['fresh'])}")
        if cfg["model"]["freeze"]:
            say(f"  frozen: {', '.join(cfg['model']['freeze'])}")
        if cfg["train"]["save_init"]:
            solver.net.save(str(run / "init.caffemodel"))
    say(f"  data: {prep.dir} ({prep.count(splits[0])} train / {prep.count(splits[1])} test samples)")

    stop = {"flag": False}
    # Ctrl-C and kill (SIGTERM) set a flag checked between steps: the run stops at a consistent state
    handlers = {s: signal.signal(s, lambda *_: stop.update(flag=True)) for s in (signal.SIGINT, signal.SIGTERM)}
    pending, first, start, t0 = [], None, solver.iter, time.time()
    bar = tqdm(total=sc["max_iter"], initial=solver.iter, desc=stage, unit="it", dynamic_ncols=True)
    try:
        while solver.iter < sc["max_iter"]:
            solver.step(1)
            it, loss = solver.iter, _loss(solver.net)
            pending.append([it, "train", f"{loss:.8g}"])
            first = loss if first is None else first
            bad = _bad_params(solver.net)
            if bad:
                loss = float("nan")
            if not np.isfinite(loss) or loss > cfg["train"]["loss_explode_factor"] * max(first, 1e-12):
                _write_rows(losses, pending)
                last = snaps.latest()
                what = f"weights of {', '.join(bad)} became NaN/inf" if bad else \
                    f"loss {'is ' + str(loss) if not np.isfinite(loss) else f'exploded to {loss:.4g}'}"
                raise TrainingError(
                    f"{what} at iteration {it} (first loss {first:.4g}); stopped. Last good snapshot: "
                    f"{last['caffemodel'] if last else 'none yet'}. Lower solver.base_lr or check the data.")
            if it % sc["test_interval"] == 0 or it == sc["max_iter"]:
                pending.append([it, "test", f"{_test_loss(test_net, test_iter):.8g}"])
            done = it - start
            bar.set_postfix(loss=f"{loss:.4g}", img_s=f"{done * sc['batch_size'] / (time.time() - t0):.1f}")
            bar.update(1)
            if (sc["snapshot"] and it % sc["snapshot"] == 0) or it == sc["max_iter"] or stop["flag"]:
                _write_rows(losses, pending)
                pending = []
                snaps.take()
            if stop["flag"]:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        say(f"interrupted at iteration {solver.iter}; snapshot kept, continue with --resume")
        raise
    finally:
        bar.close()
        for s, h in handlers.items():
            signal.signal(s, h)
    tmp = run / "final.caffemodel.tmp"
    solver.net.save(str(tmp))
    os.replace(tmp, run / "final.caffemodel")
    rows = list(csv.DictReader(losses.open()))
    last = {ph: float([r for r in rows if r["phase"] == ph][-1]["loss"]) for ph in ("train", "test")
            if any(r["phase"] == ph for r in rows)}
    wall = time.time() - t0
    summary = {"stage": stage, "name": cfg["name"], "iterations": solver.iter, "device": device,
               "final_train_loss": last.get("train"), "final_test_loss": last.get("test"),
               "wall_s": round(wall, 1),
               "images_per_s": round((solver.iter - start) * sc["batch_size"] / max(wall, 1e-9), 2),
               "prepared": str(prep.dir), "weights": str(run / "final.caffemodel")}
    (run / "training.json").write_text(json.dumps(summary, indent=1))
    from .figures import plot_learning_curves, plot_reconstructions
    plot_learning_curves({cfg["name"]: run}, run / "learning_curves.png", f"{stage}: {cfg['name']}")
    if stage == "pretrain":
        plot_reconstructions(run, prep, run / "reconstructions.png")
    say(f"done: {solver.iter} iterations in {wall:.0f} s; final train loss {summary['final_train_loss']}, "
        f"test loss {summary['final_test_loss']}; weights {run / 'final.caffemodel'}")
    return summary
