#!/usr/bin/env python
"""`make prototxt`: regenerate the committed prototxt/paper/ from the paper's configs.

The CAE from configs/paper/cae_pretrain.yaml, the regressor from the fc6-tuned and fc6-frozen arms
(the paper's 4 landmarks per half: 8 outputs), and the plain AlexNet classifier (for weight-transfer
checks). tests/nets/test_nets.py checks that the
committed files equal what the generators emit.
"""
import sys
from pathlib import Path

from dentcae.config import load_config
from dentcae.nets.alexnet import classifier, write_net
from dentcae.train.stages import write_config_prototxts

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["configs/paper/cae_pretrain.yaml", "configs/paper/landmarks_cae_fc6tuned.yaml",
           "configs/paper/landmarks_cae_fc6frozen.yaml"]
PAPER_LANDMARKS = 4


def generate(out):
    out = Path(out)
    written = []
    for config in CONFIGS:
        written += write_config_prototxts(load_config(ROOT / config), out, num_landmarks=PAPER_LANDMARKS)
    written.append(write_net(classifier(size=227, deploy=True), out / "alexnet_classifier_deploy.prototxt"))
    return written


if __name__ == "__main__":
    for p in generate(sys.argv[1] if len(sys.argv) > 1 else ROOT / "prototxt/paper"):
        print(p)
