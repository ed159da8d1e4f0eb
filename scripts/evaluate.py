#!/usr/bin/env python
"""Evaluate a landmark checkpoint: `scripts/evaluate.py [CHECKPOINT] [--config CONFIG] [--out DIR]`.

Same as `dentcae evaluate`. CHECKPOINT is a finetune run folder (its final.caffemodel) or a
.caffemodel inside one; without --config the run's own resolved config.yaml is used, and without
CHECKPOINT the run folder of --config (runs_dir/name) is scored.
"""
import sys

from dentcae.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
