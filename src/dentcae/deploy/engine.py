"""A trained detector on one X-ray at a time, with Caffe or ONNX Runtime.

    detector = Detector(model, backend="onnx")              # model: bundle.open_model(path)
    points, confidence = detector(grey)                     # (L, 2) image pixels, (L,) in [0, 1] or NaN

The image is cut into samples as prepare.py cuts training images (both halves of a bilateral image,
the right one mirrored), each resized to the net's input (prepare.resize) and mean-subtracted; the
first net's outputs are decoded by the head (with its shape prior from the training labels), and the
head's `after_predict` hook runs what follows (the heatmap head's refine net) and gives each landmark
a confidence. Points come back in the image's own pixels and the dataset's landmark order, exactly as
`dentcae evaluate` maps its predictions.
"""
import numpy as np

from ..data.geometry import crops_of, cut_sample, resize_sample, to_pixels
from ..data.inputs import to_input
from ..registry import HEADS

BATCH = 16


def caffe_forward(prototxt, weights, gpu=None):
    """Run a Caffe deploy net on input arrays (N, 3, S, S): its first output."""
    from ..nets.infer import load_net, run_net
    from ..runtime.backend import set_device
    set_device(gpu)
    net = load_net(prototxt, weights)
    return lambda x: run_net(net, x, BATCH)


def onnx_forward(path):
    """Run an ONNX model on input arrays with ONNX Runtime (CPU): its first output."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("the onnx backend needs onnxruntime: pip install 'dentcae[onnx]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def forward(x):
        return np.concatenate([session.run(None, {"data": np.ascontiguousarray(x[i:i + BATCH], np.float32)})[0]
                               for i in range(0, len(x), BATCH)])
    return forward


class Detector:
    """The nets of a model (bundle.Model) on one backend, and the head that decodes them."""

    def __init__(self, model, backend="caffe", gpu=None):
        if backend not in ("caffe", "onnx"):
            raise ValueError(f"backend must be caffe or onnx, got {backend!r}")
        self.model, self.head = model, HEADS.get(model.cfg["model"]["head"])
        self.forwards = {}
        for name, files in model.nets.items():
            if backend == "onnx":
                if "onnx" not in files:
                    raise FileNotFoundError(f"{model.path}: no ONNX file of the net '{name}'; export the bundle "
                                            "with `dentcae export RUN --out BUNDLE --onnx`")
                self.forwards[name] = onnx_forward(files["onnx"])
            else:
                self.forwards[name] = caffe_forward(files["prototxt"], files["caffemodel"], gpu)

    def samples(self, grey):
        """[(side, crop, (x0, y0, w, h, flipped))] of one image, as prepare.py cuts it."""
        h, w = grey.shape
        out = []
        for side, x0, cw, flipped in crops_of(self.model.layout, w, h):
            out.append((side, np.ascontiguousarray(cut_sample(grey, x0, 0, cw, h, flipped)), (x0, 0, cw, h, flipped)))
        return out

    def __call__(self, grey):
        """((L, 2) image pixels, (L,) confidence in [0, 1], NaN where the head has none) of one image."""
        m = self.model
        samples = self.samples(np.asarray(grey, np.float32))
        resized = [resize_sample(crop, m.input_size, m.resize) for _, crop, _ in samples]
        outputs = self.forwards["first"](to_input(np.stack([r[0] for r in resized]).astype(np.float32), m.mean_bgr))
        labels = self.head.decode(outputs, m.input_size, m.train_labels)
        labels, confidence = self.head.after_predict(m.cfg, self.forwards, [c for _, c, _ in samples], labels,
                                                     outputs, m.mean_bgr)
        confidence = np.full(labels.shape[:2], np.nan) if confidence is None else np.asarray(confidence, float)
        points = np.full((len(m.landmarks), 2), np.nan)
        conf = np.full(len(m.landmarks), np.nan)
        for (side, _, box), (_, (bw, bh)), lab, c in zip(samples, resized, labels, confidence):
            idx = m.side_indices(side)
            points[idx] = to_pixels(lab, *box, bw, bh)
            conf[idx] = c
        return points, conf
