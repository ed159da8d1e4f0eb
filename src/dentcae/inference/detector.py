"""The one way dentcae turns trained nets into landmarks: evaluate, predict, the confidence
calibration and pseudo-labelling all call a Detector.

    detector = Detector(model, backend="onnx")            # model: runs.run_model(...) or bundle.load_bundle(...)
    found = detector(grey)                                # one image, float32 (H, W)
    found.points, found.confidence, found.spread          # (L, 2) image pixels, (L,), (L,) pixels
    found.beside["coarse_decoding"]                       # what the first net alone said, (L, 2)
    found.passes                                          # [(L, 2)] after each refine pass

Each member of the model (one run, or an ensemble's several) cuts the image into samples as
prepare.py cuts training images (both halves of a bilateral image, the right one mirrored), resizes
them to its input and runs its first net on each sample as it is and through each of
`test_time.views` (views.py). The head decodes every view's output (with its shape prior), the
decoded points are mapped back through the view's matrix and averaged. The head's
`after_first_net` hook runs what follows (the heatmap head's refine net, with its own views
`model.refine.views`) and gives each landmark a confidence. Points come back in the image's own
pixels and the dataset's landmark order; an ensemble's members' points are averaged.

`spread` is the root-mean-square distance (image pixels) of every member's and view's final
estimate of a landmark from their mean: how much the models and views disagree. It is NaN where
there is a single estimate (one net, no views).
"""
from dataclasses import dataclass, field

import numpy as np

from ..data.geometry import crops_of, cut_sample, resize_sample, to_pixels
from ..data.inputs import to_input
from ..registry import HEADS
from ..views import labels_from_view, through_views
from .forward import caffe_forward, onnx_forward


@dataclass
class Found:
    """A Detector's answer for one image."""
    points: np.ndarray                      # (L, 2) image pixels
    confidence: np.ndarray                  # (L,) in [0, 1], NaN where the head gives none
    spread: np.ndarray                      # (L,) image pixels, NaN with a single estimate
    beside: dict = field(default_factory=dict)   # {name: (L, 2)}: the first net's (coarse_decoding), ...
    passes: list = field(default_factory=list)   # [(L, 2)] after each refine pass, the last = points


def _forwards(member, backend, gpu, where):
    out = {}
    for name, files in member.nets.items():
        if backend == "onnx":
            if "onnx" not in files:
                raise FileNotFoundError(f"{where}: no ONNX file of the net '{name}'; export the bundle "
                                        "with `dentcae export RUN --out BUNDLE --onnx`")
            out[name] = onnx_forward(files["onnx"])
        else:
            out[name] = caffe_forward(files["prototxt"], files["caffemodel"], gpu)
    return out


def _mean(arrays):
    return np.mean(np.stack(arrays), 0)


def nan_mean(arrays):
    """The mean over the first axis of what is finite; NaN where nothing is."""
    a = np.stack(arrays)
    seen = np.isfinite(a).sum(0)
    return np.where(seen > 0, np.where(np.isfinite(a), a, 0).sum(0) / np.maximum(seen, 1), np.nan)


def cut_samples(grey, layout):
    """[(side, crop, (x0, y0, w, h, flipped))] of one image, as prepare.py cuts it."""
    h, w = grey.shape
    return [(side, np.ascontiguousarray(cut_sample(grey, x0, 0, cw, h, flipped)), (x0, 0, cw, h, flipped))
            for side, x0, cw, flipped in crops_of(layout, w, h)]


