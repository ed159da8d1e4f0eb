#!/usr/bin/env python
"""`make bench`: how fast dentcae trains, against the bound of Caffe's own forward+backward.

For the demo's two stages (the CAE, configs/phantom_cae_pretrain.yaml, and the landmark regressor,
configs/phantom_cae_finetune.yaml started from scratch), on the SYNTHETIC phantom:
  bound    `caffe time` on the run's own train.prototxt: forward+backward at the config's batch;
  runner   dentcae's training step (pycaffe solver step with its update, loss logging and checks),
           averaged over --iterations steps after one warm-up step;
  ratio    runner / bound (1.0: the solver update and the runner cost nothing);
and, per step, what the update and checks cost beyond forward+backward, one test pass and one
snapshot. --gpu N adds the same rows on CUDA device N; --caffe-time-only times the deploy nets
(CAE, regressor, heatmap, BVLC AlexNet as a reference) at batch 16 instead, CPU and --gpu.
Prints a table and writes results/bench.json. Speed targets live here, never in tests.
The heatmap head's first net and refine net (configs/ours/heatmap_scratch.yaml) are timed the same
way, and `dentcae predict`'s seconds per image (first net, refine net, the rest) with Caffe and
ONNX Runtime on one ISBI-sized X-ray (an ISBI Test1 image when ../shared has it).
Targets (issue 14): runner/bound >= 0.85 for the CAE and >= 0.9 for the regressor; (issue 23)
>= 0.85 for the heatmap and refine nets, and predict <= 1 s per image on 2 cores.
"""
import argparse
import copy
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dentcae.config import load_config
from dentcae.data.prepare import ensure_dataset, prepare
from dentcae.nets.alexnet import classifier, write_net
from dentcae.registry import HEADS, PRETEXTS, stage_plugin
from dentcae.runtime.atomic import write_atomic
from dentcae.runtime.backend import CaffeUnavailable, get_caffe, set_device
from dentcae.train import loop as train
from dentcae.train.losslog import LossLog
from dentcae.train.runfiles import write_run_files
from dentcae.train.snapshots import Snapshots

STAGES = {"CAE": ("configs/phantom_cae_pretrain.yaml", None), "regressor": ("configs/phantom_cae_finetune.yaml", None),
          "heatmap": ("configs/ours/heatmap_scratch.yaml", None), "refine": ("configs/ours/heatmap_scratch.yaml", "refine")}
PREDICT_CONFIG = "configs/ours/heatmap_scratch.yaml"
ISBI_IMAGE = Path("../shared/data/isbi2015-ceph-400/RawImage/Test1Data/151.png")
MODEL = load_config("configs/ours/heatmap_base.yaml")["model"]
NETS = {"CAE (224)": lambda: PRETEXTS.get("cae").build(0, MODEL, size=224, deploy=True),
        "regressor (224)": lambda: HEADS.get("regression").build(4, MODEL, size=224, deploy=True),
        "heatmap (256, 19 landmarks)": lambda: HEADS.get("heatmap").build(19, MODEL, size=256, deploy=True),
        "BVLC AlexNet (227, reference)": lambda: classifier(size=227, deploy=True)}


def caffe_time(model, iterations, gpu=None):
    """Average forward and backward ms of `caffe time` on a prototxt (the tool built with this pycaffe)."""
    tool = Path(get_caffe().__file__).resolve().parents[2] / "bin" / "caffe"
    if not tool.exists():
        tool = Path(sys.executable).parent / "caffe"
    device = [] if gpu is None else [f"-gpu={gpu}"]
    p = subprocess.run([str(tool), "time", f"-model={model}", f"-iterations={iterations}", *device],
                       capture_output=True, text=True, env={"GLOG_logtostderr": "1", "PATH": "/usr/bin:/bin"})
    if p.returncode:
        raise RuntimeError(f"caffe time {model} failed:\n{p.stderr[-2000:]}")
    fwd = float(re.search(r"Average Forward pass: ([\d.]+) ms", p.stderr).group(1))
    bwd = float(re.search(r"Average Backward pass: ([\d.]+) ms", p.stderr).group(1))
    return fwd, bwd


def _timed(fn, n=1):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def _runner_steps(cfg, solver, run, n):
    """Seconds per step of the runner's own step: solver.step(1), loss logging and loss check."""
    snaps = Snapshots(solver, run, stage_plugin(cfg).STEM, log=lambda m: None)
    losses = LossLog(run / "loss.csv")
    first = train.train_step(solver, losses)            # warm-up: buffers are allocated here

    def one():
        train.train_step(solver, losses)
        train.check_loss(cfg, solver, first, snaps, losses)
    return _timed(one, n), snaps


