"""Test-time views: a sample seen shifted, scaled or rotated, and each point mapped back exactly.

    m = view_matrix({"rotate": 3, "scale": 1.05, "shift": [4, 0]}, size=256)   # 2x3, input -> view pixels
    seen = warp(sample, m, 256)                       # what the net sees in that view
    mats, seen = through_views(samples, views, 256)   # the input as it is first, then each view
    back = labels_from_view(labels_in_view, m, 256)   # (N, K, 2) normalised, in the sample's own frame

A view is a mapping with any of `rotate` (degrees, counter-clockwise as OpenCV's), `scale` (a
factor) about the centre of the net's input, then `shift` ([dx, dy] in input pixels). `{}` is the
input as it is. Points use pixel centres (pixel i is at i) and normalised labels are (u + 0.5) / size,
as everywhere in dentcae (data/geometry.py). A landmark decoded in a view is mapped back through the
inverse of the view's matrix, so a view whose warp moved the anatomy by the matrix returns the
same point: the views only change what the net sees, never where the answer lands.

Flips are not views here: dentcae's training augmentation (data/augment.py) never mirrors, so a net has
never seen a mirrored sample (a bilateral image's right half is mirrored by the layout, not as a view).
"""
import cv2
import numpy as np

VIEW_KEYS = ("rotate", "scale", "shift")
LIMITS = {"rotate": 30.0, "scale": (0.5, 2.0), "shift": 64.0}


def view_problem(view):
    """Why `view` is not a test-time view (a sentence), or None when it is one."""
    if not isinstance(view, dict):
        return f"a view is a mapping of {', '.join(VIEW_KEYS)}, got {view!r}"
    unknown = sorted(set(view) - set(VIEW_KEYS))
    if unknown:
        extra = " (flips are not offered: training never mirrors a sample)" if "flip" in unknown else ""
        return f"unknown view key(s) {', '.join(map(str, unknown))}; known: {', '.join(VIEW_KEYS)}{extra}"
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)   # noqa: E731
    rotate, scale, shift = view.get("rotate", 0), view.get("scale", 1), view.get("shift", [0, 0])
    if not number(rotate) or abs(rotate) > LIMITS["rotate"]:
        return f"rotate must be degrees within +-{LIMITS['rotate']:g}, got {rotate!r}"
    if not number(scale) or not LIMITS["scale"][0] <= scale <= LIMITS["scale"][1]:
        return f"scale must be a factor in [{LIMITS['scale'][0]}, {LIMITS['scale'][1]}], got {scale!r}"
    if not (isinstance(shift, list) and len(shift) == 2 and all(number(v) and abs(v) <= LIMITS["shift"] for v in shift)):
        return f"shift must be [dx, dy] in input pixels within +-{LIMITS['shift']:g}, got {shift!r}"
    return None


def with_identity(views):
    """The views a net is run on: the input as it is first, then the configured ones (an identity
    view given again is not run twice)."""
    out = [{}]
    for v in views or []:
        if not is_identity(v) and v not in out:
            out.append(dict(v))
    return out


def is_identity(view):
    return view.get("rotate", 0) == 0 and view.get("scale", 1) == 1 and list(view.get("shift", [0, 0])) == [0, 0]


def view_matrix(view, size):
    """2x3 matrix from input pixels to the view's pixels: rotate and scale about the input's
    centre ((size - 1) / 2 on both axes), then shift."""
    c = (size - 1) / 2.0
    m = cv2.getRotationMatrix2D((c, c), float(view.get("rotate", 0)), float(view.get("scale", 1)))
    m[:, 2] += np.asarray(view.get("shift", [0, 0]), np.float64)
    return m


def compose(outer, inner):
    """The 2x3 matrix of `inner` then `outer`."""
    a = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return a[:2]


def invert(m):
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def apply(m, points):
    """(..., 2) points through a 2x3 matrix."""
    p = np.asarray(points, np.float64)
    return p @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def warp(image, m, size):
    """A grey image seen through the matrix m, size x size, black outside (as a padded sample)."""
    return cv2.warpAffine(np.asarray(image, np.float32), np.asarray(m, np.float64), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def through_views(samples, views, size):
    """([2x3 matrix], [(N, S, S) samples as that view shows them]) for the input as it is and each
    of `views` (with_identity): what a net runs on before its answers are mapped back."""
    views = with_identity(views)
    mats = [view_matrix(v, size) for v in views]
    return mats, [samples if is_identity(v) else np.stack([warp(s, m, size) for s in samples])
                  for v, m in zip(views, mats)]


def labels_from_view(labels, m, size):
    """(..., 2) normalised labels decoded in the view of matrix m -> the input's own frame."""
    return (apply(invert(m), np.asarray(labels, np.float64) * size - 0.5) + 0.5) / size


def labels_to_view(labels, m, size):
    """(..., 2) normalised labels of the input -> where the view of matrix m shows them."""
    return (apply(m, np.asarray(labels, np.float64) * size - 0.5) + 0.5) / size
