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

from ..inference.bundles import BundleError, is_bundle, load_bundle
from ..inference.forward import onnx_difference
from ..inference.model import ModelError
from ..inference.runs import run_model
from ..runtime.atomic import file_sha256, staged_folder
from ..runtime.outputs import overlap

__all__ = ["BundleError", "export_bundle", "load_bundle", "open_model"]


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
    if out.exists() and not (overwrite and is_bundle(out)):
        raise BundleError(f"{out} exists; choose a new folder (or --overwrite an earlier bundle of dentcae's)")
    for run in runs:
        how = overlap(out, run)
        if how:
            raise BundleError(f"a bundle may not be written inside its run folder or around it: {out} {how} {run}")
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
