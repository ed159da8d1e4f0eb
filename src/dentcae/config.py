"""YAML configs: a base file plus small per-experiment files, validated on load.

A config may name `_base_: other.yaml` (relative to itself); its keys override the base's, nested
dicts merge key by key. Every key must exist in the schema (an unknown key is an error naming its
dotted path), and every value must have the schema default's type. The schema is SCHEMA below plus
the `model.` keys each registered head and pre-training declares (their CONFIG hook); each plug-in
also checks its own values (check_config). `--set a.b=value` overrides apply last and are parsed as
YAML scalars.
"""
import copy
from pathlib import Path

import yaml

from .registry import HEADS, PRETEXTS
from .runtime.atomic import write_atomic
from .runtime.yamlio import read_yaml_mapping as _read_mapping
from .runtime.yamlio import yaml_load


class ConfigError(ValueError):
    pass


# The schema is the default config: every allowed key, its default and (by the default) its type.
# None means "optional, any of the types in OPTIONAL_TYPES". Heads and pre-trainings add their own
# model keys (schema()).
SCHEMA = {
    "name": "run",
    "stage": "finetune",                    # pretrain (trains model.pretext) | finetune (model.head);
                                            # a head's sub-run has its own (the heatmap's `refine`)
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
        "test_duplicates": "keep",          # keep | drop: training images whose group (one radiograph
                                            # under two ids) also has a test image; drop leaves them out
        "folds": 0,                         # >1: k-fold over annotated images instead of holdout
        "fold": 0,                          # which fold is the test split when folds > 1
        "split_seed": 0,
        "cache_dir": "data/cache",
    },
    "model": {
        "init": "scratch",                  # scratch | imagenet | a pre-training's name (cae, augment)
        "head": "regression",               # finetune: a head in heads/ (regression: the paper's)
        "pretext": "cae",                   # pretrain: a pre-training in pretexts/ (cae: the paper's)
        "imagenet_weights": "bvlc_alexnet.caffemodel",
        "pretrain_run": None,               # init <pre-training>: the run folder whose final weights
                                            # are copied (its model.pretext must be the init's name)
        "copy_layers": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6"],
        "freeze": [],                       # layers whose lr_mult/decay_mult are 0
        "dropout": 0.5,                     # drop6/drop7 ratio (AlexNet and the paper: 0.5)
        "fc_width": 4096,                   # fc6/fc7 and the CAE's dec_fc6/dec_fc7 (AlexNet: 4096;
                                            # the tests use narrow nets, same names and code paths)
        "num_landmarks": None,              # None: from the dataset
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
STAGES = ("pretrain", "finetune")
INITS = ("scratch", "imagenet")              # or the name of a pre-training


def schema():
    """SCHEMA with the model keys of every registered head and pre-training."""
    plugins = {**HEADS.config_keys(), **PRETEXTS.config_keys()}
    clash = set(plugins) & set(SCHEMA["model"])
    if clash:
        raise ConfigError(f"a plug-in redefines the model keys {sorted(clash)}")
    return merge(SCHEMA, {"model": plugins})


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


def read_yaml_mapping(path, what="config", allow_empty=True):
    """A YAML file that must hold a mapping; every failure is a ConfigError naming the file."""
    return _read_mapping(path, what, ConfigError, allow_empty)


def read_with_bases(path, check=None, what="config", seen=()):
    """A YAML mapping with its `_base_` chain resolved (keys override the base's, nested dicts merge
    key by key); `check(data)` validates each file's own keys before merging, naming the file."""
    path = Path(path)
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    data = read_yaml_mapping(path, what, allow_empty=what == "config")
    base = data.pop("_base_", None)
    try:
        if check:
            check(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: _base_ must be a file name, got {base!r}")
    return merge(read_with_bases(path.parent / base, check, what, seen + (path.resolve(),)), data)


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
    full = schema()
    cfg = read_with_bases(path, lambda data: _check(data, full, ""))
    extra = parse_set(overrides) if isinstance(overrides, list) else (overrides or {})
    try:
        _check(extra, full, "")
    except ConfigError as e:
        raise ConfigError(f"--set: {e}") from None
    cfg = merge(merge(full, cfg), extra)
    validate_values(cfg)
    return cfg


def check_name(name, key="name"):
    """A run or table name: one plain path component (it names a folder that may be deleted)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name \
            or name.startswith("~") or "\0" in name:
        raise ConfigError(f"config key '{key}' must be a plain folder name (no '/', '..', '~' or empty), "
                          f"got {name!r}")
    return name


def _check_plugins(cfg):
    """model.head, model.pretext and model.init name registered plug-ins; the stage is one the
    config can train; each of the two plug-ins checks its own keys."""
    m = cfg["model"]
    for key, registry in (("head", HEADS), ("pretext", PRETEXTS)):
        if m[key] not in registry.names():
            raise ConfigError(f"config key 'model.{key}' must be one of {registry.names()}, got {m[key]!r}")
    if m["init"] == "pretext":
        raise ConfigError("config key 'model.init': 'pretext' is now named after the pre-training: "
                          "use 'augment' (and model.pretrain_run for its run folder)")
    if m["init"] not in INITS + PRETEXTS.names():
        raise ConfigError(f"config key 'model.init' must be one of {INITS + PRETEXTS.names()}, got {m['init']!r}")
    head = HEADS.get(m["head"])
    if cfg["stage"] not in STAGES + tuple(head.SUBRUNS):
        raise ConfigError(f"config key 'stage' must be one of {STAGES + tuple(head.SUBRUNS)}, got {cfg['stage']!r}")
    head.check_config(cfg)
    PRETEXTS.get(m["pretext"]).check_config(cfg)


def validate_values(cfg):
    check_name(cfg["name"])
    _check_plugins(cfg)
    if cfg["model"]["fc_width"] < 1:
        raise ConfigError("config key 'model.fc_width' must be at least 1")
    if cfg["prepare"]["resize"] not in ("stretch", "pad"):
        raise ConfigError(f"config key 'prepare.resize' must be stretch or pad, got {cfg['prepare']['resize']!r}")
    if cfg["prepare"]["augment"]["copies"] < 0:
        raise ConfigError("config key 'prepare.augment.copies' must be 0 or more")
    if cfg["prepare"]["test_duplicates"] not in ("keep", "drop"):
        raise ConfigError("config key 'prepare.test_duplicates' must be keep or drop")
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
