"""Check `dentcae predict` output against `dentcae evaluate`'s for the same images, and score its
confidence: how far the coordinates differ (px), and how confidence relates to the radial error.

    python scripts/check_predictions.py runs/x/predictions.csv predictions/predictions.csv \
        [--other predictions_onnx/predictions.csv] [--json out.json]

EVALUATED is an evaluate predictions.csv (its ground truth gt_x, gt_y and error_mm); PREDICTED a
predict predictions.csv of (some of) the same images, matched by file name. Prints and writes:
max |predict - evaluate| in px, and with --other the max |other - predicted| (ONNX vs Caffe);
Spearman's rho of confidence and of spread against error, the fraction predict flagged and the MRE
of flagged and unflagged landmarks (inference/calibration.py uncertainty_report). `dentcae evaluate`
reports the same in its summary.json (`uncertainty`).
"""
import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from dentcae.inference.calibration import uncertainty_report


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _key(image, landmark):
    return Path(image).name, landmark


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("evaluated")
    ap.add_argument("predicted")
    ap.add_argument("--other", default=None, help="a second predict output (e.g. --backend onnx)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ev = {_key(r["image"], r["name"]): r for r in _rows(args.evaluated)}
    pr = {_key(r["image"], r["landmark"]): r for r in _rows(args.predicted)}
    keys = [k for k in pr if k in ev]
    if not keys:
        sys.exit("no image and landmark in common")
    xy = lambda r, a, b: np.array([float(r[a]), float(r[b])])     # noqa: E731
    diff = max(np.abs(xy(pr[k], "x_px", "y_px") - xy(ev[k], "pred_x", "pred_y")).max() for k in keys)
    out = {"landmarks": len(keys), "images": len({k[0] for k in keys}), "max_abs_diff_px_vs_evaluate": float(diff)}
    if args.other:
        ot = {_key(r["image"], r["landmark"]): r for r in _rows(args.other)}
        out["max_abs_diff_px_other_vs_predicted"] = float(max(
            np.abs(xy(ot[k], "x_px", "y_px") - xy(pr[k], "x_px", "y_px")).max() for k in keys))
    conf = np.array([float(pr[k]["confidence"] or "nan") for k in keys])
    err = np.array([float(ev[k]["error_mm"]) for k in keys])
    spread = np.array([float(pr[k].get("spread_mm") or "nan") for k in keys])
    flagged = np.array([pr[k]["flag"] == "1" for k in keys])
    out["uncertainty"] = uncertainty_report(conf, spread, err, flagged)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
