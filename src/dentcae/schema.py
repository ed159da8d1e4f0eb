"""Every config key: its default and type (SCHEMA, and each plug-in's CONFIG), its range, the checks of
a resolved config's values, and which keys decide a trained net (training_settings: all but the head's
test-time keys). An unknown key, a wrong type or a value out of range is a ConfigError naming the key.
"""
import copy
import math

from .registry import HEADS, PRETEXTS
from .pseudo_settings import PSEUDO_LABELS, pseudo_label_problem
from .views import view_problem


class ConfigError(ValueError):
    pass


# The schema is the default config: every allowed key, its default and (by the default) its type; None
# means "optional, any of OPTIONAL_TYPES". Heads and pre-trainings add their own model keys (schema()).
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
        "label_selection": "random",        # which N: random (seeded) | kmedoids | kcenter (rules on
                                            # image descriptors) | a `dentcae select` CSV's order
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
        "init": "scratch",                  # scratch | imagenet | run | a pre-training's name (cae, augment)
        "head": "regression",               # finetune: a head in heads/ (regression: the paper's)
        "pretext": "cae",                   # pretrain: a pre-training in pretexts/ (cae: the paper's)
        "imagenet_weights": "bvlc_alexnet.caffemodel",
        "pretrain_run": None,               # init <pre-training>: the run folder whose final weights
                                            # are copied (its model.pretext must be the init's name)
        "init_run": None,                   # init run: a finished finetune run of the same head whose nets'
                                            # every layer is copied (its refine net into the refine net)
        "copy_layers": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6"],
        "copied_lr_mult": 1.0,              # the copied layers learn at this times their learning rate
                                            # (gentle fine-tuning of a pre-trained start, e.g. 0.1)
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
    "pseudo_labels": PSEUDO_LABELS,         # a table arm trained on pseudo-labels: its teachers' settings
    "test_time": {                          # how a trained detector is run; changing it retrains nothing
        "views": [],                        # the first net also sees each sample through these views
                                            # ({rotate: deg, scale: f, shift: [dx, dy] px}; views.py),
                                            # each answer mapped back and averaged
    },
}
OPTIONAL_TYPES = (str, int, float, dict, list)
STAGES = ("pretrain", "finetune")
INITS = ("scratch", "imagenet", "run")       # or the name of a pre-training


def schema():
    """SCHEMA with the model keys of every registered head and pre-training."""
    plugins = {**HEADS.config_keys(), **PRETEXTS.config_keys()}
    clash = set(plugins) & set(SCHEMA["model"])
    if clash:
        raise ConfigError(f"a plug-in redefines the model keys {sorted(clash)}")
    out = copy.deepcopy(SCHEMA)
    out["model"].update(copy.deepcopy(plugins))
    return out


def check_types(cfg, schema, where):
    for key, value in cfg.items():
        path = f"{where}{key}"
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"unknown config key '{path}' (known here: {known})")
        default = schema[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{path}' must be a mapping, got {value!r}")
            check_types(value, default, path + ".")
        elif default is None:
            if value is not None and not isinstance(value, OPTIONAL_TYPES):
                raise ConfigError(f"config key '{path}' has an unsupported value {value!r}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"config key '{path}' must be true or false, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"config key '{path}' must be a finite number, got {value!r}")
        elif not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
            raise ConfigError(f"config key '{path}' must be {type(default).__name__}, got {value!r}")


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


# Checked ranges of numeric keys, (lowest, highest) allowed, None: unbounded. Outside some of them
# Caffe aborts the process; outside the others a run trains on nonsense. Plug-ins check their own
# keys (check_config, with check_range).
RANGES = {
    "seed": (0, None), "prepare.input_size": (67, 2048), "prepare.folds": (0, 1000), "prepare.fold": (0, 999),
    "prepare.split_seed": (0, None), "prepare.augment.copies": (0, 1000), "prepare.augment.rotate_deg": (0, 180),
    "prepare.augment.scale": (0, 0.9), "prepare.augment.shift": (0, 0.45), "prepare.augment.gamma": (0, 3),
    "prepare.augment.contrast": (0, 0.95), "prepare.augment.noise": (0, 255), "prepare.augment.seed": (0, None),
    "model.fc_width": (1, 65536), "model.copied_lr_mult": (0, 1000), "model.num_landmarks": (1, 10000),
    "solver.max_iter": (1, None), "solver.batch_size": (1, 100000), "solver.test_batch_size": (1, 100000),
    "solver.test_interval": (1, None), "solver.snapshot": (0, None), "solver.display": (0, None),
    "solver.gamma": (0, None), "solver.power": (0, None), "solver.weight_decay": (0, None),
    "solver.random_seed": (0, 2 ** 31 - 1), "train.loss_explode_factor": (1, None),
}


def value_at(cfg, key):
    """The value at a dotted key (`model.refine.passes`)."""
    value = cfg
    for part in key.split("."):
        value = value[part]
    return value


def check_range(cfg, key, low, high):
    """The number at dotted `key` lies in [low, high] (None: unbounded); an optional key may be None."""
    value = value_at(cfg, key)
    if value is None:
        return
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"config key '{key}' must be {bounds}, got {value!r}")


