"""A trained detector as one self-contained folder, and the model a run folder or a bundle describes.

    export_bundle("runs/x", "models/x", onnx=True)     # nets/, train_labels.npy, model.json
    model = open_model("models/x")                     # or open_model("runs/x"): the same Model

A bundle holds the deploy prototxt and caffemodel of every net the head runs (the first net, and
the heatmap head's refine net), optionally their ONNX files, the training labels the shape prior is
built from, and model.json: landmarks and layout, input geometry, the whole resolved config (so the
head decodes as it did in evaluation), the spacing and field of view of the training images, what it
was trained on, its test metrics and on what data, the confidence threshold, the dentcae version,
and the SHA-256 of every other file, checked on load (a changed file is refused by name).
"""
import json
import shutil
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import load_config
from ..registry import HEADS
from ..schema import value_at
from ..runtime.atomic import file_sha256, staged_folder, write_atomic

FORMAT = "dentcae-model-bundle"
FORMAT_VERSION = 1


class BundleError(ValueError):
    pass


class Model:
    """What predicting needs, from model.json's fields (a bundle) or a run folder's files."""

    def __init__(self, path, info, nets, train_labels):
        self.path, self.info, self.nets, self.train_labels = Path(path), info, nets, train_labels
        self.cfg = info["config"]
        self.landmarks, self.layout, self.sides = info["landmarks"], info["layout"], info["sides"]
        self.input_size, self.resize, self.mean_bgr = info["input_size"], info["resize"], info["mean_bgr"]
        self.name = info["name"]

    def side_indices(self, side):
        return self.sides.get(side, list(range(len(self.landmarks))))

    @property
    def threshold(self):
        return (self.info.get("confidence") or {}).get("threshold")


def _run_nets(run, cfg):
    """{net: {"prototxt", "caffemodel"}} of a run folder: the first net and the head's sub-runs."""
    nets = {"first": Path(run)}
    nets.update({name: Path(run) / name for name in HEADS.get(cfg["model"]["head"]).subruns(cfg)})
    out = {}
    for name, folder in nets.items():
        files = {"prototxt": folder / "deploy.prototxt", "caffemodel": folder / "final.caffemodel"}
        for f in files.values():
            if not f.is_file():
                raise BundleError(f"{f} not found: the run's net '{name}' is not trained (finish it with "
                                  "`dentcae finetune --config C --resume`)")
        out[name] = files
    return out


def _test_metrics(run):
    """The run's own evaluation (summary.json): its scores and what data they are on, or None."""
    path = Path(run) / "summary.json"
    if not path.exists():
        return None
    s = json.loads(path.read_text())
    keep = ("mre_mm", "sd_mm", "median_mm", "sdr", "baseline_mean_shape_mre_mm", "test_sets", "protocols",
            "measurements")
    return {"data": s.get("data"), **{k: s[k] for k in keep if k in s}}


def _decoding(cfg):
    """The head and its test-time settings (what decoding does beyond the nets), for model.json."""
    head = HEADS.get(cfg["model"]["head"])
    return {"head": cfg["model"]["head"], "sub_runs": sorted(head.subruns(cfg)),
            **{key: value_at(cfg, key) for key in head.TEST_TIME_KEYS}}


def run_info(run):
    """(model.json's fields, nets, training labels) of a finetune run folder (prepares its data, cached)."""
    from ..data.inputs import split_labels
    from ..data.prepare import configured_dataset, prepare
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise BundleError(f"{run}: not a run folder or a bundle (no config.yaml, no model.json)")
    cfg = load_config(run / "config.yaml")
    if cfg["stage"] != "finetune":
        raise BundleError(f"{run}: a {cfg['stage']} run; predict and export take a finetune run")
    nets = _run_nets(run, cfg)
    prep, ds = prepare(cfg), configured_dataset(cfg)
    m = prep.meta
    fov = [(float(r["crop_w"]) * float(r["spacing_mm"]), float(r["crop_h"]) * float(r["spacing_mm"]))
           for r in prep.samples() if int(r["reg_train"]) and r["spacing_mm"] not in ("", "None")]
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "dentcae_version": __version__,
            "name": cfg["name"], "head": cfg["model"]["head"], "landmarks": list(ds.landmark_names),
            "layout": ds.layout, "sides": {"left": list(ds.left), "right": list(ds.right)} if ds.layout == "bilateral"
            else {}, "input_size": m["input_size"], "resize": m["resize"], "mean_bgr": m["mean_bgr"],
            "spacing_mm": m.get("spacing_mm"),
            "sample_field_of_view_mm": [float(v) for v in np.median(fov, 0)] if fov else None,
            "training_data": {"dataset": m["dataset"], "synthetic": m["synthetic"],
                              "annotator": ds.annotator,
                              "labelled_train_images": m.get("labelled_train_images"),
                              "label_budget": m.get("label_budget")},
            "decoding": _decoding(cfg), "test_metrics": _test_metrics(run), "config": cfg,
            "source_run": str(run.resolve())}
    return info, nets, split_labels(prep)


