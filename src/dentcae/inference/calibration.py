"""Flags: which landmarks a user should check, with thresholds chosen on training images, and how
well confidence and spread tell errors.

    cal = calibrate(model, prep)                  # {"threshold", "spread_threshold", ...} on training images
    flagged = flags(found.confidence, found.spread / image_height, cal)
    report = uncertainty_report(confidence, spread_mm, errors_mm, flagged)

Two signals (inference/detector.py): the confidence (the heatmap head's final heatmap height at the
point, in [0, 1]) and the spread (how far the estimates of the ensemble's members and of the views
lie from their mean). A landmark is flagged when its confidence is below the THRESHOLD_QUANTILE
quantile of the confidences on the model's own labelled training images, or its spread, as a
fraction of the image height (so no spacing is needed), above the SPREAD_QUANTILE quantile of the
spreads there. Never the test split: on images like the training ones about 5 % of landmarks fall
below each threshold, more where the nets are less sure or disagree more than on what they learned
from. A signal the model does not give (the regression head's confidence; the spread of one net
without views) flags nothing.
"""
import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

from ..data.dataset import read_image
from ..data.prepare import configured_dataset
from .detector import Detector

THRESHOLD_QUANTILE, SPREAD_QUANTILE = 0.05, 0.95
DEFINITION = ("flagged when the confidence (the final heatmap's height at the point, in [0, 1]) is below its 5 % "
              "quantile on the model's labelled training landmarks, or the spread (RMS distance of the members' "
              "and views' estimates from their mean, over the image height) is above its 95 % quantile there")


def training_images(cfg, prep):
    """Paths of the labelled training images a config trained on (its prepared reg_train split)."""
    recs = {r.name: r for r in configured_dataset(cfg).images}
    names = dict.fromkeys(r["image"] for r in prep.samples() if int(r["reg_train"]))
    return [recs[n].path for n in names]


def _quantile(values, q):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return (float(np.quantile(v, q)) if len(v) else None), int(len(v))


def calibrate(model, prep, progress=True, gpu=None):
    """{definition, threshold, quantile, spread_threshold, spread_quantile, training_landmarks,
    training_images}: the flag thresholds of a Model from its labelled training images."""
    detector, conf, spread = Detector(model, gpu=gpu), [], []
    paths = training_images(model.cfg, prep)
    for path in tqdm(paths, desc="calibrating flags on training images", unit="image", disable=not progress):
        grey = read_image(path)
        found = detector(grey)
        conf.append(found.confidence)
        spread.append(found.spread / grey.shape[0])
    threshold, n_conf = _quantile(np.concatenate(conf) if conf else [], THRESHOLD_QUANTILE)
    spread_threshold, n_spread = _quantile(np.concatenate(spread) if spread else [], SPREAD_QUANTILE)
    return {"definition": DEFINITION if n_conf or n_spread else "none: this model gives neither confidence nor spread",
            "threshold": threshold, "quantile": THRESHOLD_QUANTILE,
            "spread_threshold": spread_threshold, "spread_quantile": SPREAD_QUANTILE, "spread_unit": "image height",
            "training_landmarks": max(n_conf, n_spread), "training_images": len(paths)}


def flags(confidence, relative_spread, calibration):
    """True where a landmark's confidence is below the threshold or its spread (a fraction of the
    image height) above the spread threshold; a missing threshold or value flags nothing."""
    c, s = np.asarray(confidence, float), np.asarray(relative_spread, float)
    out = np.zeros(c.shape, bool)
    if calibration.get("threshold") is not None:
        out |= np.isfinite(c) & (c < calibration["threshold"])
    if calibration.get("spread_threshold") is not None:
        out |= np.isfinite(s) & (s > calibration["spread_threshold"])
    return out


def _spearman(a, e):
    ok = np.isfinite(a) & np.isfinite(e)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0:
        return None, None
    rho, p = spearmanr(a[ok], e[ok])
    return float(rho), float(p)


def uncertainty_report(confidence, spread_mm, errors_mm, flagged):
    """How confidence and spread relate to error over landmarks: Spearman's rho of each with the
    error (confidence: negative is good; spread: positive is good), the fraction flagged, and the
    MRE of flagged and unflagged landmarks."""
    c, s, e, f = (np.asarray(a, float).ravel() for a in (confidence, spread_mm, errors_mm, flagged))
    f = f.astype(bool)
    rho_c, p_c = _spearman(c, e)
    rho_s, p_s = _spearman(s, e)
    return {"spearman_confidence_error": rho_c, "spearman_confidence_p": p_c,
            "spearman_spread_error": rho_s, "spearman_spread_p": p_s,
            "fraction_flagged": float(f.mean()) if len(f) else None, "landmarks": int(len(e)),
            "mre_flagged_mm": float(e[f].mean()) if f.any() else None,
            "mre_unflagged_mm": float(e[~f].mean()) if (~f).any() else None}
