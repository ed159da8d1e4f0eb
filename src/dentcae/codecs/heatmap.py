"""The heatmap codec: landmarks <-> one Gaussian heatmap per landmark, paired with heads/heatmap.

    H = heatmap_size(448)                                   # 110: the net's output grid, stride 4
    targets = encode(labels, size=448, sigma=2.0)           # (N, K, H, H) float32, peak 1
    labels = decode(heatmaps, size=448)                     # (N, K, 2) normalised crop coordinates
    labels = decode(heatmaps, size=448, prior=ShapePrior(train_labels))   # robust to far outliers

Heatmap pixel p sits on input pixel STRIDE * p + OFFSET: the centre of conv1's receptive field
(kernel 11, stride 4), which the net's last skip connection is aligned with. Labels are normalised
crop coordinates as everywhere in dentcae (input pixel u <-> (u + 0.5) / size), so decoded points map
back to image pixels exactly as the regressor's do. Decoding takes the argmax and refines it to
sub-pixel precision with a parabola through the log of three neighbours per axis, exact for a
Gaussian peak, shifted inwards at the border so that it stays exact there (the grid's outer cells
sit 5 px inside the input; points out to the input's edge still decode exactly).

A few far-off argmaxes (a bright peak on the wrong structure) dominate a mean radial error. With a
ShapePrior (the training labels' mean shape and per-landmark spread after similarity alignment),
decoding fits the mean shape to the argmaxes (a similarity transform, weighted by peak height and
iteratively down-weighting outliers); a landmark further than `outlier_sd` spreads from where the
fitted shape puts it is decoded again from its heatmap times a Gaussian around that place.
"""
import numpy as np

STRIDE, OFFSET = 4, 5.0


def heatmap_size(size):
    """Heatmap side for an input of size x size: conv1's output side."""
    return (size - 11) // STRIDE + 1


def grid(size):
    """Input-pixel coordinate of each heatmap pixel along one axis."""
    return STRIDE * np.arange(heatmap_size(size), dtype=np.float64) + OFFSET


def encode(labels, size, sigma):
    """(N, K, 2) normalised coordinates (NaN: no target, all zeros) -> (N, K, H, H) Gaussians whose
    peak is 1 at the landmark; `sigma` is in heatmap pixels."""
    labels = np.asarray(labels, np.float64)
    u = labels * size - 0.5                              # input pixels
    g = grid(size)
    s = 2.0 * (sigma * STRIDE) ** 2
    gx = np.exp(-((g[None, None, :] - u[..., 0:1]) ** 2) / s)          # (N, K, H)
    gy = np.exp(-((g[None, None, :] - u[..., 1:2]) ** 2) / s)
    out = gy[..., :, None] * gx[..., None, :]
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def _refine(logs, i):
    """Vertex of the parabola through logs[j-1..j+1] around i (j moved inside the array). It may
    move one pixel from the argmax, two at the array's edge (a landmark beyond the outer cell)."""
    n = len(logs)
    j = min(max(i, 1), n - 2)
    a, b, c = logs[j - 1], logs[j], logs[j + 1]
    curv = a - 2 * b + c
    if not curv < 0:                                     # flat or not a maximum: keep the argmax
        return float(i)
    reach = 2.0 if i in (0, n - 1) else 1.0
    return float(np.clip(j + 0.5 * (a - c) / curv, i - reach, i + reach))


def decode_one(hm, at=None):
    """(H, W) heatmap -> (x, y) in heatmap pixels, sub-pixel, around its argmax (or the pixel `at`)."""
    y, x = np.unravel_index(int(np.argmax(hm)), hm.shape) if at is None else at
    peak = float(hm[y, x])
    floor = max(peak, 1e-12) * 1e-6
    row = np.log(np.maximum(hm[y, :], floor))
    col = np.log(np.maximum(hm[:, x], floor))
    return _refine(row, x), _refine(col, y)


def decode(heatmaps, size):
    """(N, K, H, H) heatmaps -> (N, K, 2) normalised crop coordinates."""
    hm = np.asarray(heatmaps, np.float64)
    n, k = hm.shape[:2]
    out = np.empty((n, k, 2))
    for i in range(n):
        for j in range(k):
            out[i, j] = decode_one(hm[i, j])
    return (STRIDE * out + OFFSET + 0.5) / size


