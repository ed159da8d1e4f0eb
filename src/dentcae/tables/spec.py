"""Table configs: which arms, pre-trainings, repeats and comparisons a table runs, validated on load.

    table = load_table("configs/isbi/table3.yaml")     # may name `_base_: ../ours/table3.yaml`
    cfg, note = resolve_run("configs/ours/heatmap_cae.yaml", table, "heatmap_cae", repeat=0, extra=[])

A table names its arms (finetune configs), the pre-training configs they start from (`pretrainings`,
by name: an arm with `model.init: cae` needs `pretrainings: {cae: ...}`), repeats over seeds or
folds, and the pairs of arms to compare. `_base_` works as in run configs: keys override the base's,
mappings (`set`, `pretrainings`) merge, lists (`arms`, `comparisons`) are replaced. `sweep: {key:
dataset.label_budget, values: [10, 25]}` repeats every arm (and comparison) once per value, as
arms `<key>_<value>` (`all` for null); a --set of the swept key runs that value (or list of values). An arm with
`pseudo_labels_from: <arm>` trains on the pseudo-labels that arm's detector gives the unlabelled
training images (tables/pseudo_arms.py). `ensembles: true` also scores each arm's repeats as one
ensemble (tables/ensembles.py), a row beside its single nets' mean +- sd. Each arm's or pre-training's run goes to
runs/<table>/<name>_r<repeat>.
"""
from pathlib import Path

from ..config import ConfigError, check_name, load_config, merge, parse_set, read_with_bases, read_yaml_mapping
from ..registry import HEADS, PRETEXTS
from ..schema import value_at

TABLE_KEYS = {"name", "title", "results_dir", "repeats", "repeat_over", "pretrainings", "set", "sweep",
              "arms", "comparisons", "note", "ensembles"}
ARM_KEYS = {"key", "label", "config", "paper", "set", "pseudo_labels_from", "teachers", "starts_from", "ensemble_of"}
DEPENDS = ("pseudo_labels_from", "starts_from", "ensemble_of")     # each names an earlier arm
RENAMED = {"pretrain": "pretrainings: {cae: ...}", "pretext_pretrain": "pretrainings: {augment: ...}"}


def _check_keys(t):
    for key in t:
        if key in RENAMED:
            raise ConfigError(f"key '{key}' is now written {RENAMED[key]}")
        if key not in TABLE_KEYS:
            raise ConfigError(f"unknown key '{key}' (known: {', '.join(sorted(TABLE_KEYS))})")


def _check_arm(path, i, arm):
    missing = {"key"} - set(arm) or ({"config"} - set(arm) if "ensemble_of" not in arm else set())
    if missing:
        raise ConfigError(f"{path}: arms[{i}]: missing {', '.join(sorted(missing))}")
    for key in arm:
        if key not in ARM_KEYS:
            raise ConfigError(f"{path}: arms[{i}]: unknown key '{key}' (known: {', '.join(sorted(ARM_KEYS))})")
    check_name(arm["key"], f"arms[{i}].key")          # it names run folders
    if not isinstance(arm.get("set") or {}, dict):
        raise ConfigError(f"{path}: arms[{i}].set must be a mapping of dotted keys")
    if arm.get("teachers", "repeat") not in ("repeat", "ensemble"):
        raise ConfigError(f"{path}: arms[{i}].teachers must be repeat (each repeat's teacher) or ensemble (every "
                          f"repeat of the teacher arm together), got {arm['teachers']!r}")
    if "teachers" in arm and "pseudo_labels_from" not in arm:
        raise ConfigError(f"{path}: arms[{i}].teachers needs pseudo_labels_from")
    if "ensemble_of" in arm and set(arm) & {"config", "pseudo_labels_from", "starts_from"}:
        raise ConfigError(f"{path}: arms[{i}]: an ensemble_of arm scores another arm's runs; it takes no config, "
                          "pseudo_labels_from or starts_from (its set: test-time keys only)")


def _check_arms(path, t):
    if not isinstance(t.get("arms"), list) or not all(isinstance(a, dict) for a in t["arms"]) or not t["arms"]:
        raise ConfigError(f"{path}: a table needs 'arms', a list of mappings with key, label and config")
    for i, arm in enumerate(t["arms"]):
        _check_arm(path, i, arm)
    keys = [a["key"] for a in t["arms"]]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"{path}: arm keys must be distinct (each names a row and a run folder): {', '.join(twice)}")
    for i, arm in enumerate(t["arms"]):
        for dep in DEPENDS:
            if dep in arm and arm[dep] not in keys[:i]:
                raise ConfigError(f"{path}: arms[{i}].{dep}: '{arm[dep]}' is not an arm listed before "
                                  f"'{arm['key']}' (it runs first; arms: {', '.join(keys)})")
        if "ensemble_of" in arm:                          # the source's config, its runs scored together
            arm["config"] = next(a["config"] for a in t["arms"] if a["key"] == arm["ensemble_of"])


