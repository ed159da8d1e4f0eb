"""The one YAML reader: configs, table configs, presets and every dataset.yaml go through it.

    data = read_yaml_mapping("configs/base.yaml", "config", ConfigError)

YAML 1.1 reads 1e-3 (no dot) as a string; here, as in YAML 1.2, it is the number it looks like, in
every file dentcae reads. Each failure raises the caller's error class, naming the file.
"""
import re
from pathlib import Path

import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-3 and 25e-2 as floats."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"), list("-+0123456789."))


def yaml_load(text):
    return yaml.load(text, Loader=_Loader)


def read_yaml_mapping(path, what, error, allow_empty=True, missing=None):
    """A YAML file that must hold a mapping; `error` (an exception class) names the file on any
    failure. `missing` replaces the message for a file that does not exist."""
    path = Path(path)
    try:
        data = yaml_load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise error(missing or f"{what} file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid YAML: {e}") from None
    if data is None and allow_empty:
        return {}
    if data is None:
        raise error(f"{path}: the {what} file is empty")
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} must be a mapping of keys")
    return data
