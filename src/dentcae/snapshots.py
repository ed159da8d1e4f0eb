"""Runner-side snapshots of a training run: caffemodel + solverstate, then latest.json by rename.

    snaps = Snapshots(solver, Path("runs/x"), "cae")
    snaps.take()              # writes snapshots/cae_iter_N.*, then latest.json, then drops older ones
    state = snaps.latest()    # {"iter": N, "caffemodel": abs path, "solverstate": abs path} or None

latest.json names files relative to the snapshots folder, so a run folder can be moved.
"""
import json
from pathlib import Path

from .atomic import write_atomic


class Snapshots:
    def __init__(self, solver, run, stage):
        self.solver, self.dir, self.stage = solver, Path(run) / "snapshots", stage
        self.marker = self.dir / "latest.json"

    def latest(self):
        if not self.marker.exists():
            return None
        state = json.loads(self.marker.read_text())
        for key in ("caffemodel", "solverstate"):
            state[key] = str(self.dir / Path(state[key]).name)
        return state

    def take(self):
        it = self.solver.iter
        self.solver.snapshot()        # writes <snapshot_prefix>_iter_<it>.caffemodel/.solverstate
        base = f"{self.stage}_iter_{it}"
        write_atomic(self.marker, json.dumps(
            {"iter": it, "caffemodel": base + ".caffemodel", "solverstate": base + ".solverstate"}))
        for p in self.dir.glob(f"{self.stage}_iter_*"):
            if not p.name.startswith(base + "."):
                p.unlink()
        return self.latest()