def weights_stamp(nets):
    """{net: SHA-256 of its weights}: which weights a cached or derived file was made from."""
    return {name: file_sha256(files["caffemodel"]) for name, files in sorted(nets.items())}


def run_weights_stamp(run):
    """weights_stamp of a finetune run folder's nets, without preparing its data or scoring it."""
    return weights_stamp(_run_nets(run, load_config(Path(run) / "config.yaml")))


def _cached_threshold(run, info, nets, labels):
    """The run folder's confidence threshold: computed on its training images once, kept in
    <run>/confidence.json (recomputed when the weights change)."""
    from .confidence import training_threshold
    path = Path(run) / "confidence.json"
    stamp = weights_stamp(nets)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("weights") == stamp:
            return saved["confidence"]
    conf = training_threshold(Model(run, info, nets, labels))
    write_atomic(path, json.dumps({"weights": stamp, "confidence": conf}, indent=1))
    return conf


def load_bundle(path):
    """The Model of a bundle folder, every file's checksum checked."""
    path = Path(path)
    try:
        info = json.loads((path / "model.json").read_text())
    except ValueError as e:
        raise BundleError(f"{path / 'model.json'}: not readable JSON ({e})") from None
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path / 'model.json'}: not a {FORMAT} of version {FORMAT_VERSION}")
    for rel, digest in info["checksums"].items():
        f = path / rel
        if not f.is_file():
            raise BundleError(f"{f}: missing from the bundle")
        if file_sha256(f) != digest:
            raise BundleError(f"{f}: its checksum differs from model.json's; the bundle was changed after export "
                              "(export it again)")
    nets = {name: {k: path / rel for k, rel in files.items()} for name, files in info["nets"].items()}
    return Model(path, info, nets, np.load(path / "train_labels.npy"))


def open_model(path):
    """A bundle (model.json) or a finetune run folder (config.yaml), as a Model."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a folder (give a bundle from `dentcae export` or a finetune run folder)")
    if (path / "model.json").exists():
        return load_bundle(path)
    info, nets, labels = run_info(path)
    info["confidence"] = _cached_threshold(path, info, nets, labels)
    return Model(path, info, nets, labels)


def _write_onnx(nets, folder):
    """ONNX files of every net; returns {net: max |ONNX Runtime - Caffe|} on a random input."""
    import onnx
    from .engine import caffe_forward, onnx_forward
    from .onnx_export import to_onnx
    diffs = {}
    for name, files in nets.items():
        model = to_onnx(files["prototxt"], files["caffemodel"])
        onnx.save(model, str(folder / f"{name}.onnx"))
        size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
        x = np.random.default_rng(0).normal(0, 60, (2, 3, size, size)).astype(np.float32)
        a = caffe_forward(files["prototxt"], files["caffemodel"])(x)
        diffs[name] = float(np.abs(a - onnx_forward(folder / f"{name}.onnx")(x)).max())
    return diffs


def export_bundle(run, out, onnx=False, overwrite=False):
    """Write the bundle of a finetune run folder to `out` (whole or not at all); returns its Model."""
    run, out = Path(run), Path(out)
    if out.exists() and not (overwrite and (out / "model.json").exists()):
        raise BundleError(f"{out} exists; choose a new folder (or --overwrite an earlier bundle)")
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise BundleError(f"{out}: a bundle may not be written inside its run folder {run}")
    info, nets, labels = run_info(run)
    info["confidence"] = _cached_threshold(run, info, nets, labels)
    with staged_folder(out) as tmp:
        (tmp / "nets").mkdir()
        entries = {}
        for name, files in nets.items():
            entries[name] = {"prototxt": f"nets/{name}.prototxt", "caffemodel": f"nets/{name}.caffemodel"}
            shutil.copyfile(files["prototxt"], tmp / entries[name]["prototxt"])
            shutil.copyfile(files["caffemodel"], tmp / entries[name]["caffemodel"])
        if onnx:
            info["onnx_max_abs_diff_vs_caffe"] = _write_onnx(nets, tmp / "nets")
            for name in nets:
                entries[name]["onnx"] = f"nets/{name}.onnx"
        np.save(tmp / "train_labels.npy", labels)
        info["nets"] = entries
        info["checksums"] = {rel: file_sha256(tmp / rel) for rel in
                             sorted([r for e in entries.values() for r in e.values()] + ["train_labels.npy"])}
        (tmp / "model.json").write_text(json.dumps(info, indent=1))
    return load_bundle(out)

