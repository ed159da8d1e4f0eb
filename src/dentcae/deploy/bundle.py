"""A trained detector, or an ensemble of several, as one self-contained folder.

    export_bundle(["runs/x"], "models/x", onnx=True)            # nets/, train_labels.npy, model.json
    export_bundle(["runs/x_r0", "runs/x_r1", "runs/x_r2"], "models/x3")   # one bundle, three members
    model = open_model(["models/x"])                            # or run folders: the same Model

A bundle holds, per member (one run), the deploy prototxt and caffemodel of every net its head runs
(the first net, and the heatmap head's refine net), optionally their ONNX files, and the training
labels its shape prior is built from; and model.json: landmarks and layout, input geometry, each
member's resolved config (so its head decodes as it did in evaluation), the spacing and field of
view of the training images, what it was trained on, its test metrics and on what data, the flag
thresholds, the dentcae version, and the SHA-256 of every other file, checked on load (a changed
file is refused by name). The members of one bundle share landmarks, layout and input geometry
(refused by name otherwise). Format 1 (one member, before ensembles) still loads.
"""
import json
import shutil
from pathlib import Path

import numpy as np

from ..inference.forward import onnx_difference
from ..inference.model import Member, Model, ModelError
from ..inference.runs import FORMAT, FORMAT_VERSION, run_model
from ..runtime.atomic import file_sha256, staged_folder


class BundleError(ModelError):
    pass


def _member_entry(i, member, info, tmp, onnx):
    """Copy one member's files into the bundle being written; its model.json entry."""
    prefix = "" if i == 0 else f"m{i}_"
    nets = {}
    for name, files in member.nets.items():
        nets[name] = {"prototxt": f"nets/{prefix}{name}.prototxt", "caffemodel": f"nets/{prefix}{name}.caffemodel"}
        shutil.copyfile(files["prototxt"], tmp / nets[name]["prototxt"])
        shutil.copyfile(files["caffemodel"], tmp / nets[name]["caffemodel"])
        if onnx:
            import onnx as onnx_lib
            from .onnx_export import to_onnx
            nets[name]["onnx"] = f"nets/{prefix}{name}.onnx"
            graph = to_onnx(files["prototxt"], files["caffemodel"])
            onnx_lib.save(graph, str(tmp / nets[name]["onnx"]))
            size = graph.graph.input[0].type.tensor_type.shape.dim[2].dim_value
            info.setdefault("onnx_max_abs_diff_vs_caffe", {})[prefix + name] = onnx_difference(
                files["prototxt"], files["caffemodel"], tmp / nets[name]["onnx"], size)
    labels = f"train_labels{'' if i == 0 else f'_m{i}'}.npy"
    np.save(tmp / labels, member.train_labels)
    return {"name": member.name, "config": member.cfg, "nets": nets, "train_labels": labels,
            "input_size": member.input_size, "resize": member.resize, "mean_bgr": member.mean_bgr,
            "source_run": member.source}


def export_bundle(runs, out, onnx=False, overwrite=False):
    """Write the bundle of one or several finetune run folders to `out` (whole or not at all);
    returns its Model."""
    runs, out = [Path(r) for r in ([runs] if isinstance(runs, (str, Path)) else runs)], Path(out)
    if out.exists() and not (overwrite and _is_bundle(out)):
        raise BundleError(f"{out} exists; choose a new folder (or --overwrite an earlier bundle of dentcae's)")
    for run in runs:
        if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
            raise BundleError(f"{out}: a bundle may not be written inside its run folder {run}")
    try:
        model, _ = run_model(runs)
    except ModelError as e:
        raise BundleError(str(e)) from None
    info = dict(model.info)
    with staged_folder(out) as tmp:
        (tmp / "nets").mkdir()
        info["members"] = [_member_entry(i, m, info, tmp, onnx) for i, m in enumerate(model.members)]
        info["nets"], info["config"] = info["members"][0]["nets"], model.cfg
        files = [r for e in info["members"] for n in e["nets"].values() for r in n.values()]
        info["checksums"] = {rel: file_sha256(tmp / rel) for rel in
                             sorted(files + [e["train_labels"] for e in info["members"]])}
        (tmp / "model.json").write_text(json.dumps(info, indent=1))
    return load_bundle(out)


def _is_bundle(path):
    """A folder dentcae wrote with export: model.json says its format (only those are replaced)."""
    try:
        info = json.loads((Path(path) / "model.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == FORMAT


def _checked(path, info):
    """The bundle's model.json fields, every listed file present and unchanged."""
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("format_version") not in (1, FORMAT_VERSION):
        raise BundleError(f"{path / 'model.json'}: not a {FORMAT} of version 1 or {FORMAT_VERSION}")
    sums = info.get("checksums")
    if not isinstance(sums, dict) or not sums:
        raise BundleError(f"{path / 'model.json'}: has no checksums; export the bundle again")
    for rel, digest in sums.items():
        f = path / rel
        if not f.is_file():
            raise BundleError(f"{f}: missing from the bundle")
        if file_sha256(f) != digest:
            raise BundleError(f"{f}: its checksum differs from model.json's; the bundle was changed after export "
                              "(export it again)")
    return info


def _members(path, info):
    entries = info.get("members") or [{"name": info["name"], "config": info["config"], "nets": info["nets"],
                                       "train_labels": "train_labels.npy", "input_size": info["input_size"],
                                       "resize": info["resize"], "mean_bgr": info["mean_bgr"]}]
    listed = set(info["checksums"])
    for e in entries:
        files = [e["train_labels"]] + [r for n in e["nets"].values() for k, r in n.items() if k != "onnx"]
        unlisted = [r for r in files if r not in listed]
        if unlisted:
            raise BundleError(f"{path / 'model.json'}: {', '.join(unlisted)} has no checksum; export the bundle again")
    return [Member(e["name"], e["config"], {n: {k: path / r for k, r in f.items()} for n, f in e["nets"].items()},
                   np.load(path / e["train_labels"]), e["input_size"], e["resize"], e["mean_bgr"], e.get("source_run"))
            for e in entries]


def load_bundle(path):
    """The Model of a bundle folder, every file's checksum checked."""
    path = Path(path)
    try:
        info = json.loads((path / "model.json").read_text())
    except ValueError as e:
        raise BundleError(f"{path / 'model.json'}: not readable JSON ({e})") from None
    info = _checked(path, info)
    try:
        return Model(path, info, _members(path, info))
    except (KeyError, TypeError) as e:
        raise BundleError(f"{path / 'model.json'}: lacks or mangles {e}; export the bundle again") from None


def open_model(paths):
    """A bundle (model.json), or one or several finetune run folders (config.yaml), as a Model."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    for p in paths:
        if not p.is_dir():
            raise BundleError(f"{p}: not a folder (give a bundle from `dentcae export` or a finetune run folder)")
    if any((p / "model.json").exists() for p in paths):
        if len(paths) > 1:
            raise BundleError(f"{', '.join(map(str, paths))}: give one bundle, or run folders (export several runs "
                              "into one bundle with `dentcae export RUN RUN ... --out BUNDLE`)")
        return load_bundle(paths[0])
    try:
        return run_model(paths)[0]
    except ModelError as e:
        raise BundleError(str(e)) from None
