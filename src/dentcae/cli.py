"""`dentcae VERB ...`: one verb per pipeline stage.

    dentcae doctor                          check the Caffe build and the Python stack
    dentcae synth --out DIR                 write the synthetic phantom dataset
    dentcae import isbi2015|labelme SRC --out DIR   convert public formats into a dataset folder
    dentcae prepare --config C              preprocess a dataset into cached HDF5 splits
    dentcae prototxt --config C --out DIR   write the nets and solvers a config trains
    dentcae pretrain --config C             unsupervised pre-training (model.pretext: cae, augment)
    dentcae finetune --config C             landmark head fine-tuning (model.head: regression, heatmap)
    dentcae evaluate [CHECKPOINT] [--config C] radial errors in mm, predictions.csv, summary.json
    dentcae table configs/paper/table2.yaml the paper's tables from configs, ours beside theirs
    dentcae export RUN --out BUNDLE [--onnx] a trained detector as one self-contained folder
    dentcae predict MODEL INPUT... --out DIR landmarks, confidence, measurements on new X-rays
    dentcae pseudo-label RUN [RUN ...] --out DIR   a dataset with the teachers' trusted labels on unlabelled images
    dentcae select DATASET --budget N --out F.csv  which unlabelled X-rays to label first
"""
import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, load_config, with_overrides
from .data.dataset import DataError
from .annotation.commands import add_verbs as add_annotation_verbs
from .deploy.commands import add_verbs as add_deploy_verbs
from .runtime.backend import CaffeUnavailable
from .unlabelled.commands import add_verbs as add_unlabelled_verbs


def _add_config(p, required=True):
    p.add_argument("--config", required=required, help="YAML config (configs/...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set solver.base_lr=0.0005 (repeatable)")


def _add_train(p):
    _add_config(p)
    p.add_argument("--gpu", type=int, default=None, metavar="N", help="train on CUDA device N")
    p.add_argument("--resume", action="store_true", help="continue from the newest snapshot")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")


def cmd_doctor(args):
    import numpy
    import google.protobuf
    from .runtime.backend import build_info
    info = build_info()
    print(f"caffe      {info['caffe_version']} from {info['caffe_path']}")
    print(f"build      {info['mode']}, {info['layer_types']} layer types "
          f"({'all' if info['has_bvlc_layers'] else 'NOT all'} BVLC layers dentcae uses)")
    if info["mode"] != "CPU-only":
        devices = "; ".join(f"{i}: {name}, {mib / 1024:.0f} GiB" for i, name, mib in info["devices"])
        print(f"devices    {devices or 'no CUDA device (nvidia-smi finds none): --gpu will refuse'}")
    print(f"python     {info['python']}; numpy {numpy.__version__}; protobuf {google.protobuf.__version__}")
    import os
    blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
    threads = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS") if k in os.environ}
    print(f"blas       caffe: Debian OpenBLAS (pthread), OpenMP for the Adam update; numpy: {blas.get('name')} {blas.get('version')}; "
          f"threads: {threads or f'unset, so all {os.cpu_count()} cores'}")
    from .runtime.packages import LOCK, against_lock
    differ, pinned = against_lock()
    shown = ", ".join(f"{n} {have or 'missing'} (pinned {want})" for n, have, want in differ[:8])
    print(f"packages   {pinned - len(differ)} of {pinned} as {LOCK.name} pins" if pinned
          else "packages   no constraints.txt here (not a checkout): versions unchecked",
          f"; differ: {shown}{' ...' if len(differ) > 8 else ''} (make venv installs the pins)" if differ else "", sep="")
    if not info["has_bvlc_layers"]:
        print("doctor: FAIL: this Caffe lacks layer types dentcae needs", file=sys.stderr)
        return 1
    print("doctor: ok")
    return 0


def cmd_synth(args):
    from .data.phantom import write_phantom
    out = write_phantom(args.out, args.images, args.annotated, args.seed)
    print(f"wrote {args.images} SYNTHETIC images ({args.annotated} annotated) to {out}")
    return 0


def cmd_import(args):
    from .data.importers import import_isbi2015, import_labelme
    if args.format == "isbi2015":
        import_isbi2015(args.src, args.out, spacing=args.spacing, annotator=args.annotator,
                        overwrite=args.overwrite, strict=args.strict)
    else:
        split = lambda text: [x.strip() for x in text.split(",") if x.strip()] if text else None  # noqa: E731
        import_labelme(args.src, args.out, split(args.landmarks), args.spacing, names=split(args.names),
                       skip_bad=args.skip_bad, overwrite=args.overwrite, strict=args.strict)
    return 0


