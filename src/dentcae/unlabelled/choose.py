"""The settings of pseudo-labelling and the filters applied to the teachers' guesses.

    settings = check_settings({**DEFAULTS, "filters": ["spread", "shape"]})
    chosen = choose(guesses, names, settings, threshold, labelled_shapes_mm, spacings)
    chosen["keep"]                  # (N, L) which candidate landmarks become pseudo-labels

A landmark is kept when it lies on its image and passes every filter in `settings["filters"]`
(filters.py): `confidence` (at least `min_confidence`, default the teachers' flag threshold, the 5 %
quantile on their labelled training images), `spread` (per landmark, the `spread_keep` share of
candidate images where teachers and views agree best), `shape` (residual under the labelled shapes'
model at most the `shape_quantile` of their own leave-one-out residuals). Every criterion's values
are kept whether it filters or not, so the report can draw each one's curve.
"""
import copy

import numpy as np

from ..pseudo_settings import PSEUDO_LABELS, pseudo_label_problem
from .filters import confidence_rule, on_image, shape_rule, spread_rule

DEFAULTS = copy.deepcopy(PSEUDO_LABELS)


def check_settings(settings):
    """The settings, or a ValueError naming the bad key."""
    problem = pseudo_label_problem(settings)
    if problem:
        raise ValueError(f"pseudo-label settings: {problem}")
    return settings


def _stack(guesses, names, field):
    return np.stack([getattr(guesses[n], field) for n in names]).astype(float)


def _empty(k):
    none = np.zeros((0, k))
    return {"names": [], "spacings": np.zeros(0), "points": np.zeros((0, k, 2)), "confidence": none,
            "spread_mm": none, "residual_mm": none, "keep": none.astype(bool), "passes": {}, "thresholds": {},
            "threshold": None, "kept_points": {}}


def choose(guesses, names, settings, threshold, labelled_mm, spacings, k):
    """Every criterion's values and the kept landmarks of the candidate images `names` (k landmarks)."""
    if not names:
        return _empty(k)
    points = _stack(guesses, names, "points")
    conf = _stack(guesses, names, "confidence")
    spread = _stack(guesses, names, "spread_mm")
    mm = points * np.asarray(spacings, float).reshape(-1, 1, 1)
    use = settings["filters"]
    t = threshold if settings["min_confidence"] is None else float(settings["min_confidence"])
    passes = {"on_image": np.stack([on_image(points[i], guesses[n].shape) for i, n in enumerate(names)])}
    thresholds = {"confidence": t}
    if "confidence" in use:
        passes["confidence"] = confidence_rule(conf, t)
    if "spread" in use:
        passes["spread"], limit = spread_rule(spread, settings["spread_keep"])
        thresholds["spread_mm"] = [float(v) for v in limit]
    residual = np.full(conf.shape, np.nan)
    if len(labelled_mm) >= 4:
        shape_ok, residual, limit = shape_rule(mm, labelled_mm, settings["shape_quantile"])
        if "shape" in use:
            passes["shape"], thresholds["shape_mm"] = shape_ok, [float(v) for v in limit]
    elif "shape" in use:
        raise ValueError(f"the shape filter needs at least 4 completely labelled training images, got {len(labelled_mm)}")
    keep = np.logical_and.reduce(list(passes.values()))
    return {"names": list(names), "spacings": np.asarray(spacings, float), "points": points, "confidence": conf,
            "spread_mm": spread, "residual_mm": residual, "keep": keep, "passes": passes, "thresholds": thresholds,
            "threshold": t if "confidence" in use else None,
            "kept_points": {n: np.where(keep[i][:, None], points[i], np.nan) for i, n in enumerate(names)}}
