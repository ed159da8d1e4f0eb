#!/usr/bin/env python
"""`make demo`: the whole pipeline on the built-in SYNTHETIC phantom, sized for a 2-core CPU.

synthetic phantom -> prepare -> CAE pre-training -> landmark fine-tuning -> evaluation -> the trained
detector exported as a bundle (with ONNX) -> predict on unlabelled phantom images with ONNX Runtime.
Starts both runs afresh (--overwrite); prints where everything went and the wall time.
"""
import argparse
import sys
import time

from dentcae.cli import main

PRETRAIN = "configs/phantom_cae_pretrain.yaml"
FINETUNE = "configs/phantom_cae_finetune.yaml"


def demo(gpu=None):
    gpu_args = ["--gpu", str(gpu)] if gpu is not None else []
    t0 = time.time()
    steps = [["prepare", "--config", PRETRAIN],
             ["pretrain", "--config", PRETRAIN, "--overwrite", *gpu_args],
             ["finetune", "--config", FINETUNE, "--overwrite", *gpu_args],
             ["evaluate", "runs/phantom_cae_finetune", *gpu_args],
             ["export", "runs/phantom_cae_finetune", "--out", "models/phantom_cae_finetune", "--onnx", "--overwrite"],
             ["predict", "models/phantom_cae_finetune", "data/phantom/phantom_010*.png", "--spacing", "0.25",
              "--backend", "onnx", "--out", "runs/phantom_predictions"]]
    for step in steps:
        print(f"\n== dentcae {' '.join(step)}", flush=True)
        code = main(step)
        if code:
            return code
    print(f"\nDemo finished in {(time.time() - t0) / 60:.1f} min. SYNTHETIC data: these are not the "
          "paper's numbers.\n  CAE: runs/phantom_cae_pretrain/ (reconstructions.png, learning_curves.png)"
          "\n  regressor: runs/phantom_cae_finetune/ (results.md, summary.json, predictions.csv, "
          "detections.png, error_cdf.png)"
          "\n  bundle: models/phantom_cae_finetune/ (model.json, nets/*.caffemodel, nets/*.onnx)"
          "\n  predictions: runs/phantom_predictions/ (predictions.csv, predictions.json, overlays/)")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpu", type=int, default=None)
    sys.exit(demo(ap.parse_args().gpu))
