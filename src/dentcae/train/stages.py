"""What a config trains, asked of the registries: its nets, its data, its first weights, its
sub-runs. Nothing here names a head or a pre-training.

    train_net, deploy = nets_for(cfg, k, (train_list, test_list), test_batch)
    train_src, test_src, n_train, n_test = stage_data(cfg, prep)
    source, layers, extra = init_source(cfg)         # where the first weights come from
    {"refine": sub_cfg} == subruns(cfg)              # nets a head trains after its first
    write_config_prototxts(cfg, "prototxt/paper")    # `dentcae prototxt`
"""
from pathlib import Path

from ..config import read_yaml_mapping
from ..data.prepare import sample_landmarks
from ..nets.alexnet import scale_learning_rates, write_net
from ..nets.solver import solver_param, write_solver
from ..nets.transfer import TransferError, check_imagenet_weights, copy_layers, read_caffemodel
from ..registry import HEADS, PRETEXTS, stage_plugin
from ..schema import STAGES

ENCODER_CONVS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


class TrainingError(RuntimeError):
    pass


def nets_for(cfg, num_landmarks, sources, test_batch=None):
    """The (train, deploy) NetParameters of a config's stage. `sources` are the train and test
    HDF5 list files; `num_landmarks` is K per sample (ignored by pre-trainings)."""
    m, sc, plugin = cfg["model"], cfg["solver"], stage_plugin(cfg)
    size = plugin.input_size(cfg)
    train = plugin.build(num_landmarks, m, size=size, train=tuple(str(s) for s in sources),
                         batch=sc["batch_size"], test_batch=test_batch or sc["test_batch_size"], freeze=m["freeze"])
    _check_frozen(train, m["freeze"], cfg["name"])
    if m["copied_lr_mult"] != 1:
        scale_learning_rates(train, copied_layers(cfg), m["copied_lr_mult"])
    return train, plugin.build(num_landmarks, m, size=size, deploy=True)


def _check_frozen(net, freeze, name):
    """Every layer model.freeze names must be a layer of the net that learns: a misspelt name would
    otherwise train at full rate while the run says it was frozen."""
    learning = [layer.name for layer in net.layer if layer.param]
    unknown = [f for f in freeze if f not in learning]
    if unknown:
        raise TrainingError(f"{name}: model.freeze names {', '.join(unknown)}, not a layer of this net that "
                            f"learns (its layers with weights: {', '.join(learning)})")


def stage_data(cfg, prep):
    """(train source, test source, train count, test count): the HDF5 lists a stage trains on."""
    return stage_plugin(cfg).sources(cfg, prep)


def stage_splits(cfg):
    """The prepared splits a stage reads (checked for NaN before it trains)."""
    return stage_plugin(cfg).SPLITS


def head_of(cfg):
    return HEADS.get(cfg["model"]["head"])


def subruns(cfg):
    """{name: config} of the nets the head trains after a finetune run's first (none otherwise)."""
    return head_of(cfg).subruns(cfg) if cfg["stage"] == "finetune" else {}




def copied_layers(cfg):
    """The layers a config copies from its start: [] from scratch, None for every layer (init run)."""
    m = cfg["model"]
    if m["init"] == "scratch":
        return []
    if m["init"] == "run":
        return None
    if m["init"] == "imagenet":
        return [l for l in m["copy_layers"] if cfg["stage"] == "finetune" or l in ENCODER_CONVS + ["fc6", "fc7"]]
    return list(m["copy_layers"])


def _run_source(cfg):
    """init run: the finished finetune run's weights for this stage (its refine net for `refine`)."""
    m = cfg["model"]
    if not m["init_run"]:
        raise TrainingError("model.init: run needs model.init_run (a finished finetune run folder)")
    run = Path(m["init_run"])
    source = run / (cfg["stage"] if cfg["stage"] not in STAGES else "") / "final.caffemodel"
    if not source.exists():
        raise TrainingError(f"model.init_run: {source} not found: train {run} first")
    saved = read_yaml_mapping(run / "config.yaml") if (run / "config.yaml").exists() else {}
    if saved.get("stage") != "finetune" or saved.get("model", {}).get("head") != m["head"]:
        raise TrainingError(f"model.init_run {run} is not a finetune run of the head '{m['head']}' "
                            f"(its config.yaml: stage {saved.get('stage')!r}, head {saved.get('model', {}).get('head')!r})")
    return source, None, {"init_run": str(run)}


