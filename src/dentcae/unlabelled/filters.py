"""Which predicted landmarks become pseudo-labels: the rules, each a pure function of numbers.

    keep = on_image(points, shape)                                  # (L,) inside the image
    keep &= confidence_rule(confidence, threshold)                  # the head's peak height
    keep &= spread_rule(spreads_mm, keep_share=0.7)[0][i]           # teachers and views agree
    model = ShapeModel.fit(labelled_shapes_mm)                      # the labelled shapes' model
    keep &= model.residuals(shape_mm) <= model.loo_thresholds(0.95) # the shape fits it

`spread`: the root-mean-square distance of every teacher's and view's estimate from their mean (the
Detector's Found.spread, here in mm). Per landmark, the `keep_share` of the candidate images whose
spread is smallest are kept: a rule on the unlabelled images themselves, so no withheld label
chooses a threshold. `shape`: the labelled shapes are aligned (generalised Procrustes) and their
principal modes kept (95 % of the variance); landmark k's residual is its distance (mm) from where
the model puts it given the other landmarks (those aligned to the mean, the modes fitted to them with
a Gaussian prior, coefficients clipped to +-3 sd); a landmark over its limit stops informing the
others (the worst first), so one landmark far off stands out alone.
The threshold of landmark k is the `quantile` of the residuals the labelled shapes themselves get
when each is left out of the model (leave-one-out): the labelled images' own held-out folds.
"""
import numpy as np

VARIANCE = 0.95         # the share of the labelled shapes' variance the shape model's modes keep
CLIP_SD = 3.0           # mode coefficients are clipped to +- this many sd


def on_image(points, shape):
    """(L,) the points lie on the image (pixel centres 0..W-1 by 0..H-1, half a pixel slack)."""
    h, w = shape[:2]
    x, y = points[:, 0], points[:, 1]
    return np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)


def confidence_rule(confidence, threshold):
    """(..., L) confidence at least `threshold` (NaN: not kept)."""
    c = np.asarray(confidence, float)
    return np.isfinite(c) & (c >= threshold)


def spread_thresholds(spreads_mm, keep_share):
    """(L,) per landmark, the spread below which `keep_share` of the candidates lie."""
    s = np.asarray(spreads_mm, float)
    if not np.isfinite(s).any():
        raise ValueError("the spread filter needs several teachers or test-time views: every spread is NaN")
    return np.nanquantile(s, keep_share, axis=0, method="lower")


def spread_rule(spreads_mm, keep_share):
    """((N, L) of (N, L) spreads: each landmark's `keep_share` of images with the smallest spread;
    the (L,) thresholds)."""
    s = np.asarray(spreads_mm, float)
    limit = spread_thresholds(s, keep_share)
    return np.isfinite(s) & (s <= limit[None]), limit


def _similarity(shape, target):
    """(scale, rotation, translation) of the least-squares similarity fit scale * shape @ rot + t ~ target."""
    ma, mb = shape.mean(0), target.mean(0)
    a, b = shape - ma, target - mb
    u, sv, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    flip = np.diag([1.0, d])
    rot = u @ flip @ vt
    scale = (sv * np.diag(flip)).sum() / max((a ** 2).sum(), 1e-12)
    return scale, rot, mb - scale * ma @ rot


def _align(shape, target):
    """(aligned shape, scale) of a similarity Procrustes fit of `shape` (L, 2) onto `target`."""
    scale, rot, t = _similarity(shape, target)
    return scale * shape @ rot + t, scale


class ShapeModel:
    """Mean and principal modes of Procrustes-aligned shapes (M, L, 2), in the shapes' units."""

    def __init__(self, mean, modes, sd):
        self.mean, self.modes, self.sd = mean, modes, sd

    @classmethod
    def fit(cls, shapes):
        shapes = np.asarray(shapes, float)
        if len(shapes) < 3 or not np.isfinite(shapes).all():
            raise ValueError(f"a shape model needs at least 3 complete labelled shapes, got {len(shapes)}")
        mean = shapes[0] - shapes[0].mean(0)
        for _ in range(10):                       # generalised Procrustes: align all to the mean, re-mean
            aligned = np.stack([_align(s, mean)[0] for s in shapes])
            new = aligned.mean(0)
            new = _align(new, mean)[0]
            if np.allclose(new, mean, atol=1e-9):
                break
            mean = new
        flat = (aligned - mean).reshape(len(shapes), -1)
        _, sv, vt = np.linalg.svd(flat, full_matrices=False)
        var = sv ** 2 / max(len(shapes) - 1, 1)
        share = np.cumsum(var) / max(var.sum(), 1e-12)
        n = min(int(np.searchsorted(share, VARIANCE) + 1), len(shapes) - 2)
        return cls(mean, vt[:n], np.sqrt(var[:n]))

    def _predicted_from(self, shape, trusted):
        """(L,) landmark k's distance from where the model puts it given the trusted landmarks other
        than k (aligned to the mean, the modes fitted with a Gaussian prior, clipped to +-3 sd)."""
        modes = self.modes.reshape(len(self.modes), -1, 2)
        out = np.zeros(len(shape))
        for k in range(len(shape)):
            rest = trusted & (np.arange(len(shape)) != k)
            scale, rot, t = _similarity(shape[rest], self.mean[rest])
            y = (scale * shape[rest] @ rot + t - self.mean[rest]).ravel()
            a = modes[:, rest].reshape(len(modes), -1).T
            b = np.linalg.solve(a.T @ a + np.diag(1.0 / np.maximum(self.sd, 1e-9) ** 2), a.T @ y)
            b = np.clip(b, -CLIP_SD * self.sd, CLIP_SD * self.sd)
            guess = self.mean[k] + modes[:, k].T @ b
            out[k] = np.linalg.norm(((guess - t) @ rot.T) / scale - shape[k])
        return out

    def residuals(self, shape, limit=None):
        """(L,) each landmark's distance from where the model puts it given the other landmarks, in
        the shape's own units. With a `limit` (L,) the landmark furthest over it stops informing the
        others, one at a time while any is over (at most half of them), so one landmark far off does
        not drag the residuals of the rest."""
        shape = np.asarray(shape, float)
        trusted = np.ones(len(shape), bool)
        while True:
            res = self._predicted_from(shape, trusted)
            over = trusted & (res > limit) if limit is not None else np.zeros(len(shape), bool)
            if not over.any() or trusted.sum() <= len(shape) // 2 + 1:
                return res
            trusted[np.argmax(np.where(over, res / limit, -np.inf))] = False

    @staticmethod
    def loo_thresholds(shapes, quantile):
        """(L,) per landmark, the `quantile` of the residuals of each labelled shape under the model
        of the others (leave one out)."""
        shapes = np.asarray(shapes, float)
        if len(shapes) < 4:
            raise ValueError(f"the shape filter needs at least 4 labelled shapes, got {len(shapes)}")
        res = [ShapeModel.fit(np.delete(shapes, i, 0)).residuals(s) for i, s in enumerate(shapes)]
        return np.quantile(np.stack(res), quantile, axis=0)


def shape_rule(shapes_mm, labelled_mm, quantile):
    """(N, L) of candidate shapes (N, L, 2): residual under the labelled shapes' model at most the
    leave-one-out `quantile` of the labelled shapes' own residuals; the (N, L) residuals; the (L,)
    thresholds."""
    model = ShapeModel.fit(labelled_mm)
    limit = ShapeModel.loo_thresholds(labelled_mm, quantile)
    res = np.stack([model.residuals(s, limit) if np.isfinite(s).all() else np.full(len(s), np.inf) for s in shapes_mm])
    return res <= limit[None], res, limit
