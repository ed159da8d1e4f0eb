"""Consistency on unlabelled images for the heatmap head's first net (`model.consistency.weight` > 0).

    hook = training_hooks(cfg, solver, prep, say)      # registry hook; None when the weight is 0
    points, confidence = teacher_points(forward, grey, teacher_views, size, mean_bgr)
    targets, mask = point_targets(points, confidence, matrices, size, sigma, min_confidence)

Every step, after Caffe has the labelled batch's gradients (a Solver callback), a batch of the run's
unlabelled training images (neither labelled nor test, nor one radiograph with a test image; in a
pseudo-labelled dataset the images with a teacher's labels count as unlabelled too) goes
through a TEACHER, an exponential moving average of the student's weights (`ema`) in the deploy net,
as it is (and, with `teacher_views`, through mild views whose answers are mapped back and averaged).
Its landmarks (argmax, sub-pixel) are carried by the known transform of a STRONG view (random
rotation, scale, shift; a cut-out square; intensity changes; one per batch, or one per image with
`view_per: image`) into that view, drawn there
as Gaussian targets, and the student sees the strong view: its loss is the same masked Euclidean loss
as the labelled images' (the heatmap_mask input), each landmark's mask sqrt(`weight`) where the
teacher's peak reaches `min_confidence` and the landmark stays in the view, else 0. No gradient flows
into the target (it is data). The student's gradients add to the labelled batch's before the update.
An EMA teacher keeps the targets from collapsing to the student's own background (PoseCons/PoseDual).
The teacher restarts from the student's weights when a run resumes. loss.csv keeps the labelled
batch's loss; training.json gets the consistency loss (`hook_loss_last_100`) and the share of the
teacher's landmarks that became targets (`hook_targets_kept_last_100`). Needs `model.partial_labels`
(the mask input); the batch is the solver's.
"""
from pathlib import Path

import numpy as np

from ...codecs import heatmap as codec
from ...data.augment import DEFAULTS as AUGMENT_DEFAULTS, intensity
from ...data.dataset import pseudo_report
from ...data.inputs import to_input
from ...data.resampled import samples_at
from ...data.splits import prepared_roles
from ...runtime.backend import get_caffe
from ...schema import ConfigError, check_range, check_views
from ...views import labels_from_view, labels_to_view, through_views, view_matrix, warp

CONFIG = {
    "weight": 0.0,              # 0: off; the consistency loss's weight beside the labelled loss
    "ema": 0.99,                # the teacher's weights: ema * teacher + (1 - ema) * student, every step
    "min_confidence": 0.3,      # a teacher landmark whose peak is lower gives no target
    "rotate_deg": 10.0,         # the strong view: rotation up to +-this, scale 1 +- `scale`,
    "scale": 0.1,               # shift up to +-`shift` of the input side, a cut-out square of
    "shift": 0.05,              # `cutout` of the side, and prepare.augment's intensity changes
    "cutout": 0.25,
    "view_per": "batch",        # batch: one strong view for the whole batch; image: one per image
    "teacher_views": [],        # the teacher also sees each image through these views (views.py), its
                                # landmarks mapped back and averaged (mean coordinates, mean peak)
}


def check_config(cfg):
    c = cfg["model"]["consistency"]
    for key, low, high in (("weight", 0, 1e6), ("ema", 0, 1), ("min_confidence", 0, 1), ("rotate_deg", 0, 90),
                           ("scale", 0, 0.5), ("shift", 0, 0.4), ("cutout", 0, 0.9)):
        check_range(cfg, f"model.consistency.{key}", low, high)
    if c["view_per"] not in ("batch", "image"):
        raise ConfigError(f"config key 'model.consistency.view_per' must be batch or image, got {c['view_per']!r}")
    check_views(cfg, "model.consistency.teacher_views")
    if c["weight"] > 0 and not cfg["model"]["partial_labels"]:
        raise ConfigError("config key 'model.consistency.weight' > 0 needs model.partial_labels: true "
                          "(the loss mask carries the consistency targets' weight)")


def pseudo_labelled(cfg):
    """The images whose labels a teacher put there: pseudo.json's `candidates` when the dataset is
    a `dentcae pseudo-label` folder, else none."""
    root = cfg["dataset"]["root"]
    report = pseudo_report(root)
    if report is None:
        return set()
    try:
        return set(report["candidates"])
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{Path(root) / 'pseudo.json'}: not a pseudo.json that `dentcae pseudo-label` wrote "
                          f"(it needs the list 'candidates' of the pseudo-labelled images): {err}") from err


def unlabelled_rows(cfg, prep):
    """Prepared-sample rows of the training images that no annotator labelled for this run: without
    labels here, or with a teacher's pseudo-labels (those train as labels AND give consistency targets)."""
    roles = prepared_roles(prep, pseudo_labelled(cfg))
    return [r for r in prep.samples() if roles.get(r["image"]) == "candidate"]


def strong_view(rng, c, size):
    """A random view (views.py) within the configured rotation, scale and shift."""
    return {"rotate": float(rng.uniform(-c["rotate_deg"], c["rotate_deg"])),
            "scale": float(1 + rng.uniform(-c["scale"], c["scale"])),
            "shift": [float(v) for v in rng.uniform(-c["shift"], c["shift"], 2) * size]}