def _check_spec(path, t):
    """Pre-trainings named after registered ones, comparisons as pairs, repeats a whole number."""
    pre = t.get("pretrainings") or {}
    if not isinstance(pre, dict) or not all(isinstance(v, str) for v in pre.values()):
        raise ConfigError(f"{path}: pretrainings must map a pre-training's name to its config file")
    for name in pre:
        if name not in PRETEXTS.names():
            raise ConfigError(f"{path}: pretrainings: '{name}' is not a pre-training (known: {', '.join(PRETEXTS.names())})")
    comps = t.get("comparisons") or []
    if not isinstance(comps, list) or not all(isinstance(c, list) and len(c) == 2 for c in comps):
        raise ConfigError(f"{path}: comparisons must be a list of [arm, arm] pairs")
    t["comparisons"] = comps
    check_repeats(t.get("repeats", 1), f"{path}: repeats")
    if not isinstance(t.get("ensembles", False), bool):
        raise ConfigError(f"{path}: ensembles must be true or false (true: each arm's repeats are also scored "
                          "as one ensemble)")


def slug(value):
    if value is None:
        return "all"
    return "".join(c if c.isalnum() or c in "-." else "-" for c in str(value)).strip("-") or "none"


def _expand_sweep(path, t, overrides=None):
    """Every arm once per swept value (key `<arm>_<value>`, the value in the arm's own `set`);
    every comparison once per value, between the arms of that value. A --set of the swept key
    (`overrides`) keeps that value (or those of a list), with the same arm keys and run folders."""
    sweep = t.pop("sweep", None)
    if sweep is None:
        return t
    if not isinstance(sweep, dict) or set(sweep) != {"key", "values"} or not isinstance(sweep["values"], list) \
            or not sweep["values"]:
        raise ConfigError(f"{path}: sweep must be {{key: a.dotted.key, values: [v1, v2, ...]}}")
    key, values = sweep["key"], sweep["values"]
    try:
        chosen = value_at(parse_set(overrides), key)
        values = chosen if isinstance(chosen, list) else [chosen]
    except (KeyError, TypeError):
        pass
    if not values:
        raise ConfigError(f"--set {key}=[]: give at least one value of the swept key (or leave it out for all of "
                          f"{', '.join(map(str, sweep['values']))})")
    shown = lambda v: "all" if v is None else v          # noqa: E731
    arms = [{**arm, "key": f"{arm['key']}_{slug(v)}", "label": f"{arm.get('label', arm['key'])}, {key} = {shown(v)}",
             "set": {**(arm.get("set") or {}), key: v}, "base_key": arm["key"], "sweep_value": v,
             **{dep: f"{arm[dep]}_{slug(v)}" for dep in DEPENDS if arm.get(dep)}}
            for v in values for arm in t["arms"]]
    comps = [[f"{a}_{slug(v)}", f"{b}_{slug(v)}"] for v in values for a, b in t.get("comparisons") or []]
    return {**t, "arms": arms, "comparisons": comps, "sweep_key": key, "sweep_values": values}


def _only_arms(path, t, only):
    """The arms whose key (before a sweep) is in `only`, and the arms they need (teachers, starts,
    ensembles' members); comparisons between them."""
    if not only:
        return t
    known = {a["key"] for a in t["arms"]}
    unknown = sorted(set(only) - known)
    if unknown:
        raise ConfigError(f"{path}: --arms: no arm {', '.join(unknown)} (arms: {', '.join(a['key'] for a in t['arms'])})")
    keep, by_key = set(only), {a["key"]: a for a in t["arms"]}
    todo = list(only)
    while todo:
        arm = by_key[todo.pop()]
        needed = [arm.get(dep) for dep in DEPENDS]
        for key in (k for k in needed if k and k not in keep):
            keep.add(key)
            todo.append(key)
    return {**t, "arms": [a for a in t["arms"] if a["key"] in keep],
            "comparisons": [c for c in t.get("comparisons") or [] if set(c) <= keep]}


def load_table(path, overrides=None, only=None):
    """The table at `path`, checked; --set `overrides` narrow a sweep, `only` keeps those arms."""
    path = Path(path)
    t = read_with_bases(path, _check_keys, what="table config")
    _check_arms(path, t)
    _check_spec(path, t)
    t = _only_arms(path, t, only)
    t = _expand_sweep(path, t, overrides)
    if "name" not in t:
        raise ConfigError(f"{path}: a table needs a 'name' (its runs go to runs/<name>/)")
    try:
        check_name(t["name"])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    keys = [a["key"] for a in t["arms"]]
    for a, b in t["comparisons"]:
        if a not in keys or b not in keys:
            raise ConfigError(f"{path}: comparison [{a}, {b}] names an arm that is not in 'arms'")
    t.setdefault("repeats", 1)
    t.setdefault("repeat_over", "seed")
    t.setdefault("results_dir", "results")
    t["pretrainings"] = t.get("pretrainings") or {}
    if t["repeat_over"] not in ("seed", "fold"):
        raise ConfigError(f"{path}: repeat_over must be seed or fold")
    return t


