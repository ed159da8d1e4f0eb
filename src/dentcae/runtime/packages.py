"""The installed Python packages against constraints.txt (the versions the tests passed with).

    differ, pinned = against_lock()        # [(name, installed or None, pinned)], how many pinned
"""
import re
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[3] / "constraints.txt"     # the checkout's, beside pyproject.toml


def _normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def against_lock(lock=LOCK):
    """([(package, installed version or None, pinned version)] that differ, number pinned); ([], 0)
    without a lock file (an install outside a checkout)."""
    if not Path(lock).is_file():
        return [], 0
    pins = {}
    for line in Path(lock).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_normal(name)] = version.strip()
    installed = {_normal(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    return [(n, installed.get(n), v) for n, v in sorted(pins.items()) if installed.get(n) != v], len(pins)
