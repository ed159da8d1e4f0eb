"""Trained run folders as a Model: one run, or several as an ensemble, their data prepared once.

    model = run_model(["runs/a"])                          # its flag thresholds calibrated (cached)
    model = run_model(["runs/a", "runs/b"], cfgs=[cfg, cfg], calibrate=False)
    info, member, prep = read_run("runs/a")                # model.json's fields, the Member, its data

A run folder holds config.yaml, deploy.prototxt and final.caffemodel (or a snapshot given as its
weights), and one folder per sub-run of its head (the heatmap head's refine/). Every net's weights
are checked against its deploy net before Caffe sees them. A single run's calibration is kept in
<run>/confidence.json, recomputed when its weights or test-time settings change.
"""
import json
from pathlib import Path

import numpy as np

from ..version import __version__
from ..config import load_config
from ..data.dataset import DataError
from ..data.inputs import split_labels
from ..data.prepare import configured_dataset, prepare
from ..nets.infer import check_weights
from ..registry import HEADS
from ..runtime.atomic import file_sha256, write_atomic
from ..schema import test_time_settings
from .calibration import calibrate as calibrate_on
from .model import Member, Model, ModelError, check_members

FORMAT, FORMAT_VERSION = "dentcae-model-bundle", 2


def run_nets(run, cfg, weights=None):
    """{net: {"prototxt", "caffemodel"}} of a run folder: the first net (its final weights, or
    `weights`) and the head's sub-runs'."""
    folders = {"first": Path(run)}
    folders.update({name: Path(run) / name for name in HEADS.get(cfg["model"]["head"]).subruns(cfg)})
    out = {}
    for name, folder in folders.items():
        files = {"prototxt": folder / "deploy.prototxt",
                 "caffemodel": Path(weights) if weights and name == "first" else folder / "final.caffemodel"}
        for f in files.values():
            if not f.is_file():
                raise ModelError(f"{f} not found: the run's net '{name}' is not trained (finish it with "
                                 "`dentcae finetune --config C --resume`)")
        out[name] = files
    return out


def check_nets(nets, head, k):
    """Refuse weights that do not fill their deploy net, or a net whose output does not fit K landmarks."""
    for files in nets.values():
        check_weights(files["prototxt"], files["caffemodel"], *HEADS.get(head).outputs(k), k)


def weights_stamp(nets):
    """{net: SHA-256 of its weights}: which weights a cached or derived file was made from."""
    return {name: file_sha256(files["caffemodel"]) for name, files in sorted(nets.items())}


def run_weights_stamp(run):
    """weights_stamp of a finetune run folder's nets, without preparing its data or scoring it."""
    return weights_stamp(run_nets(run, load_config(Path(run) / "config.yaml")))


def _test_metrics(run):
    """The run's own evaluation (summary.json): its scores and what data they are on, or None."""
    path = Path(run) / "summary.json"
    if not path.exists():
        return None
    s = json.loads(path.read_text())
    keep = ("mre_mm", "sd_mm", "median_mm", "sdr", "baseline_mean_shape_mre_mm", "test_sets", "protocols",
            "measurements")
    return {"data": s.get("data"), **{k: s[k] for k in keep if k in s}}


def _info(run, cfg, prep, ds):
    m = prep.meta
    fov = [(float(r["crop_w"]) * float(r["spacing_mm"]), float(r["crop_h"]) * float(r["spacing_mm"]))
           for r in prep.samples() if int(r["reg_train"]) and r["spacing_mm"] not in ("", "None")]
    head = HEADS.get(cfg["model"]["head"])
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "dentcae_version": __version__,
            "name": cfg["name"], "head": cfg["model"]["head"], "landmarks": list(ds.landmark_names),
            "layout": ds.layout, "sides": {"left": list(ds.left), "right": list(ds.right)} if ds.layout == "bilateral"
            else {}, "input_size": m["input_size"], "resize": m["resize"], "mean_bgr": m["mean_bgr"],
            "spacing_mm": m.get("spacing_mm"),
            "sample_field_of_view_mm": [float(v) for v in np.median(fov, 0)] if fov else None,
            "training_data": {"dataset": m["dataset"], "synthetic": m["synthetic"], "annotator": ds.annotator,
                              "labelled_train_images": m.get("labelled_train_images"),
                              "label_budget": m.get("label_budget")},
            "decoding": {"head": cfg["model"]["head"], "sub_runs": sorted(head.subruns(cfg)),
                         **test_time_settings(cfg)},
            "test_metrics": _test_metrics(run), "config": cfg, "source_run": str(Path(run).resolve())}