def check_repeats(repeats, what="--repeats"):
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"{what} must be a whole number >= 1, got {repeats!r}")
    return repeats


SCALED = ("max_iter", "stepsize", "snapshot", "test_interval")
CHECKOUT = Path(__file__).resolve().parents[3]         # src/dentcae/tables/spec.py -> the checkout


def preset_path(name, table=None):
    """configs/presets/<name>.yaml looked up from the working directory, beside the table's configs
    folder, and in the checkout dentcae runs from; or a YAML file named as such."""
    if name.endswith((".yaml", ".yml")):
        return Path(name)
    places = [Path("configs/presets")] + ([Path(table).resolve().parent.parent / "presets"] if table else []) \
        + [CHECKOUT / "configs/presets"]
    found = [p / f"{name}.yaml" for p in places if (p / f"{name}.yaml").is_file()]
    return found[0] if found else places[0] / f"{name}.yaml"


def load_preset(name, table=None):
    """A schedule preset (preset_path); {} for None."""
    if name is None:
        return {}
    path = preset_path(name, table)
    preset = read_yaml_mapping(path, "preset", allow_empty=False)
    scale = preset.get("iterations_scale")
    if set(preset) != {"iterations_scale"} or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"{path}: a preset holds one key, iterations_scale, a whole number >= 1")
    return preset


def _scale_schedule(cfg, scale):
    """Every iteration count of the solver, and those the head names (its sub-runs'), times scale."""
    solver = cfg["solver"]
    for key in SCALED:
        solver[key] *= scale
    solver["stepvalue"] = [v * scale for v in solver["stepvalue"]]
    for dotted in HEADS.get(cfg["model"]["head"]).SCHEDULE_KEYS:
        *path, last = dotted.split(".")
        node = cfg
        for part in path:
            node = node[part]
        node[last] *= scale


def resolve_run(config, table, name, repeat, extra, arm_set=None):
    """Arm or pre-training config for one repeat: the table's `set`, the arm's own `set`, --set,
    run folder, seed or fold."""
    over = {}
    for k, v in {**(table.get("set") or {}), **(arm_set or {})}.items():   # the table's, the arm's, --set
        _merge_dotted(over, k, v)
    cfg = load_config(config, merge(over, parse_set(extra)))
    cfg["runs_dir"], cfg["name"] = str(Path(cfg["runs_dir"]) / table["name"]), f"{name}_r{repeat}"
    if table["repeat_over"] == "seed":
        cfg["solver"]["random_seed"] = cfg["seed"] = repeat
    else:
        cfg["prepare"]["folds"], cfg["prepare"]["fold"] = table["repeats"], repeat
    if table.get("preset"):
        _scale_schedule(cfg, table["preset"]["iterations_scale"])
    replaced = None
    if cfg["model"]["init"] == "imagenet" and not Path(cfg["model"]["imagenet_weights"]).exists():
        replaced = f"{name}: ImageNet weights {cfg['model']['imagenet_weights']} absent, ran from scratch"
        cfg["model"]["init"] = "scratch"
    return cfg, replaced


def _merge_dotted(over, key, value):
    node = over
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return over


def check_runs(table, extra):
    """Every run the table would train, resolved and checked before any trains: each pre-training
    config trains its name's pre-training, each arm fine-tunes, and each arm's init has its
    pre-training in the table."""
    for name, config in table["pretrainings"].items():
        cfg, _ = resolve_run(config, table, name, 0, extra)
        if cfg["stage"] != "pretrain" or cfg["model"]["pretext"] != name:
            raise ConfigError(f"{table['name']}: pretrainings: {name}: {config} is a '{cfg['stage']}' config of "
                              f"model.pretext {cfg['model']['pretext']!r}, not the pre-training '{name}'")
    for arm in table["arms"]:
        cfg, _ = resolve_run(arm["config"], table, arm["key"], 0, extra, arm.get("set"))
        if cfg["stage"] != "finetune":
            raise ConfigError(f"{table['name']}: arm {arm['key']}: {arm['config']} is a '{cfg['stage']}' config; "
                              "arms fine-tune (stage: finetune); name pre-trainings under 'pretrainings'")
        init = cfg["model"]["init"]
        if init == "run" and not arm.get("starts_from"):
            raise ConfigError(f"{table['name']}: arm {arm['key']} starts from a run (model.init: run): name the arm "
                              "it starts from with starts_from")
        if init not in ("scratch", "imagenet", "run") and init not in table["pretrainings"]:
            raise ConfigError(f"{table['name']}: arm {arm['key']} starts from '{init}' but the table's "
                              f"'pretrainings' names no '{init}' config")
