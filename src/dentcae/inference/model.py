"""What a Detector runs: one trained detector (a Member: its nets, config, shape-prior labels and
input geometry) or several of the same landmarks and layout (a Model, an ensemble).

    model = Model(path, info, [member])              # runs.run_model or deploy.bundle.load_bundle make them
    model.landmarks, model.layout, model.side_indices("right"), model.threshold

An ensemble's members must agree on the landmarks (names and order), the layout and its sides and
the input geometry (input size and resize): check_members refuses others, naming what differs.
"""
from pathlib import Path


class ModelError(ValueError):
    pass


class Member:
    """One trained detector: {net: {"prototxt", "caffemodel"[, "onnx"]}}, its resolved config, the
    training labels its shape prior is built from, and its input geometry and mean."""

    def __init__(self, name, cfg, nets, train_labels, input_size, resize, mean_bgr, source=None):
        self.name, self.cfg, self.nets, self.train_labels = name, cfg, nets, train_labels
        self.input_size, self.resize, self.mean_bgr, self.source = input_size, resize, mean_bgr, source

    @property
    def head(self):
        return self.cfg["model"]["head"]


GEOMETRY = ("landmarks", "layout", "sides")


def check_members(infos, names):
    """Refuse members (their model.json-like `infos`) that differ in landmarks, layout, sides or
    input geometry; `names` say which run or bundle each is."""
    first = infos[0]
    for info, name in zip(infos[1:], names[1:]):
        for key in GEOMETRY + ("input_size", "resize"):
            if info.get(key) != first.get(key):
                raise ModelError(f"{name} differs from {names[0]} in {key} ({info.get(key)!r} vs {first.get(key)!r}): "
                                 "an ensemble needs the same landmarks, layout and input geometry")


class Model:
    """One or several Members of the same landmarks and layout, and what describes them (`info`:
    model.json's fields, with `confidence`, the flag thresholds, once calibrated)."""

    def __init__(self, path, info, members):
        if not members:
            raise ModelError(f"{path}: a model needs at least one member")
        self.path, self.info, self.members = Path(path), info, list(members)
        self.landmarks, self.layout, self.sides = info["landmarks"], info["layout"], info["sides"]
        self.name = info["name"]

    @property
    def cfg(self):
        """The first member's config (the data it was trained on; members share landmarks)."""
        return self.members[0].cfg

    def side_indices(self, side):
        return self.sides.get(side, list(range(len(self.landmarks))))

    @property
    def calibration(self):
        return self.info.get("confidence") or {}

    @property
    def threshold(self):
        return self.calibration.get("threshold")