def init_source(cfg):
    """Where the first weights come from: (file or None, layers (None: every layer), extra
    transfer-report fields). Raises before any work (no run folder is made) when the configured
    file is missing, empty or not a readable .caffemodel holding weights."""
    source = _source(cfg)
    if source[0] is not None:
        try:
            held = read_caffemodel(source[0])
        except TransferError as e:
            raise TrainingError(f"model.init {cfg['model']['init']}: {e}") from None
        if not held:
            raise TrainingError(f"model.init {cfg['model']['init']}: {source[0]} holds no weights "
                                f"({source[0].stat().st_size} bytes; a truncated or empty file?)")
    return source


def _source(cfg):
    m, stage = cfg["model"], cfg["stage"]
    if m["init"] == "scratch":
        return None, [], {}
    if m["init"] == "run":
        return _run_source(cfg)
    if m["init"] == "imagenet":
        try:
            warning = check_imagenet_weights(m["imagenet_weights"])
        except TransferError as e:
            raise TrainingError(str(e)) from None
        return Path(m["imagenet_weights"]), copied_layers(cfg), {"warning": warning} if warning else {}
    what = PRETEXTS.get(m["init"]).TITLE
    if stage == "pretrain":
        raise TrainingError(f"model.init: {m['init']} is for finetune configs; pre-training starts from "
                            "imagenet or scratch")
    if not m["pretrain_run"]:
        raise TrainingError(f"model.init: {m['init']} needs model.pretrain_run (the {what} run folder)")
    source = Path(m["pretrain_run"]) / "final.caffemodel"
    if not source.exists():
        raise TrainingError(f"{what} checkpoint {source} not found: run the pre-training first "
                            f"(make pretrain, or dentcae pretrain --config ...)")
    _check_pretraining_kind(Path(m["pretrain_run"]), m["init"])
    return source, copied_layers(cfg), {"pretraining": f"{what} run {m['pretrain_run']}"}


def _check_pretraining_kind(run, init):
    """model.pretrain_run must be a run of the pre-training model.init names (its config.yaml says)."""
    saved = run / "config.yaml"
    if not saved.exists():
        return
    kind = read_yaml_mapping(saved).get("model", {}).get("pretext", "cae")
    stage = read_yaml_mapping(saved).get("stage")
    if stage != "pretrain" or kind != init:
        raise TrainingError(f"model.pretrain_run {run} is a '{stage}' run of model.pretext '{kind}', not a "
                            f"'{init}' pre-training (model.init: {init})")


def init_weights(net, source, layers, extra=None):
    """Copy `layers` of `source` into `net`; returns the transfer report (also for scratch)."""
    if source is None:
        return {"source": "scratch (MSRA/Xavier random initialisation; no ImageNet weights)",
                "copied": {}, "fresh": list(net.params.keys())}
    try:
        report = copy_layers(net, source, list(net.params.keys()) if layers is None else layers)
    except TransferError as e:
        raise TrainingError(str(e)) from None
    report.update(extra or {})
    return report


def write_config_prototxts(cfg, out, num_landmarks=None):
    """The nets and solver of a config's stage, into `out`, with data sources named relative to the
    working directory (cae_train.txt, ...): the files committed under prototxt/ are these.
    K comes from `num_landmarks`, else model.num_landmarks, else the configured dataset.
    Frozen layers show in the name: alexnet_landmarks_fc6frozen_train.prototxt. A head's sub-runs
    go to out/<name> (the heatmap's refine net: out/refine)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = stage_plugin(cfg).STEM
    k = num_landmarks or cfg["model"]["num_landmarks"]
    if k is None and cfg["stage"] == "finetune":
        k = sample_landmarks(cfg)
    freeze = cfg["model"]["freeze"]
    tag = "".join(f"_{name}" for name in freeze) + ("frozen" if freeze else "")
    split = "cae" if cfg["stage"] == "pretrain" else "reg"     # a sub-run's lists share the names
    train, deploy = nets_for(cfg, k, (f"{split}_train.txt", f"{split}_test.txt"))
    train_file = out / f"alexnet_{stem}{tag}_train.prototxt"
    written = [write_net(train, train_file), write_net(deploy, out / f"alexnet_{stem}_deploy.prototxt")]
    sp = solver_param(cfg["solver"], train_file.name, f"snapshots/{stem}{tag}", test_iter=1)
    written.append(write_solver(sp, out / f"{stem}{tag}_solver.prototxt"))
    for name, sub in subruns(cfg).items():
        written += write_config_prototxts(sub, out / name, k)
    return written