def check_views(cfg, key):
    """The list at dotted `key` holds test-time views (views.py)."""
    views = value_at(cfg, key)
    for i, view in enumerate(views):
        problem = view_problem(view)
        if problem:
            raise ConfigError(f"config key '{key}[{i}]': {problem}")


def validate_values(cfg):
    check_name(cfg["name"])
    problem = pseudo_label_problem(cfg["pseudo_labels"])
    if problem:
        raise ConfigError(f"config key 'pseudo_labels': {problem}")
    check_views(cfg, "test_time.views")
    _check_plugins(cfg)
    for key, (low, high) in RANGES.items():
        check_range(cfg, key, low, high)
    if cfg["prepare"]["folds"] > 1 and cfg["prepare"]["fold"] >= cfg["prepare"]["folds"]:
        raise ConfigError(f"config key 'prepare.fold' must be below prepare.folds ({cfg['prepare']['folds']})")
    if cfg["prepare"]["resize"] not in ("stretch", "pad"):
        raise ConfigError(f"config key 'prepare.resize' must be stretch or pad, got {cfg['prepare']['resize']!r}")
    if cfg["prepare"]["test_duplicates"] not in ("keep", "drop"):
        raise ConfigError("config key 'prepare.test_duplicates' must be keep or drop")
    if cfg["prepare"]["mean"] not in ("imagenet", "dataset"):
        raise ConfigError("config key 'prepare.mean' must be imagenet or dataset")
    if cfg["solver"]["type"] not in ("SGD", "Adam"):
        raise ConfigError(f"config key 'solver.type' must be SGD or Adam, got {cfg['solver']['type']!r}")
    for key in ("cae_holdout", "regressor_holdout"):
        if not 0 < cfg["prepare"][key] < 1:
            raise ConfigError(f"config key 'prepare.{key}' must be between 0 and 1")
    _check_solver_ranges(cfg["solver"])
    synth = cfg["dataset"]["synth"]
    if synth is not None:
        if not isinstance(synth, dict) or set(synth) - {"images", "annotated", "seed"} \
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in synth.values()):
            raise ConfigError("config key 'dataset.synth' must be a mapping of images, annotated, seed "
                              "(whole numbers >= 0)")
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
    if sc["lr_policy"] in ("step", "sigmoid") and sc["stepsize"] < 1:
        raise ConfigError(f"config key 'solver.stepsize' must be at least 1, got {sc['stepsize']!r}")
    if not all(isinstance(v, int) and v >= 1 for v in sc["stepvalue"]) or sc["stepvalue"] != sorted(sc["stepvalue"]):
        raise ConfigError(f"config key 'solver.stepvalue' must list increasing iterations >= 1, got {sc['stepvalue']!r}")
    if not sc["base_lr"] > 0 or not 0 <= sc["momentum"] < 1 or not 0 <= sc["momentum2"] < 1:
        raise ConfigError("config keys 'solver.base_lr' must be > 0 and 'solver.momentum'/'momentum2' in [0, 1)")
    if sc["weight_decay"] < 0:
        raise ConfigError(f"config key 'solver.weight_decay' must be >= 0, got {sc['weight_decay']!r}")


def without(cfg, dotted):
    """A copy of cfg without the dotted keys (missing ones are fine)."""
    out = copy.deepcopy(cfg)
    for key in dotted:
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.get(part, {})
        node.pop(last, None)
    return out


TEST_TIME = ("test_time",)          # keys of every config that change inference only


def test_time_keys(cfg):
    """The dotted keys of a config that change how its nets are run, never how they are trained."""
    return TEST_TIME + tuple(HEADS.get(cfg["model"]["head"]).TEST_TIME_KEYS)


def test_time_settings(cfg):
    """{dotted key: value} of a config's test-time keys: how its nets are run."""
    return {key: value_at(cfg, key) for key in test_time_keys(cfg)}


def training_settings(cfg):
    """The config without its test-time keys: what decides whether a net is retrained."""
    return without(cfg, test_time_keys(cfg))


def first_net_settings(cfg):
    """The config without what only the head's sub-runs read: what decides the first net."""
    return without(cfg, [f"model.{k}" for k in HEADS.get(cfg["model"]["head"]).SUBRUN_KEYS])