def point_targets(points, confidence, matrices, size, sigma, min_confidence):
    """((N, K, H, H) Gaussian targets in the views, (N, K) 0/1 mask) from a teacher's (N, K, 2)
    landmarks and (N, K) confidences, image i's carried through its own view matrix matrices[i]."""
    moved = np.stack([labels_to_view(p, m, size) for p, m in zip(points, matrices)])
    inside = ((moved >= 0) & (moved <= 1)).all(-1)
    mask = ((confidence >= min_confidence) & inside).astype(np.float32)
    return codec.encode(moved, size, sigma).astype(np.float32) * mask[..., None, None], mask


def teacher_points(forward, grey, views, size, mean_bgr):
    """((N, K, 2) landmarks, (N, K) peak heights) of a teacher net (`forward`: inputs -> heatmaps)
    on grey images, averaged over the input as it is and each view's answer mapped back."""
    points, heights = [], []
    for m, seen in zip(*through_views(grey, views, size)):
        hms = forward(to_input(seen, mean_bgr))
        found = codec.decode(hms, size)
        heights.append(codec.values_at_labels(hms, found, size))
        points.append(labels_from_view(found, m, size))
    return np.mean(points, 0), np.mean(heights, 0)


def _cutout(rng, grey, share):
    side = int(round(share * grey.shape[0]))
    if side:
        y, x = rng.integers(0, grey.shape[0] - side + 1, 2)
        grey[y:y + side, x:x + side] = 0
    return grey


class Consistency:
    """The Solver callbacks: on_start moves the teacher, on_gradients_ready adds the student's
    consistency gradients (Caffe accumulates parameter gradients until the update)."""

    def __init__(self, cfg, solver, samples, mean_bgr, deploy):
        caffe = get_caffe()
        self.cfg, self.c, self.solver = cfg, cfg["model"]["consistency"], solver
        self.samples, self.mean_bgr = samples, mean_bgr
        net = solver.net
        self.teacher = caffe.Net(str(deploy), caffe.TEST)
        self.teacher.blobs["data"].reshape(*net.blobs["data"].data.shape)
        self.teacher.reshape()
        self.rng = np.random.default_rng(cfg["seed"] + 101)
        self.start = next(n for n, l in zip(net._layer_names, net.layers) if l.type != "HDF5Data")
        self.ema = None
        self.losses, self.kept = [], []

    def on_start(self):
        student = self.solver.net.params
        if self.ema is None:
            self.ema = {k: [b.data.copy() for b in v] for k, v in student.items()}
        else:
            a = self.c["ema"]
            for k, blobs in student.items():
                for e, b in zip(self.ema[k], blobs):
                    e *= a
                    e += (1 - a) * b.data
        for k, blobs in self.teacher.params.items():
            for t, e in zip(blobs, self.ema[k]):
                t.data[...] = e

    def on_gradients_ready(self):
        net, size, c = self.solver.net, self.cfg["prepare"]["input_size"], self.c
        batch = net.blobs["data"].data.shape[0]
        grey = self.samples[self.rng.integers(0, len(self.samples), batch)]
        points, confidence = teacher_points(self._teacher, grey, c["teacher_views"], size, self.mean_bgr)
        views = [strong_view(self.rng, c, size) for _ in range(batch if c["view_per"] == "image" else 1)]
        matrices = [view_matrix(v, size) for v in views] * (batch // len(views))
        targets, mask = point_targets(points, confidence, matrices, size, self.cfg["model"]["heatmap_sigma"],
                                      c["min_confidence"])
        a = {**AUGMENT_DEFAULTS, **self.cfg["prepare"]["augment"]}
        seen = np.stack([_cutout(self.rng, intensity(self.rng, warp(g, m, size), a), c["cutout"])
                         for g, m in zip(grey, matrices)])
        self.kept.append(float(mask.mean()))
        w = np.float32(np.sqrt(c["weight"]))
        labelled_loss = net.blobs["loss"].data.copy()       # what the training loop logs, after the step
        net.blobs["data"].data[...] = to_input(seen, self.mean_bgr)
        net.blobs["heatmap"].data[...] = w * targets
        net.blobs["heatmap_mask"].data[...] = w * mask
        self.losses.append(float(net.forward(start=self.start)["loss"]))
        net.backward()
        net.blobs["loss"].data[...] = labelled_loss

    def _teacher(self, x):
        return self.teacher.forward(data=x)["heatmaps"].copy()

    def summary(self):
        """training.json's keys of this hook: the last 100 steps' mean consistency loss and share of
        the teacher's landmarks (confident and inside the strong view) that were targets."""
        return {"hook_loss_last_100": round(float(np.mean(self.losses[-100:])), 6),
                "hook_targets_kept_last_100": round(float(np.mean(self.kept[-100:])), 4)} if self.losses else {}


def training_hooks(cfg, solver, prep, say):
    """The consistency callbacks of a heatmap finetune run with model.consistency.weight > 0, else None."""
    if cfg["stage"] != "finetune" or cfg["model"]["consistency"]["weight"] <= 0:
        return None
    rows = unlabelled_rows(cfg, prep)
    if not rows:
        say("consistency: no unlabelled training image, nothing to add")
        return None
    samples = samples_at(cfg, rows, cfg["prepare"]["input_size"])
    say(f"consistency on {len(samples)} unlabelled training samples, weight {cfg['model']['consistency']['weight']}")
    deploy = Path(cfg["runs_dir"]) / cfg["name"] / "deploy.prototxt"
    return Consistency(cfg, solver, samples, prep.meta["mean_bgr"], deploy)
