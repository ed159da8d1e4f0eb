"""Per-landmark confidence: its threshold, chosen on training images, and how well it tells errors.

    conf = training_threshold(model)          # {"threshold": ..., "quantile": 0.05, ...} on training data
    report = confidence_report(confidence, errors_mm, threshold)   # Spearman, flagged vs unflagged MRE

The heatmap head's confidence is the height of the final heatmap (the refine net's when there is
one) at the predicted point: the net is trained on Gaussians of height 1, so a clear, single
landmark gives about 1 and an ambiguous or unseen one less (heads/heatmap after_predict). The
flag threshold is the THRESHOLD_QUANTILE quantile of the confidences on the run's own labelled
training images (never its test split): on images like the training ones about 5 % of landmarks
are flagged, and more where the net is less sure than it was on what it learned from. The
regression head has no confidence (NaN, never flagged).
"""
import numpy as np

THRESHOLD_QUANTILE = 0.05
CONFIDENCE_DEFINITION = ("the final heatmap's height at the predicted point (targets are Gaussians of height 1), "
                         "clipped to [0, 1]; flagged below the 5 % quantile of the run's labelled training "
                         "landmarks' confidences")


def training_images(cfg):
    """Paths of the labelled training images a config trained on (its prepared reg_train split)."""
    from ..data.prepare import configured_dataset, prepare
    recs = {r.name: r for r in configured_dataset(cfg).images}
    names = dict.fromkeys(r["image"] for r in prepare(cfg).samples() if int(r["reg_train"]))
    return [recs[n].path for n in names]


def training_threshold(model, progress=True):
    """{definition, threshold, quantile, landmarks, images}: the flag threshold of a Model, from its
    confidences on its labelled training images (None when the head gives no confidence)."""
    from tqdm import tqdm
    from ..data.dataset import read_image
    from .engine import Detector
    detector = Detector(model)
    paths = training_images(model.cfg)
    values = np.concatenate([detector(read_image(p))[1] for p in tqdm(paths, desc="confidence on training images",
                                                                       unit="image", disable=not progress)])
    values = values[np.isfinite(values)]
    return {"definition": CONFIDENCE_DEFINITION if len(values) else "none: this head gives no confidence",
            "threshold": float(np.quantile(values, THRESHOLD_QUANTILE)) if len(values) else None,
            "quantile": THRESHOLD_QUANTILE, "training_landmarks": int(len(values)), "training_images": len(paths)}


def flags(confidence, threshold):
    """True where a landmark's confidence is below the threshold (never without one)."""
    c = np.asarray(confidence, float)
    return np.zeros(c.shape, bool) if threshold is None else np.isfinite(c) & (c < threshold)


def confidence_report(confidence, errors_mm, threshold):
    """How confidence relates to error over landmarks: Spearman's rho (negative: less sure, larger
    error), the fraction flagged, and the MRE of flagged and unflagged landmarks."""
    from scipy.stats import spearmanr
    c, e = np.asarray(confidence, float).ravel(), np.asarray(errors_mm, float).ravel()
    ok = np.isfinite(c) & np.isfinite(e)
    if not ok.any():
        return None
    c, e = c[ok], e[ok]
    flagged = flags(c, threshold)
    rho, p = spearmanr(c, e)
    return {"spearman_rho": float(rho), "spearman_p": float(p), "threshold": threshold,
            "fraction_flagged": float(flagged.mean()), "landmarks": int(len(c)),
            "mre_flagged_mm": float(e[flagged].mean()) if flagged.any() else None,
            "mre_unflagged_mm": float(e[~flagged].mean()) if (~flagged).any() else None}
