"""The settings of pseudo-labelling (a config's `pseudo_labels` section; `dentcae pseudo-label`'s
flags): their defaults and their check. unlabelled/choose.py applies them.

    problem = pseudo_label_problem({**PSEUDO_LABELS, "filters": ["spread", "shape"]})   # None: fine
"""
import math

from .views import view_problem

FILTERS = ("confidence", "spread", "shape")
PSEUDO_LABELS = {
    "filters": ["confidence"],      # all must pass: confidence, spread (teachers and views agree),
                                    # shape (fits the labelled shapes' model)
    "min_confidence": None,         # confidence: None, the teachers' flag threshold
    "spread_keep": 0.7,             # spread: per landmark, this share of the candidate images kept
    "shape_quantile": 0.95,         # shape: this quantile of the labelled shapes' own residuals
    "views": None,                  # the teachers' test-time views (None: their own)
    "refine_views": None,           # the teachers' refine-net views (None: their own)
}


def _bad_number(settings, key, low, high):
    v = settings[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low <= v <= high:
        return f"'{key}' must be a number in [{low}, {high}], got {v!r}"
    return None


def _bad_views(settings, key):
    views = settings[key]
    if views is not None and not isinstance(views, list):
        return f"'{key}' must be a list of views, got {views!r}"
    for i, v in enumerate(views or []):
        problem = view_problem(v)
        if problem:
            return f"'{key}[{i}]': {problem}"
    return None


def pseudo_label_problem(settings):
    """What is wrong with pseudo-label settings, or None."""
    unknown = set(settings) - set(PSEUDO_LABELS)
    if unknown:
        return f"unknown keys {sorted(unknown)} (known: {', '.join(PSEUDO_LABELS)})"
    f = settings["filters"]
    if not isinstance(f, list) or not f or not set(f) <= set(FILTERS) or len(set(f)) != len(f):
        return f"'filters' must list some of {', '.join(FILTERS)}, got {f!r}"
    problems = [_bad_number(settings, "min_confidence", 0, 1) if settings["min_confidence"] is not None else None,
                _bad_number(settings, "spread_keep", 0.01, 1), _bad_number(settings, "shape_quantile", 0.5, 1),
                _bad_views(settings, "views"), _bad_views(settings, "refine_views")]
    return next((p for p in problems if p), None)
