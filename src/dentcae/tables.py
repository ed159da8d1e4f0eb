"""Table configs: which arms, pre-trainings, repeats and comparisons a table runs, validated on load.

    table = load_table("configs/ours/table3.yaml")
    cfg, note = resolve_run("configs/ours/heatmap_cae.yaml", table, "heatmap_cae", repeat=0, extra=[])

A table names its arms (finetune configs), the pre-training configs they start from (`pretrain`:
the CAE; `pretext_pretrain`: the augmentation pretext), repeats over seeds or folds, and the pairs
of arms to compare. Each arm's or pre-training's run goes to runs/<table>/<name>_r<repeat>.
"""
from pathlib import Path

from .config import ConfigError, check_name, load_config, merge, parse_set, read_yaml_mapping


TABLE_KEYS = {"name", "title", "results_dir", "repeats", "repeat_over", "pretrain", "pretext_pretrain", "set",
              "arms", "comparisons", "note"}
# arm init -> the table key naming its pre-training (whose run is runs/<table>/<init>_r<repeat>)
PRETRAIN_KEYS = {"cae": "pretrain", "pretext": "pretext_pretrain"}
ARM_KEYS = {"key", "label", "config", "paper"}


def load_table(path):
    path = Path(path)
    t = read_yaml_mapping(path, "table config", allow_empty=False)
    for key in t:
        if key not in TABLE_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(TABLE_KEYS))})")
    if not isinstance(t.get("arms"), list) or not all(isinstance(a, dict) for a in t["arms"]):
        raise ConfigError(f"{path}: a table needs 'arms', a list of mappings with key, label and config")
    for i, arm in enumerate(t["arms"]):
        missing = {"key", "config"} - set(arm)
        if missing:
            raise ConfigError(f"{path}: arms[{i}]: missing {', '.join(sorted(missing))}")
        for key in arm:
            if key not in ARM_KEYS:
                raise ConfigError(f"{path}: arms[{i}]: unknown key '{key}' (known: {', '.join(sorted(ARM_KEYS))})")
    if "name" not in t:
        raise ConfigError(f"{path}: a table needs a 'name' (its runs go to runs/<name>/)")
    try:
        check_name(t["name"])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    keys = [a["key"] for a in t["arms"]]
    for a, b in t.get("comparisons", []):
        if a not in keys or b not in keys:
            raise ConfigError(f"{path}: comparison [{a}, {b}] names an arm that is not in 'arms'")
    t.setdefault("repeats", 1)
    t.setdefault("repeat_over", "seed")
    t.setdefault("results_dir", "results")
    t.setdefault("pretrain", None)
    t.setdefault("pretext_pretrain", None)
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


def _scale_schedule(solver, scale):
    for key in SCALED:
        solver[key] *= scale
    solver["stepvalue"] = [v * scale for v in solver["stepvalue"]]


def resolve_run(config, table, name, repeat, extra):
    """Arm or CAE config for one repeat: table-wide `set`, --set, run folder, seed or fold."""
    over = {}
    for k, v in (table.get("set") or {}).items():   # the table's settings, then --set on top
        _merge_dotted(over, k, v)
    cfg = load_config(config, merge(over, parse_set(extra)))
    cfg["runs_dir"], cfg["name"] = str(Path(cfg["runs_dir"]) / table["name"]), f"{name}_r{repeat}"
    if table["repeat_over"] == "seed":
        cfg["solver"]["random_seed"] = cfg["seed"] = repeat
    else:
        cfg["prepare"]["folds"], cfg["prepare"]["fold"] = table["repeats"], repeat
    if table.get("preset"):
        _scale_schedule(cfg["solver"], table["preset"]["iterations_scale"])
        cfg["model"]["refine"]["max_iter"] *= table["preset"]["iterations_scale"]    # the refine net's, too
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
