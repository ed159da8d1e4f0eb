"""YAML configs: a base file plus small per-experiment files, validated on load.

A config may name `_base_: other.yaml` (relative to itself); its keys override the base's, nested
dicts merge key by key. Every key must exist in SCHEMA below (an unknown key is an error naming its
dotted path), and every value must have the schema default's type. `--set a.b=value` overrides
apply last and are parsed as YAML scalars.
"""
import copy
import re
from pathlib import Path

import yaml

from .atomic import write_atomic
from .heatmap import STRIDE
from .pretext import check_methods


class ConfigError(ValueError):
    pass


# The schema is the default config: every allowed key, its default and (by the default) its type.
# None means "optional, any of the types in OPTIONAL_TYPES".
SCHEMA = {
    "name": "run",
    "stage": "finetune",                    # pretrain (model.pretext) | finetune (model.head)
    "runs_dir": "runs",                     # the run folder is runs_dir/name
    "seed": 0,
    "dataset": {
        "root": "data/phantom",             # a folder in the format of data/README.md
        "synth": None,                      # {images, annotated, seed}: make the phantom if missing
        "skip_bad": False,                  # per-image errors become a report instead of a stop
        "landmarks": None,                  # [names]: train and evaluate on these landmarks only
        "label_budget": None,               # N: keep the labels of only N training images (seeded,
                                            # whole groups); the others pre-train, unlabelled
    },
    "prepare": {
        "input_size": 224,
        "resize": "stretch",                # stretch (the paper's) | pad: black to a square, aspect kept
        "augment": {                        # transformed copies of each training sample (augment.py)
            "copies": 0,                    # 0: none (the paper's configs)
            "rotate_deg": 10.0, "scale": 0.1, "shift": 0.05,     # geometry: +- degrees, fraction, of size
            "gamma": 0.25, "contrast": 0.2, "noise": 2.0,        # intensity: log-gamma, factor, grey levels
            "seed": 0,
        },
        "mean": "imagenet",                 # imagenet (BVLC BGR mean) | dataset (per-channel mean)
        "cae_holdout": 0.1,                 # fraction of all images held out from CAE training
        "regressor_holdout": 0.2,           # fraction of annotated images held out (test split)
        "folds": 0,                         # >1: k-fold over annotated images instead of holdout
        "fold": 0,                          # which fold is the test split when folds > 1
        "split_seed": 0,
        "cache_dir": "data/cache",
    },
    "model": {
        "init": "scratch",                  # scratch | imagenet | cae | pretext
        "head": "regression",               # finetune: regression (the paper's fc8_landmarks) | heatmap
        "pretext": "cae",                   # pretrain: cae (the paper's auto-encoder) | augment (name
                                            # the augmentation: the paper's other unsupervised task)
        "pretext_methods": ["identity", "rot90", "rot180", "rot270", "hflip", "gamma", "blur"],
        "imagenet_weights": "bvlc_alexnet.caffemodel",
        "cae_run": None,                    # init cae: the CAE run folder whose final weights are copied
        "pretext_run": None,                # init pretext: the augment-pretext run folder, likewise
        "copy_layers": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6"],
        "freeze": [],                       # layers whose lr_mult/decay_mult are 0
        "dropout": 0.5,                     # drop6/drop7 ratio (AlexNet and the paper: 0.5)
        "fc_width": 4096,                   # fc6/fc7 and the CAE's dec_fc6/dec_fc7 (AlexNet: 4096;
                                            # the tests use narrow nets, same names and code paths)
        "num_landmarks": None,              # None: from the dataset
        "head_width": 128,                  # heatmap head: channels after conv5 (half after conv2)
        "head_lr_mult": 1.0,                # heatmap head: learning-rate multiplier of its layers
        "heatmap_sigma": 2.0,               # heatmap head: target Gaussian sigma in heatmap pixels
        "refine": {                         # heatmap head: a second heatmap net on patches around each
                                            # first estimate, at a finer scale (refine.py)
            "patch": 0,                     # 0: off; else the patch side in pixels of the finer sample
            "fine_size": 768,               # the sample resized (as prepare.resize) to this side
            "draws": 4,                     # training patches per landmark and labelled sample
            "jitter": 0.02,                 # sd of a patch centre's offset from its landmark, of the side
            "max_iter": 600,                # the refine net's solver (the rest is solver's)
            "batch_size": 32,
            "passes": 1,                    # test time: passes, each re-centring on the last estimate
            "tta_shift": 0,                 # test time: 0, or also patches moved +-this many fine
                                            # pixels along each axis (a multiple of 4), averaged
        },
    },
    "solver": {
        "type": "SGD",                      # SGD | Adam
        "base_lr": 0.001,
        "lr_policy": "step",                # fixed | step | inv | poly | exp | multistep
        "gamma": 0.1,
        "stepsize": 1000,
        "stepvalue": [],
        "power": 0.75,
        "momentum": 0.9,
        "momentum2": 0.999,
        "weight_decay": 0.0005,
        "max_iter": 1000,
        "batch_size": 16,
        "test_batch_size": 16,
        "test_interval": 100,
        "display": 20,
        "snapshot": 100,
        "clip_gradients": -1.0,
        "random_seed": 0,
    },
    "train": {
        "loss_explode_factor": 1000.0,      # stop when loss > factor * first loss
        "save_init": False,                 # also save the weights before the first step
    },
}
OPTIONAL_TYPES = (str, int, float, dict, list)
STAGES = ("pretrain", "finetune", "refine")   # refine: made by a heatmap finetune
INITS = ("scratch", "imagenet", "cae", "pretext")
HEADS = ("regression", "heatmap")
PRETEXTS = ("cae", "augment")