def _add_import(sub):
    p = sub.add_parser("import", help="convert ISBI 2015 or LabelMe annotations into a dataset folder")
    fmt = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    isbi = fmt.add_parser("isbi2015", help="the ISBI 2015 cephalometric challenge layout "
                                          "(RawImage/*/NNN.bmp|png, AnnotationsByMD/400_*/NNN.txt)")
    isbi.add_argument("--spacing", type=float, default=0.1,
                      help="mm per pixel of the images as given (default 0.1, the challenge's originals)")
    isbi.add_argument("--annotator", choices=["senior", "junior", "mean"], default="senior",
                      help="whose landmarks train and test (senior: the challenge's ground truth; mean: the "
                           "midpoint of both); with both folders present, both also go to annotations/")
    lm = fmt.add_parser("labelme", help="LabelMe JSON files with point shapes")
    lm.add_argument("--landmarks", required=True, metavar="NAME,NAME,...", help="point labels to keep, in order")
    lm.add_argument("--names", default=None, metavar="NAME,NAME,...", help="rename them (same order)")
    lm.add_argument("--spacing", type=float, required=True, help="mm per pixel")
    lm.add_argument("--skip-bad", action="store_true",
                    help="keep a file with a missing/duplicate label as an unannotated image (import.json says why)")
    for q in (isbi, lm):
        q.add_argument("src", help="the folder to read")
        q.add_argument("--out", required=True, help="dataset folder to write: new or empty, and outside SRC")
        q.add_argument("--overwrite", action="store_true",
                       help="replace an --out that an earlier `dentcae import` wrote (it holds import.json)")
        q.add_argument("--strict", action="store_true",
                       help="refuse images without landmarks and landmarks without images instead of counting them")
        q.set_defaults(fn=cmd_import)


def cmd_prepare(args):
    from tqdm import tqdm
    from .data.prepare import ensure_dataset, prepare
    cfg = load_config(args.config, args.set)
    if args.skip_bad:
        cfg["dataset"]["skip_bad"] = True
    ensure_dataset(cfg)
    prep = prepare(cfg, progress=lambda xs: tqdm(xs, desc="prepare"))
    print(f"prepared {prep.dir}: {json.dumps(prep.meta['counts'])}")
    if prep.meta["skipped"]:
        print(f"skipped {len(prep.meta['skipped'])} images (see {prep.dir / 'prepared.json'})")
    return 0


def cmd_prototxt(args):
    from .train.stages import write_config_prototxts
    for path in write_config_prototxts(load_config(args.config, args.set), Path(args.out),
                                       num_landmarks=args.num_landmarks):
        print(path)
    return 0


def cmd_train(args):
    from .train.loop import train
    cfg = load_config(args.config, args.set)
    if cfg["stage"] != args.verb:
        raise ConfigError(f"{args.config} is a '{cfg['stage']}' config; use `dentcae {cfg['stage']}`")
    train(cfg, gpu=args.gpu, resume=args.resume, overwrite=args.overwrite)
    return 0


def cmd_evaluate(args):
    from .evaluation.evaluate import evaluate_checkpoint, resolve_checkpoint
    from .inference.bundles import is_bundle, load_bundle
    from .train.runfiles import run_dir
    cfg = load_config(args.config, args.set) if args.config else None
    if cfg is None and args.set and args.checkpoint:     # the first run's (or the bundle's) own config, overridden
        cfg = with_overrides(load_bundle(args.checkpoint[0]).cfg, args.set) if is_bundle(args.checkpoint[0]) \
            else load_config(resolve_checkpoint(args.checkpoint[0])[0] / "config.yaml", args.set)
    if not args.checkpoint and cfg is None:
        raise ConfigError("give a CHECKPOINT (run folder or .caffemodel), or --config to score its run")
    checkpoint = args.checkpoint if args.checkpoint else [run_dir(cfg)]
    summary = evaluate_checkpoint(cfg, checkpoint, out=args.out, gpu=args.gpu, test_set=args.split)
    print(summary["table_md"])
    print(f"wrote {summary['out']}/summary.json, predictions.csv, results.md")
    return 0


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"wants a whole number >= 1, got {text!r}")
    return value


