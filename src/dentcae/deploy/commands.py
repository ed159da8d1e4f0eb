"""The verbs that use a trained detector: `dentcae export` and `dentcae predict` (cli.py adds them)."""
import argparse
import json
import math


def cmd_export(args):
    from .bundle import export_bundle
    model = export_bundle(args.runs, args.out, onnx=args.onnx, overwrite=args.overwrite)
    conf = model.calibration
    print(f"bundle {args.out}: {len(model.members)} member(s), nets {', '.join(model.members[0].nets)}"
          f"{' (+ ONNX)' if args.onnx else ''}; {len(model.landmarks)} landmarks; flag thresholds: confidence "
          f"{conf.get('threshold')}, spread {conf.get('spread_threshold')} (of the image height)")
    if args.onnx:
        print(f"ONNX Runtime vs Caffe, max |difference| of the outputs: {json.dumps(model.info['onnx_max_abs_diff_vs_caffe'])}")
    return 0


def cmd_predict(args):
    from .predict import predict_images
    report = predict_images(args.model, args.inputs, args.out, spacing=args.spacing, backend=args.backend,
                            gpu=args.gpu, overlays=not args.no_overlays,
                            labelme=args.labelme or args.labelme_embed, embed=args.labelme_embed)
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    rate = report["images"] / max(report["seconds"], 1e-9)
    print(f"{report['images']} images predicted ({rate:.2f} images/s), {report['failed']} failed; see {report['out']}/"
          + (" errors.csv" if report["failed"] else ""))
    return 1 if report["failed"] else 0


def _spacing(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"wants a finite number of mm per pixel > 0, got {text!r}")
    return value


def add_verbs(sub):
    p = sub.add_parser("export", help="a trained run, or several as an ensemble, as a self-contained model bundle",
                       description="Write a bundle of one finetune run, or of several runs of the same landmarks, "
                       "layout and input geometry (an ensemble: predict and evaluate average their landmarks and "
                       "report their spread).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="finetune run folders (runs/NAME)")
    p.add_argument("--out", required=True, help="bundle folder to write (must not exist)")
    p.add_argument("--onnx", action="store_true", help="also write ONNX files of every net (needs `onnx`, "
                   "`onnxruntime`: pip install 'dentcae[onnx]')")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier bundle at --out")
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("predict", help="landmarks, confidence and measurements on new X-rays",
                       description="Predict landmarks on new X-rays (PNG, JPEG, BMP, TIFF, DICOM). Spacing: the "
                       "DICOM PixelSpacing, else ImagerPixelSpacing (with a warning), else --spacing, else pixels only.")
    p.add_argument("model", help="a bundle from `dentcae export`, or a finetune run folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or globs")
    p.add_argument("--out", required=True, help="output folder: predictions.csv/json, overlays/, measurements.csv")
    p.add_argument("--spacing", type=_spacing, default=None, metavar="MM",
                   help="mm per pixel of images that do not carry one (a DICOM file's own spacing wins)")
    p.add_argument("--backend", choices=("caffe", "onnx"), default="caffe",
                   help="caffe (default) or onnx (ONNX Runtime on the CPU; needs a bundle exported with --onnx)")
    p.add_argument("--gpu", type=int, default=None, metavar="N", help="Caffe on CUDA device N")
    p.add_argument("--no-overlays", action="store_true", help="skip the overlay pictures")
    p.add_argument("--labelme", action="store_true",
                   help="also write OUT/labelme/: one LabelMe file per image with the image beside it, flagged "
                   "landmarks marked `check`, to correct in LabelMe and read back with `dentcae import labelme`")
    p.add_argument("--labelme-embed", action="store_true",
                   help="as --labelme, with each image also inside its LabelMe file (imageData)")
    p.set_defaults(fn=cmd_predict)