class Detector:
    """The nets of every member of a Model on one backend, and the heads that decode them."""

    def __init__(self, model, backend="caffe", gpu=None):
        if backend not in ("caffe", "onnx"):
            raise ValueError(f"backend must be caffe or onnx, got {backend!r}")
        self.model = model
        self.runners = [(m, HEADS.get(m.head), _forwards(m, backend, gpu, model.path)) for m in model.members]

    def samples(self, grey):
        return cut_samples(grey, self.model.layout)

    def _first_net(self, member, head, forward, resized):
        """The first net over every sample in every view: ((V, N, K, 2) labels mapped back, (N, K)
        confidence or None, {name: (N, K, 2)} alternative decodings averaged over the views)."""
        size = member.input_size
        mats, seen = through_views(resized, member.cfg["test_time"]["views"], size)
        out = forward(to_input(np.concatenate(seen).astype(np.float32), member.mean_bgr))
        out = out.reshape(len(mats), len(resized), *out.shape[1:])
        labels, conf, alt = [], [], {}
        for o, m in zip(out, mats):
            lab = head.decode(o, size, member.train_labels)
            labels.append(labels_from_view(lab, m, size))
            c = head.confidence(o, lab, size)
            conf.append(None if c is None else np.asarray(c, float))
            for name, a in head.alternative_decodings(o, size, member.train_labels).items():
                alt.setdefault(name, []).append(labels_from_view(a, m, size))
        conf = None if conf[0] is None else _mean(conf)
        return np.stack(labels), conf, {name: _mean(v) for name, v in alt.items()}

    def _member(self, member, head, forwards, samples):
        """((E, N, K, 2) every final estimate, (N, K) confidence, {name: (N, K, 2)}, [(N, K, 2) per
        pass after the first net, the last = the final labels], the samples' boxes)."""
        crops = [c for _, c, _ in samples]
        resized = [resize_sample(c, member.input_size, member.resize) for c in crops]
        boxes = [box for _, box in resized]
        views, conf, beside = self._first_net(member, head, forwards["first"], np.stack([r for r, _ in resized]))
        coarse = views.mean(0)
        after = head.after_first_net(member.cfg, forwards, crops, coarse, conf, member.mean_bgr)
        if after["passes"]:
            beside["coarse_decoding"] = coarse
        estimates = after["views"] if after["views"] is not None else views
        conf = after["confidence"]
        conf = np.full(coarse.shape[:2], np.nan) if conf is None else np.asarray(conf, float)
        return estimates, conf, beside, after["passes"] or [coarse], boxes

    def _to_image(self, samples, boxes, labels):
        """(..., N, K, 2) normalised sample labels -> (..., L, 2) image pixels."""
        labels = np.asarray(labels)
        out = np.full(labels.shape[:-3] + (len(self.model.landmarks), 2), np.nan)
        for i, ((side, _, box), (bw, bh)) in enumerate(zip(samples, boxes)):
            idx = self.model.side_indices(side)
            flat = labels[..., i, :, :].reshape(-1, labels.shape[-2], 2)
            out[..., idx, :] = np.stack([to_pixels(f, *box, bw, bh) for f in flat]).reshape(labels.shape[:-3] + (len(idx), 2))
        return out

    def _per_sample(self, samples, values):
        out = np.full(len(self.model.landmarks), np.nan)
        for (side, _, _), v in zip(samples, values):
            out[self.model.side_indices(side)] = v
        return out

    def __call__(self, grey):
        """The Found landmarks of one image."""
        samples = self.samples(np.asarray(grey, np.float32))
        passes, estimates, conf, beside = [], [], [], {}
        for member, head, forwards in self.runners:
            est, c, extra, member_passes, boxes = self._member(member, head, forwards, samples)
            passes.append(self._to_image(samples, boxes, np.stack(member_passes)))
            estimates.append(self._to_image(samples, boxes, est))
            conf.append(self._per_sample(samples, c))
            for name, lab in extra.items():
                beside.setdefault(name, []).append(self._to_image(samples, boxes, lab[None])[0])
        mean = _mean([p[-1] for p in passes])
        every = np.concatenate(estimates)
        spread = np.sqrt(((every - mean) ** 2).sum(-1).mean(0)) if len(every) > 1 else np.full(len(mean), np.nan)
        same = len({len(p) for p in passes}) == 1               # members with as many passes: averaged per pass
        return Found(mean, nan_mean(conf), spread, {n: _mean(v) for n, v in beside.items() if len(v) == len(passes)},
                     list(_mean(passes)) if same and "coarse_decoding" in beside else [])