def _device_list(text):
    try:
        devices = [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus wants device numbers like 0,1,2, got {text!r}") from None
    if not devices or len(set(devices)) != len(devices):
        raise argparse.ArgumentTypeError(f"--gpus wants distinct device numbers like 0,1,2, got {text!r}")
    return devices


def cmd_table(args):
    from .tables.run import run_table
    if args.cpus_per_job is not None and args.ray is None:
        raise ConfigError("--cpus-per-job applies to --ray jobs only; add --ray (or leave it out)")
    if args.arms == []:
        raise ConfigError("--arms names no arm; give the table's arm keys, e.g. --arms scratch,pseudo")
    result = run_table(args.table, repeats=args.repeats, gpu=args.gpu, out=args.out, overrides=args.set,
                       preset=args.preset, gpus=args.gpus, only=args.arms, ray=args.ray,
                       cpus_per_job=args.cpus_per_job, overwrite=args.overwrite)
    print(Path(result["markdown"]).read_text())
    return 0


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="radial errors (mm) of a checkpoint, or an ensemble of runs, on the test split",
                       description="Score a run (or a .caffemodel inside one) on its test split; several run folders "
                       "of the same landmarks are scored as one ensemble (their landmarks averaged; give --out). "
                       "--set changes test-time keys only (test_time.views, model.refine.views, ...): re-scores, "
                       "retrains nothing.")
    p.add_argument("checkpoint", nargs="*", default=None,
                   help="a .caffemodel, finetune run folders (each uses final.caffemodel) or one bundle; "
                        "default: the run folder of --config")
    _add_config(p, required=False)
    p.add_argument("--split", default=None, metavar="TEST_SET",
                   help="score one test set only (test1, test2, holdout, ...; default: every test sample)")
    p.add_argument("--out", default=None, help="output folder (default: the run folder, or <run>/eval_<TEST_SET>)")
    p.add_argument("--gpu", type=int, default=None, metavar="N")
    p.set_defaults(fn=cmd_evaluate)


def build_parser():
    ap = argparse.ArgumentParser(prog="dentcae", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    sub.add_parser("doctor", help="check the Caffe build and the Python stack").set_defaults(fn=cmd_doctor)
    p = sub.add_parser("synth", help="write the synthetic dental phantom dataset")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--images", type=int, default=108, help="number of images (default 108, as the paper)")
    p.add_argument("--annotated", type=int, default=54, help="how many get landmarks (default 54)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_synth)
    _add_import(sub)
    p = sub.add_parser("prepare", help="preprocess a dataset into cached HDF5 splits")
    _add_config(p)
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and report them")
    p.set_defaults(fn=cmd_prepare)
    p = sub.add_parser("prototxt", help="write the nets and solver of a config")
    _add_config(p)
    p.add_argument("--out", required=True)
    p.add_argument("--num-landmarks", type=int, default=None, metavar="K",
                   help="landmarks per sample (default: model.num_landmarks, else the config's dataset)")
    p.set_defaults(fn=cmd_prototxt)
    for verb, text in (("pretrain", "unsupervised pre-training (model.pretext)"),
                       ("finetune", "landmark head fine-tuning (model.head), then its sub-runs")):
        p = sub.add_parser(verb, help=text)
        _add_train(p)
        p.set_defaults(fn=cmd_train)
    _add_evaluate(sub)
    p = sub.add_parser("table", help="rebuild a paper table (or ours) from its config")
    p.add_argument("table", help="configs/paper/table1.yaml, table2.yaml, configs/ours/table3.yaml, ...")
    p.add_argument("--repeats", type=_positive, default=None, help="seeds per arm (default: the table's)")
    p.add_argument("--out", default=None, help="results folder (default: the table's)")
    p.add_argument("--gpu", type=int, default=None, metavar="N")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in every arm's config")
    p.add_argument("--gpus", default=None, metavar="N,N,...", type=_device_list,
                   help="run the jobs in parallel on these CUDA devices, one job per device (a local Ray)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run every pre-training, arm and repeat as a Ray task: on a Ray started here, or on "
                        "the running cluster at ADDRESS (host:port); every node must see this folder and "
                        "runs_dir at the same path (docs/cluster.md)")
    p.add_argument("--cpus-per-job", type=_positive, default=None, metavar="N",
                   help="with --ray on CPUs: CPUs per job (default: up to 4, as the largest node has)")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="schedule preset, e.g. gpu (configs/presets/gpu.yaml: iterations x20)")
    p.add_argument("--arms", default=None, metavar="KEY,KEY,...", type=lambda t: [k.strip() for k in t.split(",") if k.strip()],
                   help="run these arms only (the table's keys, before a sweep), with the arms they take "
                        "pseudo-labels from; their run folders are the full table's")
    p.add_argument("--overwrite", action="store_true", help="retrain runs whose folders hold runs made with other "
                   "settings (a --set, an edited config); without it the table refuses to replace them")
    p.set_defaults(fn=cmd_table)
    add_deploy_verbs(sub)
    add_unlabelled_verbs(sub)
    add_annotation_verbs(sub)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, DataError, CaffeUnavailable, FileNotFoundError) as e:
        print(f"dentcae {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dentcae {args.verb}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as e:  # TrainingError, TransferError (ValueError) below
        print(f"dentcae {args.verb}: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"dentcae {args.verb}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:       # a full disk, a permission: what was being written is left out whole
        where = f"{e.filename}: " if e.filename else ""
        print(f"dentcae {args.verb}: error: {where}{e.strerror or e} (nothing half-written was kept)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
