"""YAML configs: a base file plus small per-experiment files, validated on load.

A config may name `_base_: other.yaml` (relative to itself); its keys override the base's, nested
dicts merge key by key. Every key must exist in the schema (an unknown key is an error naming its
dotted path), and every value must have the schema default's type. The schema (schema.py) is SCHEMA plus
the `model.` keys each registered head and pre-training declares (their CONFIG hook); each plug-in
also checks its own values (check_config). `--set a.b=value` overrides apply last and are parsed as
YAML scalars.
"""
import copy
from pathlib import Path

import yaml

from .runtime.atomic import write_atomic
from .runtime.yamlio import read_yaml_mapping as _read_mapping
from .runtime.yamlio import yaml_load
from .schema import ConfigError, check_name, check_range, check_types, schema, validate_values  # noqa: F401


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
    return with_overrides(merge(full, read_with_bases(path, lambda data: check_types(data, full, ""))), overrides)


def with_overrides(cfg, overrides=None):
    """A config (defaults filled) with `--set` items (or a nested dict) applied, validated."""
    extra = parse_set(overrides) if isinstance(overrides, list) else (overrides or {})
    try:
        check_types(extra, schema(), "")
    except ConfigError as e:
        raise ConfigError(f"--set: {e}") from None
    cfg = merge(cfg, extra)
    validate_values(cfg)
    return cfg


def dump_config(cfg, path):
    write_atomic(path, yaml.safe_dump(cfg, sort_keys=False))


def differing_keys(a, b, where=""):
    """Dotted keys whose values differ between two nested dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += differing_keys(a[k], b[k], f"{where}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{where}{k}")
    return out
