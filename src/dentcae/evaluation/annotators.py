"""Scores under several protocols: per test set, against each annotator and against their mean,
with the annotators' own disagreement on the same samples for scale. Pure: arrays in, numbers out.

    by_set = protocols(pred_px, samples, ds)
    # {"test1": {"n_samples": 150, "against": {"senior": {...}, "junior": {...}, "mean": {...}},
    #            "inter_observer": {"junior_vs_senior": {...}}}, "test2": {...}, "all": {...}}

A dataset's landmarks.csv is one annotation (its dataset.yaml `annotator`, e.g. senior); other
annotators' landmarks of the same images live in annotations/<annotator>.csv (ds.annotations).
Each score is MRE, median and SDRs in mm over the samples every annotation in it covers.
"""
from itertools import combinations

import numpy as np

from .metrics import SDR_MM, radial_errors_mm


def brief(errors_mm):
    """MRE, median and success detection rates of an (N, K) error array, and N."""
    e = np.asarray(errors_mm, float)
    return {"n_samples": int(e.shape[0]), "mre_mm": float(e.mean()), "median_mm": float(np.median(e)),
            "sdr": {f"{t:g}mm": float((e <= t).mean()) for t in SDR_MM}}


def annotation_pixels(ds, samples, annotator):
    """(N, K, 2) pixels of one annotator for the samples (each its image and side); NaN where the
    annotator did not mark the image."""
    rows = ds.annotations[annotator]
    k = len(ds.side_indices(samples[0]["side"]))
    missing = np.full((k, 2), np.nan)
    return np.array([rows[s["image"]][ds.side_indices(s["side"])] if s["image"] in rows else missing
                     for s in samples], float)


def _scores(pred_px, truths, spacing):
    """{name: brief} of the predictions against each truth, on the samples all truths cover."""
    covered = np.all([np.isfinite(t).all(axis=(1, 2)) for t in truths.values()], axis=0)
    if not covered.any():
        return {}, covered
    return ({name: brief(radial_errors_mm(pred_px[covered], t[covered], spacing[covered]))
             for name, t in truths.items()}, covered)


def protocol(pred_px, samples, ds):
    """Against each annotator and their mean, and each pair of annotators against each other."""
    spacing = np.array([float(s["spacing_mm"]) for s in samples])
    truths = {a: annotation_pixels(ds, samples, a) for a in sorted(ds.annotations)}
    if len(truths) > 1:
        truths["mean"] = np.mean(list(truths.values()), axis=0)
    against, covered = _scores(pred_px, truths, spacing)
    inter = {f"{b}_vs_{a}": brief(radial_errors_mm(truths[b][covered], truths[a][covered], spacing[covered]))
             for a, b in combinations(sorted(ds.annotations), 2) if covered.any()}
    return {"n_samples": int(covered.sum()), "against": against, "inter_observer": inter}


def test_set_of(sample):
    """The test set a test sample belongs to: its pin (test, test1, ...), or `holdout`."""
    return sample["pin"] or "holdout"


def protocols(pred_px, samples, ds):
    """{test set: protocol} for every test set among the samples, and `all` when there are several;
    {} when the dataset has no other annotation."""
    if not ds.annotations:
        return {}
    pred_px = np.asarray(pred_px, float)
    sets = sorted({test_set_of(s) for s in samples})
    out = {}
    for name in sets:
        idx = [i for i, s in enumerate(samples) if test_set_of(s) == name]
        out[name] = protocol(pred_px[idx], [samples[i] for i in idx], ds)
    if len(sets) > 1:
        out["all"] = protocol(pred_px, samples, ds)
    return out


def _row(label, test_set, against, b):
    sdr = " / ".join(f"{100 * v:.1f}" for v in b["sdr"].values())
    return f"| {label} | {test_set} | {against} | {b['n_samples']} | {b['mre_mm']:.2f} | {b['median_mm']:.2f} | {sdr} |"


def protocol_lines(by_arm):
    """Markdown: every arm's MRE and SDRs per test set against each annotation, then the annotators
    against each other on the same samples. `by_arm`: {label: protocols(...)}."""
    by_arm = {label: p for label, p in by_arm.items() if p}
    if not by_arm:
        return ""
    lines = ["", "| arm | test set | against | n | MRE (mm) | median (mm) | SDR 2 / 2.5 / 3 / 4 mm (%) |",
             "|---|---|---|---|---|---|---|"]
    for label, by_set in by_arm.items():
        for test_set, p in by_set.items():
            lines += [_row(label, test_set, who, b) for who, b in p["against"].items()]
    for test_set, p in next(iter(by_arm.values())).items():
        lines += [_row("inter-observer", test_set, pair.replace("_vs_", " vs "), b)
                  for pair, b in p["inter_observer"].items()]
    return "\n".join(lines) + "\n"
