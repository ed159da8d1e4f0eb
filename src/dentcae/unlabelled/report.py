"""How good the pseudo-labels are, measured where the truth is known and nothing is chosen by it:
the candidate training images whose real labels the label budget withheld.

    acc = accuracy(chosen, withheld, names)         # kept / rejected MRE, within 2 mm, per landmark
    curves = filter_curves(chosen, withheld)        # per criterion: share kept -> kept MRE
    write_table("pseudo_labels.csv", chosen, withheld, names)
    plot_filter_curves(curves, "filter_curves.svg")

The curves rank every candidate landmark by one criterion alone (confidence high first; spread and
shape residual low first) and give the error of the best 10 %, 20 %, ... 100 %: which criterion
picks good pseudo-labels, beside the peak height used before. They are reported, never used to set
a threshold (choose.py's rules use no withheld label).
"""
import csv

import numpy as np

from ..figures import plot_kept_error_curves
from ..runtime.atomic import atomic_path

SHARES = tuple(round(0.1 * i, 1) for i in range(1, 11))
CRITERIA = {"confidence": ("confidence", -1), "spread": ("spread_mm", 1), "shape residual": ("residual_mm", 1)}


def _errors_mm(chosen, withheld):
    """(N, L) the candidates' distance from their withheld real labels (NaN without one), in mm."""
    spacing = chosen["spacings"]
    err = np.full(chosen["keep"].shape, np.nan)
    for i, name in enumerate(chosen["names"]):
        if name in withheld:
            err[i] = np.linalg.norm(chosen["points"][i] - withheld[name], axis=1) * spacing[i]
    return err


def _mean(v):
    return float(np.mean(v)) if len(v) else None


def accuracy(chosen, withheld, names):
    """MRE (mm) of kept and rejected pseudo-labels against the withheld real labels."""
    err = _errors_mm(chosen, withheld)
    seen = np.isfinite(err)
    keep = chosen["keep"] & seen
    drop = ~chosen["keep"] & seen
    return {"images": int(seen.any(1).sum()), "kept_mre_mm": _mean(err[keep]), "rejected_mre_mm": _mean(err[drop]),
            "kept_within_2mm": _mean(err[keep] <= 2.0), "kept_landmarks": int(keep.sum()),
            "rejected_landmarks": int(drop.sum()),
            "kept_mre_mm_per_landmark": {n: _mean(err[:, k][keep[:, k]]) for k, n in enumerate(names)}}


def filter_curves(chosen, withheld):
    """{criterion: {"kept_share": [...], "kept_mre_mm": [...]}} over the landmarks with a withheld label."""
    err = _errors_mm(chosen, withheld)
    out = {}
    for name, (field, sign) in CRITERIA.items():
        values = sign * np.asarray(chosen[field], float)
        ok = np.isfinite(err) & np.isfinite(values)
        if not ok.any():
            continue
        order = np.argsort(values[ok], kind="stable")
        ranked = err[ok][order]
        counts = [max(1, int(round(s * len(ranked)))) for s in SHARES]
        out[name] = {"kept_share": list(SHARES), "kept_mre_mm": [float(ranked[:c].mean()) for c in counts],
                     "landmarks": int(len(ranked))}
    return out


def plot_filter_curves(curves, path):
    """The curves as a PNG (nothing when no withheld label was there to measure)."""
    if curves:
        plot_kept_error_curves(curves, path, "Pseudo-labels on training images with withheld labels:\n"
                                             "share kept (best first by each criterion) against their error")


def _cell(v, fmt="{:.3f}"):
    return "" if v is None or not np.isfinite(v) else fmt.format(v)


def write_table(path, chosen, withheld, names):
    """pseudo_labels.csv: one row per candidate landmark, every criterion and whether it was kept."""
    err = _errors_mm(chosen, withheld)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["image", "landmark", "x", "y", "confidence", "spread_mm", "shape_residual_mm", "kept",
                    "withheld_label_error_mm"])
        for i, image in enumerate(chosen["names"]):
            for k, name in enumerate(names):
                x, y = chosen["points"][i, k]
                w.writerow([image, name, _cell(x), _cell(y), _cell(chosen["confidence"][i, k], "{:.4f}"),
                            _cell(chosen["spread_mm"][i, k]), _cell(chosen["residual_mm"][i, k]),
                            int(chosen["keep"][i, k]), _cell(err[i, k])])