def _training_data(run, cfg):
    """The run's prepared data (its training labels, the calibration images): a run folder needs its
    dataset where its config says; a bundle does not."""
    try:
        return prepare(cfg)
    except DataError as e:
        if Path(cfg["dataset"]["root"]).is_dir():
            raise                          # the data is there but wrong: its own error names the file
        raise ModelError(f"{run}: a run folder needs the data it was trained on ({e}); run dentcae from the "
                         f"folder it was trained in, where that data is (a bundle, `dentcae export {run} --out "
                         "BUNDLE` made there, needs none)") from None


def read_run(run, cfg=None, prep=None, weights=None):
    """(model.json's fields, the Member, the Prepared data) of a finetune run folder; `cfg` (the
    run's own config.yaml by default, or one differing in test-time keys) and `prep` given are used."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise ModelError(f"{run}: not a run folder or a bundle (no config.yaml, no model.json)")
    cfg = cfg or load_config(run / "config.yaml")
    if cfg["stage"] != "finetune":
        raise ModelError(f"{run}: a {cfg['stage']} run; predict, evaluate and export take a finetune run")
    nets = run_nets(run, cfg, weights)
    prep = prep or _training_data(run, cfg)
    check_nets(nets, cfg["model"]["head"], prep.meta["num_landmarks"])
    info = _info(run, cfg, prep, configured_dataset(cfg))
    m = prep.meta
    return info, Member(cfg["name"], cfg, nets, split_labels(prep), m["input_size"], m["resize"], m["mean_bgr"],
                        str(run.resolve())), prep


def _calibrated(run, model, prep, progress, gpu):
    """The run folder's calibration: computed on its training images once, kept in
    <run>/confidence.json (recomputed when the weights or the test-time settings change)."""
    path = Path(run) / "confidence.json"
    cfg = model.cfg
    stamp = {"weights": weights_stamp(model.members[0].nets),
             "test_time": test_time_settings(cfg)}
    if path.exists():
        saved = json.loads(path.read_text())
        if {k: saved.get(k) for k in stamp} == stamp and "spread_threshold" in saved.get("confidence", {}):
            return saved["confidence"]
    conf = calibrate_on(model, prep, progress, gpu)
    write_atomic(path, json.dumps({**stamp, "confidence": conf}, indent=1))
    return conf


def run_model(runs, cfgs=None, weights=None, calibrate=True, progress=True, gpu=None):
    """A Model of one or several finetune run folders (an ensemble: same landmarks and geometry),
    calibrated on the first run's labelled training images unless `calibrate` is False; returns
    (Model, the first run's Prepared data)."""
    read = [read_run(r, (cfgs or [None] * len(runs))[i], None, weights if i == 0 else None)
            for i, r in enumerate(runs)]
    infos = [i for i, _, _ in read]
    check_members(infos, [str(r) for r in runs])
    info = dict(infos[0])
    if len(runs) > 1:
        info["name"] = f"ensemble of {len(runs)}: " + ", ".join(i["name"] for i in infos)
        info["members"] = [{"name": i["name"], "source_run": i["source_run"], "test_metrics": i["test_metrics"]}
                           for i in infos]
    model, prep = Model(runs[0], info, [m for _, m, _ in read]), read[0][2]
    if calibrate:
        model.info["confidence"] = _calibrated(runs[0], model, prep, progress, gpu) \
            if len(runs) == 1 and weights is None else calibrate_on(model, prep, progress, gpu)
    return model, prep
