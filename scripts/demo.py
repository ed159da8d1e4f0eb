#!/usr/bin/env python
"""`make demo`: the whole pipeline on the built-in SYNTHETIC phantom, sized for a 2-core CPU.

synthetic phantom -> prepare -> CAE pre-training -> landmark fine-tuning -> evaluation.
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
             ["evaluate", "runs/phantom_cae_finetune", *gpu_args]]
    for step in steps:
        print(f"\n== dentcae {' '.join(step)}", flush=True)
        code = main(step)
        if code:
            return code
    print(f"\nDemo finished in {(time.time() - t0) / 60:.1f} min. SYNTHETIC data: these are not the "
          "paper's numbers.\n  CAE: runs/phantom_cae_pretrain/ (reconstructions.png, learning_curves.png)"
          "\n  regressor: runs/phantom_cae_finetune/ (results.md, summary.json, predictions.csv, "
          "detections.png, error_cdf.png)")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpu", type=int, default=None)
    sys.exit(demo(ap.parse_args().gpu))