def _check(cfg, schema, where):
    for key, value in cfg.items():
        path = f"{where}{key}"
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"unknown config key '{path}' (known here: {known})")
        default = schema[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{path}' must be a mapping, got {value!r}")
            _check(value, default, path + ".")
        elif default is None:
            if value is not None and not isinstance(value, OPTIONAL_TYPES):
                raise ConfigError(f"config key '{path}' has an unsupported value {value!r}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"config key '{path}' must be true or false, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"config key '{path}' must be a number, got {value!r}")
        elif not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
            raise ConfigError(f"config key '{path}' must be {type(default).__name__}, got {value!r}")


def merge(base, over):
    """Nested dict `over` on top of `base` (dicts merge key by key; other values replace)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "synth":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-3 (no dot) as a string; like YAML 1.2, read it as the number it is."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"), list("-+0123456789."))


def yaml_load(text):
    return yaml.load(text, Loader=_Loader)


def read_yaml_mapping(path, what="config", allow_empty=True):
    """A YAML file that must hold a mapping; every failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        data = yaml_load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None and allow_empty:
        return {}
    if data is None:
        raise ConfigError(f"{path}: the {what} file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of keys")
    return data


def _read(path, seen=()):
    path = Path(path)
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    data = read_yaml_mapping(path)
    base = data.pop("_base_", None)
    try:
        _check(data, SCHEMA, "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if base is None:
        return data
    return merge(_read(path.parent / base, seen + (path.resolve(),)), data)


def parse_set(items):
    """['solver.base_lr=0.0005', ...] -> nested dict of overrides."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. solver.base_lr=0.0005")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = yaml_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: not a valid YAML value ({e})") from None
    return out


def load_config(path, overrides=None):
    """Resolve `_base_` chains, apply `--set` overrides, fill defaults, validate; returns a dict."""
    cfg = _read(path)
    extra = parse_set(overrides) if isinstance(overrides, list) else (overrides or {})
    try:
        _check(extra, SCHEMA, "")
    except ConfigError as e:
        raise ConfigError(f"--set: {e}") from None
    cfg = merge(merge(SCHEMA, cfg), extra)
    validate_values(cfg)
    return cfg


def check_name(name, key="name"):
    """A run or table name: one plain path component (it names a folder that may be deleted)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name \
            or name.startswith("~") or "\0" in name:
        raise ConfigError(f"config key '{key}' must be a plain folder name (no '/', '..', '~' or empty), "
                          f"got {name!r}")
    return name


def validate_values(cfg):
    check_name(cfg["name"])
    if cfg["stage"] not in STAGES:
        raise ConfigError(f"config key 'stage' must be one of {STAGES}, got {cfg['stage']!r}")
    for key, allowed in (("init", INITS), ("head", HEADS), ("pretext", PRETEXTS)):
        if cfg["model"][key] not in allowed:
            raise ConfigError(f"config key 'model.{key}' must be one of {allowed}, got {cfg['model'][key]!r}")
    if cfg["model"]["pretext"] == "augment":
        try:
            check_methods(cfg["model"]["pretext_methods"])
        except ValueError as e:
            raise ConfigError(f"config key {e}") from None
    if cfg["model"]["fc_width"] < 1:
        raise ConfigError("config key 'model.fc_width' must be at least 1")
    if cfg["prepare"]["resize"] not in ("stretch", "pad"):
        raise ConfigError(f"config key 'prepare.resize' must be stretch or pad, got {cfg['prepare']['resize']!r}")
    if cfg["prepare"]["augment"]["copies"] < 0:
        raise ConfigError("config key 'prepare.augment.copies' must be 0 or more")
    if cfg["prepare"]["mean"] not in ("imagenet", "dataset"):
        raise ConfigError("config key 'prepare.mean' must be imagenet or dataset")
    if cfg["solver"]["type"] not in ("SGD", "Adam"):
        raise ConfigError(f"config key 'solver.type' must be SGD or Adam, got {cfg['solver']['type']!r}")
    for key in ("cae_holdout", "regressor_holdout"):
        if not 0 < cfg["prepare"][key] < 1:
            raise ConfigError(f"config key 'prepare.{key}' must be between 0 and 1")
    if not 67 <= cfg["prepare"]["input_size"] <= 2048:
        raise ConfigError("config key 'prepare.input_size' must be 67 (AlexNet's pool5 needs it) to 2048")
    _check_solver_ranges(cfg["solver"])
    _check_refine(cfg["model"]["refine"])
    synth = cfg["dataset"]["synth"]
    if synth is not None:
        if not isinstance(synth, dict) or set(synth) - {"images", "annotated", "seed"}:
            raise ConfigError("config key 'dataset.synth' must be a mapping of images, annotated, seed")
    names, budget = cfg["dataset"]["landmarks"], cfg["dataset"]["label_budget"]
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise ConfigError("config key 'dataset.landmarks' must be a list of landmark names")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise ConfigError(f"config key 'dataset.label_budget' must be a whole number >= 1, got {budget!r}")
    if not 0 <= cfg["model"]["dropout"] < 1:
        raise ConfigError("config key 'model.dropout' must be in [0, 1)")
    for name in ("copy_layers", "freeze"):
        if not all(isinstance(x, str) for x in cfg["model"][name]):
            raise ConfigError(f"config key 'model.{name}' must be a list of layer names")
    return cfg


def _check_refine(r):
    if r["patch"] and not 67 <= r["patch"] <= r["fine_size"]:
        raise ConfigError("config key 'model.refine.patch' must be 0 (off) or 67 (AlexNet's pool5 needs it) "
                          f"to refine.fine_size ({r['fine_size']}), got {r['patch']!r}")
    for key in ("fine_size", "draws", "max_iter", "batch_size", "passes"):
        if r[key] < 1:
            raise ConfigError(f"config key 'model.refine.{key}' must be at least 1, got {r[key]!r}")
    if not 0 <= r["jitter"] < 0.5:
        raise ConfigError(f"config key 'model.refine.jitter' must be in [0, 0.5), got {r['jitter']!r}")
    if r["tta_shift"] < 0 or r["tta_shift"] % STRIDE or (r["patch"] and r["tta_shift"] >= r["patch"] // 2):
        raise ConfigError(f"config key 'model.refine.tta_shift' must be 0 or a multiple of {STRIDE} (the "
                          f"heatmap's stride) below half of model.refine.patch, got {r['tta_shift']!r}")


def _check_solver_ranges(sc):
    """Values Caffe would abort on (CHECK failures kill the process) or that make no run."""
    least = {"max_iter": 1, "batch_size": 1, "test_batch_size": 1, "test_interval": 1, "snapshot": 0,
             "display": 0}
    if sc["lr_policy"] in ("step", "sigmoid"):
        least["stepsize"] = 1
    for key, low in least.items():
        if sc[key] < low:
            raise ConfigError(f"config key 'solver.{key}' must be at least {low}, got {sc[key]!r}")
    if not sc["base_lr"] > 0 or not 0 <= sc["momentum"] < 1 or not 0 <= sc["momentum2"] < 1:
        raise ConfigError("config keys 'solver.base_lr' must be > 0 and 'solver.momentum'/'momentum2' in [0, 1)")
    if sc["weight_decay"] < 0:
        raise ConfigError(f"config key 'solver.weight_decay' must be >= 0, got {sc['weight_decay']!r}")


def dump_config(cfg, path):
    write_atomic(path, yaml.safe_dump(cfg, sort_keys=False))
