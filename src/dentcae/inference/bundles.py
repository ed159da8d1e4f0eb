"""A bundle folder (`dentcae export`) as a Model: model.json read, every file's checksum checked.

    model = load_bundle("models/x")            # one member, or an ensemble's several
    is_bundle("models/x")                      # a folder dentcae's export wrote (only those are replaced)

Format 2 lists `members` (each one run's nets, config, training labels and input geometry); format 1
(one member, before ensembles) still loads. A missing, changed or unlisted file is refused by name.
"""
import json
from pathlib import Path

import numpy as np

from ..runtime.atomic import file_sha256
from .model import Member, Model, ModelError
from .runs import FORMAT, FORMAT_VERSION


class BundleError(ModelError):
    pass


def is_bundle(path):
    """A folder dentcae wrote with export: model.json says its format (only those are replaced)."""
    try:
        info = json.loads((Path(path) / "model.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == FORMAT


def _checked(path, info):
    """The bundle's model.json fields, every listed file present and unchanged."""
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("format_version") not in (1, FORMAT_VERSION):
        raise BundleError(f"{path / 'model.json'}: not a {FORMAT} of version 1 or {FORMAT_VERSION}")
    sums = info.get("checksums")
    if not isinstance(sums, dict) or not sums:
        raise BundleError(f"{path / 'model.json'}: has no checksums; export the bundle again")
    for rel, digest in sums.items():
        f = path / rel
        if not f.is_file():
            raise BundleError(f"{f}: missing from the bundle")
        if file_sha256(f) != digest:
            raise BundleError(f"{f}: its checksum differs from model.json's; the bundle was changed after export "
                              "(export it again)")
    return info


def _members(path, info):
    entries = info.get("members") or [{"name": info["name"], "config": info["config"], "nets": info["nets"],
                                       "train_labels": "train_labels.npy", "input_size": info["input_size"],
                                       "resize": info["resize"], "mean_bgr": info["mean_bgr"]}]
    listed = set(info["checksums"])
    for e in entries:
        files = [e["train_labels"]] + [r for n in e["nets"].values() for k, r in n.items() if k != "onnx"]
        unlisted = [r for r in files if r not in listed]
        if unlisted:
            raise BundleError(f"{path / 'model.json'}: {', '.join(unlisted)} has no checksum; export the bundle again")
    return [Member(e["name"], e["config"], {n: {k: path / r for k, r in f.items()} for n, f in e["nets"].items()},
                   np.load(path / e["train_labels"]), e["input_size"], e["resize"], e["mean_bgr"], e.get("source_run"))
            for e in entries]


def load_bundle(path):
    """The Model of a bundle folder, every file's checksum checked."""
    path = Path(path)
    try:
        info = json.loads((path / "model.json").read_text())
    except ValueError as e:
        raise BundleError(f"{path / 'model.json'}: not readable JSON ({e})") from None
    info = _checked(path, info)
    try:
        return Model(path, info, _members(path, info))
    except (KeyError, TypeError) as e:
        raise BundleError(f"{path / 'model.json'}: lacks or mangles {e}; export the bundle again") from None
