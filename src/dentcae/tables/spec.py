"""Table configs: which arms, pre-trainings, repeats and comparisons a table runs, validated on load.

    table = load_table("configs/isbi/table3.yaml")     # may name `_base_: ../ours/table3.yaml`
    cfg, note = resolve_run("configs/ours/heatmap_cae.yaml", table, "heatmap_cae", repeat=0, extra=[])

A table names its arms (finetune configs), the pre-training configs they start from (`pretrainings`,
by name: an arm with `model.init: cae` needs `pretrainings: {cae: ...}`), repeats over seeds or
folds, and the pairs of arms to compare. `_base_` works as in run configs: keys override the base's,
mappings (`set`, `pretrainings`) merge, lists (`arms`, `comparisons`) are replaced. `sweep: {key:
dataset.label_budget, values: [10, 25]}` repeats every arm (and comparison) once per value, as
arms `<key>_<value>`. Each arm's or pre-training's run goes to runs/<table>/<name>_r<repeat>.
"""
from pathlib import Path

from ..config import ConfigError, check_name, load_config, merge, parse_set, read_with_bases, read_yaml_mapping
from ..registry import HEADS

TABLE_KEYS = {"name", "title", "results_dir", "repeats", "repeat_over", "pretrainings", "set", "sweep",
              "arms", "comparisons", "note"}
ARM_KEYS = {"key", "label", "config", "paper", "set"}
RENAMED = {"pretrain": "pretrainings: {cae: ...}", "pretext_pretrain": "pretrainings: {augment: ...}"}


def _check_keys(t):
    for key in t:
        if key in RENAMED:
            raise ConfigError(f"key '{key}' is now written {RENAMED[key]}")
        if key not in TABLE_KEYS:
            raise ConfigError(f"unknown key '{key}' (known: {', '.join(sorted(TABLE_KEYS))})")


def _check_arms(path, t):
    if not isinstance(t.get("arms"), list) or not all(isinstance(a, dict) for a in t["arms"]):
        raise ConfigError(f"{path}: a table needs 'arms', a list of mappings with key, label and config")
    for i, arm in enumerate(t["arms"]):
        missing = {"key", "config"} - set(arm)
        if missing:
            raise ConfigError(f"{path}: arms[{i}]: missing {', '.join(sorted(missing))}")
        for key in arm:
            if key not in ARM_KEYS:
                raise ConfigError(f"{path}: arms[{i}]: unknown key '{key}' (known: {', '.join(sorted(ARM_KEYS))})")


def _slug(value):
    return "".join(c if c.isalnum() or c in "-." else "-" for c in str(value)).strip("-") or "none"


def _expand_sweep(path, t):
    """Every arm once per swept value (key `<arm>_<value>`, the value in the arm's own `set`);
    every comparison once per value, between the arms of that value."""
    sweep = t.pop("sweep", None)
    if sweep is None:
        return t
    if not isinstance(sweep, dict) or set(sweep) != {"key", "values"} or not isinstance(sweep["values"], list) \
            or not sweep["values"]:
        raise ConfigError(f"{path}: sweep must be {{key: a.dotted.key, values: [v1, v2, ...]}}")
    key, values = sweep["key"], sweep["values"]
    arms = [{**arm, "key": f"{arm['key']}_{_slug(v)}", "label": f"{arm.get('label', arm['key'])}, {key} = {v}",
             "set": {**(arm.get("set") or {}), key: v}} for v in values for arm in t["arms"]]
    comps = [[f"{a}_{_slug(v)}", f"{b}_{_slug(v)}"] for v in values for a, b in t.get("comparisons") or []]
    return {**t, "arms": arms, "comparisons": comps, "sweep_key": key, "sweep_values": values}


def load_table(path):
    path = Path(path)
    t = read_with_bases(path, _check_keys, what="table config")
    _check_arms(path, t)
    t = _expand_sweep(path, t)
    if "name" not in t:
        raise ConfigError(f"{path}: a table needs a 'name' (its runs go to runs/<name>/)")
    try:
        check_name(t["name"])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    keys = [a["key"] for a in t["arms"]]
    for a, b in t.get("comparisons") or []:
        if a not in keys or b not in keys:
            raise ConfigError(f"{path}: comparison [{a}, {b}] names an arm that is not in 'arms'")
    t.setdefault("repeats", 1)
    t.setdefault("repeat_over", "seed")
    t.setdefault("results_dir", "results")
    t["pretrainings"] = t.get("pretrainings") or {}
    if t["repeat_over"] not in ("seed", "fold"):
        raise ConfigError(f"{path}: repeat_over must be seed or fold")
    return t


SCALED = ("max_iter", "stepsize", "snapshot", "test_interval")


def load_preset(name):
    """A schedule preset: configs/presets/<name>.yaml, or a YAML file; {} for None."""
    if name is None:
        return {}
    path = Path(name) if name.endswith((".yaml", ".yml")) else Path("configs/presets") / f"{name}.yaml"
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