def value_at(hm, x, y):
    """A heatmap's value at the cell nearest (x, y) (heatmap pixels, inside the grid)."""
    h, w = np.shape(hm)
    return float(hm[int(np.clip(round(y), 0, h - 1)), int(np.clip(round(x), 0, w - 1))])


def values_at_labels(heatmaps, labels, size):
    """(N, K) heatmap values at (N, K, 2) normalised labels of a size x size input."""
    cells = ((np.asarray(labels) * size - 0.5) - OFFSET) / STRIDE
    return np.array([[value_at(hm, *c) for hm, c in zip(h, cs)] for h, cs in zip(heatmaps, cells)])


def peak_values(heatmaps):
    """(N, K) maximum of each heatmap: how sure the net is of each landmark."""
    return np.asarray(heatmaps).reshape(*np.shape(heatmaps)[:2], -1).max(-1)


def _similarity(src, dst, w):
    """Weighted least-squares similarity transform (scale, rotation, shift) taking src onto dst
    (both (K, 2)); returns it as a function of (M, 2) points."""
    w = np.asarray(w, float) / max(float(np.sum(w)), 1e-12)
    zs, zd = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
    ms, md = (w * zs).sum(), (w * zd).sum()
    c = (w * np.conj(zs - ms) * (zd - md)).sum() / max((w * np.abs(zs - ms) ** 2).sum(), 1e-12)

    def apply(pts):
        z = c * (pts[:, 0] + 1j * pts[:, 1] - ms) + md
        return np.stack([z.real, z.imag], 1)
    return apply


class ShapePrior:
    """The mean training shape and each landmark's spread around it after similarity alignment."""

    def __init__(self, train_labels):
        shapes = np.asarray(train_labels, float)
        shapes = shapes[np.isfinite(shapes).all(axis=(1, 2))]        # partly labelled samples say less
        mean = shapes.mean(0)
        for _ in range(2):           # align every shape to the mean, re-estimate the mean
            aligned = np.array([_similarity(s, mean, np.ones(len(s)))(s) for s in shapes])
            mean = aligned.mean(0)
        self.mean = mean
        self.spread = np.sqrt(((aligned - mean) ** 2).sum(-1).mean(0)) + 1e-3      # (K,), normalised units

    def expected(self, points, confidence, iterations=4):
        """Where the mean shape, fitted to `points` (K, 2), puts each landmark."""
        w = np.clip(confidence, 1e-6, None)
        for _ in range(iterations):
            fitted = _similarity(self.mean, points, w)(self.mean)
            d = np.linalg.norm(points - fitted, axis=1) / self.spread
            w = np.clip(confidence, 1e-6, None) * np.exp(-0.5 * (d / 3.0) ** 2)
        return fitted


def decode_near(hm, centre, sd):
    """The peak of a heatmap times a Gaussian (heatmap pixels) around `centre`, refined on the
    heatmap itself (so the prior picks the peak but does not pull it)."""
    h, w = hm.shape
    yy, xx = np.mgrid[0:h, 0:w]
    prior = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sd ** 2))
    weighted = np.clip(hm, 0, None) * prior + 1e-12 * prior
    return decode_one(hm, np.unravel_index(int(np.argmax(weighted)), hm.shape))


def decode_with_prior(heatmaps, size, prior, outlier_sd=3.0):
    """decode(), then landmarks far from the fitted mean shape decoded again near where it puts them."""
    hm = np.asarray(heatmaps, np.float64)
    labels = decode(hm, size)
    peaks = peak_values(hm)
    to_cells = lambda lab: ((lab * size - 0.5) - OFFSET) / STRIDE        # noqa: E731
    for i in range(len(hm)):
        fitted = prior.expected(labels[i], np.clip(peaks[i], 0, None))
        far = np.linalg.norm(labels[i] - fitted, axis=1) / prior.spread > outlier_sd
        for k in np.flatnonzero(far):
            sd = max(2.0 * prior.spread[k] * size / STRIDE, 1.0)
            cell = decode_near(hm[i, k], to_cells(fitted[k]), sd)
            labels[i, k] = (STRIDE * np.array(cell) + OFFSET + 0.5) / size
    return labels