def bench_stage(label, config, iterations, tmp, gpu=None, subrun=None):
    where = "cpu" if gpu is None else f"gpu{gpu}"
    cfg = load_config(config, [f"runs_dir={tmp}", "model.init=scratch", f"name=bench_{label.lower()}_{where}"])
    if subrun:                                   # a head's sub-run (the refine net): its own config
        cfg = HEADS.get(cfg["model"]["head"]).subruns(cfg)[subrun]
        cfg["runs_dir"], cfg["name"] = str(tmp), f"bench_{label.lower()}_{where}"
    ensure_dataset(cfg, log=lambda m: None)
    prep = prepare(cfg, log=lambda m: None)
    run = Path(tmp) / cfg["name"]
    run.mkdir(parents=True)
    solver_path, test_iter = write_run_files(cfg, prep, run, gpu)
    batch = cfg["solver"]["batch_size"]
    fwd, bwd = caffe_time(run / "train.prototxt", iterations, gpu)
    set_device(gpu)
    solver = get_caffe().get_solver(str(solver_path))
    solver.test_nets[0].share_with(solver.net)
    step, snaps = _runner_steps(cfg, solver, run, iterations)
    net = solver.net
    fwdbwd = _timed(lambda: (net.forward(), net.backward()), iterations)   # the same passes, from pycaffe
    test = _timed(lambda: train.run_test_pass(solver.test_nets[0], test_iter))
    snapshot = _timed(snaps.take)
    size = sum(f.stat().st_size for f in (run / "snapshots").glob("*_iter_*"))
    params = sum(b.data.size for blobs in net.params.values() for b in blobs)
    bound, runner = batch * 1000 / (fwd + bwd), batch / step
    return {"stage": label, "device": where, "config": config + (f" ({subrun} sub-run)" if subrun else ""), "batch": batch, "params_millions": round(params / 1e6, 1),
            "bound_images_per_s": round(bound, 2), "runner_images_per_s": round(runner, 2),
            "ratio": round(runner / bound, 3),
            "caffe_time_forward_ms": fwd, "caffe_time_backward_ms": bwd,
            "update_and_checks_ms": round((step - fwdbwd) * 1000), "test_pass_s": round(test, 2),
            "snapshot_s": round(snapshot, 2), "snapshot_mb": round(size / 2 ** 20)}


def blas():
    """The BLAS library this process's Caffe runs on (from the loaded shared objects)."""
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    found = sorted({Path(line.split()[-1]).resolve().as_posix() for line in maps.splitlines()
                    if re.search(r"lib(open)?blas|libmkl", line) and ".libs/" not in line and "scipy" not in line})
    return ", ".join(found) or "unknown"


HEADER = (f"{'stage':10s} {'device':6s} {'batch':>5s} {'bound img/s':>12s} {'runner img/s':>13s} {'ratio':>6s} "
          f"{'update+checks':>14s} {'test pass':>10s} {'snapshot':>16s}")


def _print(r):
    print(f"{r['stage']:10s} {r['device']:6s} {r['batch']:5d} {r['bound_images_per_s']:12.2f} {r['runner_images_per_s']:13.2f} "
          f"{r['ratio']:6.2f} {r['update_and_checks_ms']:11d} ms {r['test_pass_s']:8.2f} s "
          f"{r['snapshot_s']:6.1f} s ({r['snapshot_mb']} MB)", flush=True)


def time_nets(iterations, gpu, tmp, batch=16):
    """`caffe time` of the deploy nets at batch 16: CPU, and GPU `gpu` beside it when given."""
    rows = []
    for name, make in NETS.items():
        net = make()
        net.layer[0].input_param.shape[0].dim[0] = batch
        write_net(net, Path(tmp) / "net.prototxt")
        row = {"net": name, "batch": batch}
        for where, device in [("cpu", None)] + ([(f"gpu{gpu}", gpu)] if gpu is not None else []):
            fwd, bwd = caffe_time(Path(tmp) / "net.prototxt", iterations, device)
            row[where] = {"forward_ms": fwd, "backward_ms": bwd, "images_per_s": round(batch * 1000 / (fwd + bwd), 2)}
        speed = "".join(f"  {w}: {r['forward_ms']:.0f} + {r['backward_ms']:.0f} ms, {r['images_per_s']:.1f} img/s"
                        for w, r in row.items() if isinstance(r, dict))
        print(f"{name:30s}{speed}", flush=True)
        rows.append(row)
    return rows


def _timed_forwards(detector):
    """Wrap a Detector's nets so that each call adds its seconds to a per-net total."""
    spent = {name: 0.0 for _, _, forwards in detector.runners for name in forwards}
    for _, _, forwards in detector.runners:
        for name, forward in list(forwards.items()):
            def timed(x, name=name, forward=forward):
                t = time.perf_counter()
                out = forward(x)
                spent[name] += time.perf_counter() - t
                return out
            forwards[name] = timed
    return spent


