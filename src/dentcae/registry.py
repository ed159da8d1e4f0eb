"""The plug-in registries: landmark heads (heads/) and pre-trainings (pretexts/).

    HEADS.register("heatmap", module)   # plugins.py registers every plug-in of dentcae's, explicitly
    HEADS.names()                    # ('heatmap', 'regression'): the registered ones
    head = HEADS.get("heatmap")      # the plug-in, with every hook
    plugin = stage_plugin(cfg)       # what a config trains: its pretext, its head, or a head's sub-run

A head or a pre-training is one module (or package) in heads/ or pretexts/ plus a config, and one
line in plugins.py (the top floor, imported by the package itself), which imports and registers it.
This module imports none of them, neither at the top nor lazily: the import graph shows every
dependency (tests/test_structure.py), and a helper module beside the plug-ins is just a module.
Config validation, preparation, training, evaluation and the tables ask these registries by name,
so no module outside heads/, pretexts/ and plugins.py imports one. A plug-in is any object with the
hooks below (a module's functions and constants); a missing optional hook takes the default here.

Every plug-in that trains (a head, a pre-training, a head's sub-run):
    STEM                        file stem of its prototxts and snapshots
    build(k, model, **net)      NetParameter: train variant with `train=(list, list)`, else deploy=True
    sources(cfg, prep)          (train list, test list, n train, n test) of HDF5 files it trains on
    SPLITS                      the prepared splits it reads (checked for NaN before training)
    input_size(cfg)             its input side in pixels (default: prepare.input_size)
    figures(cfg, run, prep, curves)   what a finished run draws besides its learning curves
    check_config(cfg)           refuse bad values of its own keys (raise config.ConfigError)
    training_hooks(cfg, solver, prep, say)   an object whose on_start() and on_gradients_ready()
                                Caffe calls every step (Solver callbacks: the heatmap head's
                                consistency on unlabelled images) and summary() gives its
                                keys for training.json, or None (default)
    CONFIG                      its own `model.` keys and their defaults, merged into the schema
A head also:
    outputs(k)                  (channels of its first output for K landmarks, what they are called)
    targets(cfg)                (labels (N, 2K) -> {HDF5 dataset: array}, or None; settings they use)
    decode(outputs, size, train_labels)   net outputs -> (N, K, 2) normalised sample coordinates
    alternative_decodings(outputs, size, train_labels)   {name: (N, K, 2)} scored beside, default {}
    subruns(cfg)                {name: config} of nets trained after the first (in <run>/<name>)
    SUBRUNS                     {name: plug-in} of those sub-runs (their `stage` is the name)
    partial_labels(cfg)         whether samples with some landmarks unlabelled train (masked), default False
    confidence(outputs, labels, size)   (N, K) in [0, 1] of the first net's estimates, or None (default)
    after_first_net(cfg, forwards, crops, labels, confidence, mean_bgr)   what follows the first net
                                (inference/detector.py, the one caller): {"passes": [(N, K, 2)],
                                "views": (V, N, K, 2) or None, "confidence": (N, K) or None};
                                `forwards` {net: run it on arrays}; default: nothing follows
    TEST_TIME_KEYS              dotted config keys that change evaluation only, never training
    SUBRUN_KEYS                 model keys read only by the sub-runs (a finished first net is kept)
    SCHEDULE_KEYS               dotted keys scaled with solver.max_iter by a schedule preset
A pre-training also:
    TITLE                       what reports call it ("CAE")
    table_figures(run, stem)    a table's figures of it, beside the table's own
    table_lines(runs)           ({result key: value}, Markdown text) about its runs, for a table
"""
def _nothing(*args, **kwargs):
    return None


def _splits_sources(train, test):
    def sources(cfg, prep):
        return prep.source(train), prep.source(test), prep.count(train), prep.count(test)
    return sources


def _prepared_size(cfg):
    return cfg["prepare"]["input_size"]


