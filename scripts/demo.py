#!/usr/bin/env python
"""`make demo`: the detector and the paper's pipeline on the built-in SYNTHETIC phantom, sized for a
2-core CPU, then the detector exported and used on new images.

synthetic phantom -> the detector recipe (heatmap head + refine net, configs/phantom_detector.yaml)
-> the paper's pipeline (CAE pre-training, then its regressor) -> both evaluated, beside the mean
shape -> the detector exported as a bundle (with ONNX) -> predict on unlabelled phantom images with
ONNX Runtime, with LabelMe files to correct. Starts every run afresh (--overwrite); prints where
everything went and the wall time.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from dentcae.cli import main

DETECTOR = "configs/phantom_detector.yaml"
PRETRAIN = "configs/phantom_cae_pretrain.yaml"
FINETUNE = "configs/phantom_cae_finetune.yaml"
NEW_IMAGES = "data/phantom/phantom_010*.png"           # unlabelled phantom images


def _steps(gpu_args):
    return [["prepare", "--config", DETECTOR],
            ["finetune", "--config", DETECTOR, "--overwrite", *gpu_args],
            ["evaluate", "runs/phantom_detector", *gpu_args],
            ["pretrain", "--config", PRETRAIN, "--overwrite", *gpu_args],
            ["finetune", "--config", FINETUNE, "--overwrite", *gpu_args],
            ["evaluate", "runs/phantom_cae_finetune", *gpu_args],
            ["export", "runs/phantom_detector", "--out", "models/phantom_detector", "--onnx", "--overwrite"],
            ["predict", "models/phantom_detector", NEW_IMAGES, "--spacing", "0.25", "--backend", "onnx",
             "--labelme", "--out", "runs/phantom_predictions"]]


def _row(label, summary):
    sdr = summary.get("sdr", {})
    return f"| {label} | {summary['mre_mm']:.2f} mm | " + " / ".join(
        f"{100 * sdr[k]:.1f}" for k in ("2mm", "2.5mm", "3mm", "4mm") if k in sdr) + " % |"


def comparison():
    """The Markdown table: the mean shape, the paper's regressor and the detector on the same test halves."""
    det = json.loads(Path("runs/phantom_detector/summary.json").read_text())
    paper = json.loads(Path("runs/phantom_cae_finetune/summary.json").read_text())
    base = det.get("baseline_mean_shape_mre_mm")
    lines = ["| on the phantom's test halves (SYNTHETIC) | MRE | SDR 2 / 2.5 / 3 / 4 mm |", "|---|---|---|",
             f"| always the training set's mean shape | {base:.2f} mm | |" if base is not None else "",
             _row("the paper's regressor, from its CAE", paper), _row("the detector (heatmap head + refine net)", det)]
    return "\n".join(line for line in lines if line)


def demo(gpu=None):
    gpu_args = ["--gpu", str(gpu)] if gpu is not None else []
    t0 = time.time()
    for step in _steps(gpu_args):
        print(f"\n== dentcae {' '.join(step)}", flush=True)
        code = main(step)
        if code:
            return code
    print(f"\nDemo finished in {(time.time() - t0) / 60:.1f} min. SYNTHETIC data: not the paper's numbers, "
          "and not real X-rays (docs/results.md has those).\n")
    print(comparison())
    print("\n  detector: runs/phantom_detector/ (results.md, summary.json, predictions.csv, detections.png, refine/)"
          "\n  the paper's CAE and regressor: runs/phantom_cae_pretrain/, runs/phantom_cae_finetune/"
          "\n  bundle of the detector: models/phantom_detector/ (model.json, nets/*.caffemodel, nets/*.onnx)"
          "\n  predictions on new images: runs/phantom_predictions/ (predictions.csv, overlays/, labelme/ to "
          "correct in LabelMe)")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpu", type=int, default=None)
    sys.exit(demo(ap.parse_args().gpu))