# The test-time views of the benchmark's ensemble (docs/inference.md), inside training's augmentation
# (rotate +-10 deg, scale +-10 %): the first net at 256 px, the refine net in 128 px patches.
VIEWS = "[{shift: [2, 2]}, {rotate: 4, scale: 1.04}, {rotate: -4, scale: 0.96}]"
REFINE_VIEWS = "[{rotate: 5}]"


def _predict_row(label, detector, grey, image, iterations):
    detector(grey)                                       # warm-up
    spent = _timed_forwards(detector)
    total = _timed(lambda: detector(grey), iterations)
    nets = {f"{k}_net_s": round(v / iterations, 3) for k, v in spent.items()}
    row = {"predictor": label, "seconds_per_image": round(total, 3), **nets,
           "rest_s": round(total - sum(spent.values()) / iterations, 3),
           "image": f"{image.name} ({grey.shape[1]} x {grey.shape[0]} px)"}
    print(f"predict {label:38s} {total:6.3f} s/image  " + "  ".join(f"{k} {v:.3f}" for k, v in nets.items())
          + f"  rest {row['rest_s']:.3f} s  ({row['image']}; target <= 1 s)", flush=True)
    return row


def bench_predict(tmp, iterations):
    """Seconds per image of `dentcae predict`'s detector (first net, refine net, the rest: reading
    aside, resizing, decoding, patches), Caffe and ONNX Runtime on the CPU, on one ISBI-sized X-ray:
    one net as trained, and an ensemble of 3 with the benchmark's test-time views (VIEWS). The nets
    are PREDICT_CONFIG's, trained 2 iterations on the phantom: speed does not depend on what the
    weights learned (the ensemble's three members are one run three times, as fast as three runs)."""
    from dentcae.data.dataset import read_image
    from dentcae.deploy.bundle import export_bundle
    from dentcae.config import with_overrides
    from dentcae.inference.detector import Detector
    from dentcae.inference.model import Model
    short = [f"runs_dir={tmp}", "name=bench_predict", "solver.max_iter=2", "solver.snapshot=2", "solver.test_interval=2",
             "model.refine.max_iter=2", "model.init=scratch"]
    cfg = load_config(PREDICT_CONFIG, short)
    train.train(cfg, log=lambda m: None)
    model = export_bundle(Path(tmp) / "bench_predict", Path(tmp) / "bundle", onnx=True)
    views = [f"test_time.views={VIEWS}", f"model.refine.views={REFINE_VIEWS}"]
    members = [copy.copy(model.members[0]) for _ in range(3)]
    for m in members:
        m.cfg = with_overrides(copy.deepcopy(m.cfg), views)              # test-time keys: nothing retrains
    ensemble = Model(model.path, model.info, members)
    image = ISBI_IMAGE if ISBI_IMAGE.exists() else sorted(Path(cfg["dataset"]["root"]).glob("*.png"))[0]
    grey = read_image(image)
    rows = [_predict_row(f"one net, {backend}", Detector(model, backend), grey, image, iterations)
            for backend in ("caffe", "onnx")]
    rows += [_predict_row(f"3 nets x views, {backend}", Detector(ensemble, backend), grey, image, iterations)
             for backend in ("caffe", "onnx")]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=6, help="timed steps per measurement (default 6)")
    ap.add_argument("--gpu", type=int, default=None, metavar="N", help="also measure on CUDA device N")
    ap.add_argument("--caffe-time-only", action="store_true",
                    help="only `caffe time` of the CAE, regressor, heatmap and AlexNet nets (CPU, and --gpu)")
    ap.add_argument("--out", default="results/bench.json", help="where to write the numbers")
    args = ap.parse_args()
    try:
        set_device(args.gpu)               # a GPU asked for but absent fails here, before any work
    except CaffeUnavailable as e:
        sys.exit(f"make bench: {e}")
    set_device(None)
    info = {"machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
            "blas": blas(), "data": "SYNTHETIC phantom (make data)", "iterations": args.iterations}
    print(f"make bench: CPU ({info['machine']}), BLAS {info['blas']}; {info['data']}")
    with tempfile.TemporaryDirectory(prefix="dentcae-bench-") as tmp:
        if args.caffe_time_only:
            info["caffe_time"] = time_nets(args.iterations, args.gpu, tmp)
        else:
            info["stages"] = []
            print(HEADER)
            for gpu in [None] + ([args.gpu] if args.gpu is not None else []):
                for label, (config, subrun) in STAGES.items():
                    info["stages"].append(bench_stage(label, config, args.iterations, tmp, gpu, subrun))
                    _print(info["stages"][-1])
            info["predict"] = bench_predict(tmp, args.iterations)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(args.out), json.dumps(info, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