TRAINABLE = {"required": ("STEM", "build"),
             "optional": {"input_size": _prepared_size, "figures": _nothing, "check_config": _nothing,
                          "training_hooks": _nothing, "CONFIG": {}}}
HEAD_HOOKS = {"required": TRAINABLE["required"] + ("outputs", "targets", "decode"),
              "optional": {**TRAINABLE["optional"], "sources": _splits_sources("reg_train", "reg_test"),
                           "SPLITS": ("reg_train", "reg_test"),
                           "alternative_decodings": lambda outputs, size, train_labels: {},
                           "subruns": lambda cfg: {}, "SUBRUNS": {},
                           "confidence": lambda outputs, labels, size: None,
                           "after_first_net": lambda cfg, forwards, crops, labels, confidence, mean_bgr:
                           {"passes": [], "views": None, "confidence": confidence},
                           "partial_labels": lambda cfg: False,
                           "TEST_TIME_KEYS": (), "SUBRUN_KEYS": (), "SCHEDULE_KEYS": ()}}
PRETEXT_HOOKS = {"required": TRAINABLE["required"] + ("TITLE",),
                 "optional": {**TRAINABLE["optional"], "sources": _splits_sources("cae_train", "cae_test"),
                              "SPLITS": ("cae_train", "cae_test"), "table_figures": _nothing,
                              "table_lines": lambda runs: ({}, "")}}


class Plugin:
    """A registered plug-in: its own attributes, else the optional hooks' defaults."""

    def __init__(self, name, obj, optional):
        self.name, self._obj, self._optional = name, obj, optional

    def __getattr__(self, key):
        try:
            return getattr(self._obj, key)
        except AttributeError:
            if key in self._optional:
                return self._optional[key]
            raise


class Registry:
    """The plug-ins of one kind (`kind`: "head" or "pre-training"), registered by name."""

    def __init__(self, kind, hooks):
        self.kind, self.hooks = kind, hooks
        self._added, self._loaded = {}, {}

    def names(self):
        return tuple(sorted(self._added))

    def missing_hooks(self, obj):
        return [h for h in self.hooks["required"] if not hasattr(obj, h)]

    def get(self, name):
        """The plug-in `name`, with every hook; KeyError naming the known ones when there is none."""
        if name not in self._loaded:
            if name not in self._added:
                raise KeyError(f"no {self.kind} named {name!r} (known: {', '.join(self.names())})")
            self._loaded[name] = Plugin(name, self._added[name], self.hooks["optional"])
        return self._loaded[name]

    def register(self, name, obj):
        """Add the plug-in `obj` (a module, or any object with the hooks) as `name`; returns it, completed."""
        missing = self.missing_hooks(obj)
        if missing:
            raise TypeError(f"{self.kind} {name!r} lacks the hooks {', '.join(missing)}")
        self._added[name] = obj
        self._loaded.pop(name, None)
        return self.get(name)

    def unregister(self, name):
        self._added.pop(name, None)
        self._loaded.pop(name, None)

    def config_keys(self):
        """{model key: default} that the plug-ins add to the config schema."""
        keys = {}
        for name in self.names():
            for key, default in self.get(name).CONFIG.items():
                if key in keys and keys[key] != default:
                    raise TypeError(f"{self.kind} {name!r} redefines model.{key} with another default")
                keys[key] = default
        return keys


HEADS = Registry("head", HEAD_HOOKS)
PRETEXTS = Registry("pre-training", PRETEXT_HOOKS)


def stage_plugin(cfg):
    """What a resolved config trains: `pretrain` its pre-training (model.pretext), `finetune` its
    head (model.head), any other stage the head's sub-run of that name."""
    m = cfg["model"]
    if cfg["stage"] == "pretrain":
        return PRETEXTS.get(m["pretext"])
    head = HEADS.get(m["head"])
    if cfg["stage"] == "finetune":
        return head
    return Plugin(cfg["stage"], head.SUBRUNS[cfg["stage"]], HEAD_HOOKS["optional"])
