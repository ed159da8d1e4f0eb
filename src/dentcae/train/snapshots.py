"""Runner-side snapshots of a training run: caffemodel + solverstate, then latest.json by rename.

    snaps = Snapshots(solver, Path("runs/x"), "cae")
    snaps.take()              # writes snapshots/cae_iter_N.*, then latest.json, then drops older ones
    state = snaps.latest()    # {"iter": N, "caffemodel": abs path, "solverstate": abs path} or None

latest.json names files relative to the snapshots folder (a run folder can be moved) and records
their sizes, so a truncated file is never handed to Caffe (whose readers abort the process). A
missing or corrupt latest.json, or one naming files that are gone or truncated, falls back to the
newest complete pair found on disk.
`take()` refuses weights that are not finite, so no snapshot ever holds a NaN.

A solverstate holds the weights' history but not where the data layers are nor Caffe's random
stream (the HDF5Data shuffles and the Dropout masks draw from it). `replay(net, n)` brings both
back: it runs the train net's forward n times up to its last layer that draws random numbers, so
a resumed run takes the same batches and masks, and gives the same losses, as an uninterrupted one.
"""
import json
import re
import shutil
from pathlib import Path

import numpy as np

from ..runtime.atomic import write_atomic
from ..runtime.backend import caffe_pb2


class SnapshotError(RuntimeError):
    pass


RANDOM_LAYERS = ("HDF5Data", "Dropout")      # the layer types dentcae's nets have that draw from Caffe's RNG


def replay(net, iterations):
    """Advance the data layers and Caffe's random stream of a freshly built train net by
    `iterations` steps' worth of forward passes (only up to its last layer in RANDOM_LAYERS)."""
    names = list(net._layer_names)
    drawing = [i for i, layer in enumerate(net.layers) if layer.type in RANDOM_LAYERS]
    if not drawing:
        return
    for _ in range(iterations):
        net.forward(end=names[drawing[-1]])


def non_finite_layers(net):
    """Names of the layers of `net` whose weights hold a NaN or an inf (one reduction per blob)."""
    return [name for name, blobs in net.params.items()
            if not all(np.isfinite(np.add.reduce(b.data, axis=None)) for b in blobs)]


class Snapshots:
    def __init__(self, solver, run, stage, log=print):
        self.solver, self.dir, self.stage, self.log = solver, Path(run) / "snapshots", stage, log
        self.marker = self.dir / "latest.json"

    def _files(self, state):
        return [self.dir / Path(state[k]).name for k in ("caffemodel", "solverstate")]

    def _complete(self, state):
        files = self._files(state)
        sizes = state.get("sizes") or [None, None]
        return all(f.is_file() and f.stat().st_size > 0 and (s is None or f.stat().st_size == s)
                   for f, s in zip(files, sizes))

    def _parses(self, state):
        """Both files read as Caffe protobufs (used when no recorded sizes vouch for them)."""
        pb2 = caffe_pb2()
        try:
            for f, msg in zip(self._files(state), (pb2.NetParameter(), pb2.SolverState())):
                msg.ParseFromString(f.read_bytes())
            return True
        except Exception:          # protobuf's DecodeError and friends
            return False

    def _on_disk(self):
        """The newest caffemodel/solverstate pair in the folder that reads completely, or None."""
        its = sorted((int(m.group(1)) for p in self.dir.glob(f"{self.stage}_iter_*.solverstate")
                      if (m := re.fullmatch(rf"{re.escape(self.stage)}_iter_(\d+)\.solverstate", p.name))), reverse=True)
        for it in its:
            base = f"{self.stage}_iter_{it}"
            state = {"iter": it, "caffemodel": base + ".caffemodel", "solverstate": base + ".solverstate"}
            if self._complete(state) and self._parses(state):
                return state
        return None

    def latest(self):
        state = None
        if self.marker.exists():
            try:
                state = json.loads(self.marker.read_text())
                int(state["iter"]), state["caffemodel"], state["solverstate"]
            except (ValueError, KeyError, TypeError) as e:
                self.log(f"{self.marker} is unreadable ({e.__class__.__name__}: {e}); using the newest snapshot on disk")
                state = None
        if state is not None and not self._complete(state):
            self.log(f"{self.marker} names {', '.join(map(str, self._files(state)))}, which are missing or "
                     "truncated; not handing them to Caffe; using the newest complete snapshot on disk")
            state = None
        state = state or self._on_disk()
        if state is None:
            return None
        caffemodel, solverstate = self._files(state)
        return {**state, "caffemodel": str(caffemodel), "solverstate": str(solverstate)}

    def _need_bytes(self):
        """Room for one more snapshot: the last one's size, or weights plus two solver moments."""
        if self.marker.exists():
            try:
                return int(sum(json.loads(self.marker.read_text())["sizes"]) * 1.1)
            except (ValueError, KeyError, TypeError):
                pass
        return sum(b.data.size for blobs in self.solver.net.params.values() for b in blobs) * 4 * 3 + (1 << 20)

    def take(self):
        it = self.solver.iter
        bad = non_finite_layers(self.solver.net)
        if bad:
            last = self.latest()
            raise SnapshotError(f"weights of {', '.join(bad)} became NaN/inf by iteration {it}; not snapshotting "
                                f"them. Stopped; last good snapshot kept: {last['caffemodel'] if last else 'none yet'}")
        need, free = self._need_bytes(), shutil.disk_usage(self.dir).free
        if free < need:                # Caffe aborts the process when a snapshot write fails
            last = self.latest()
            raise SnapshotError(f"not enough free disk space for a snapshot at iteration {it} in {self.dir}: "
                                f"about {need / 2 ** 20:.0f} MB needed, {free / 2 ** 20:.0f} MB free. Stopped; "
                                f"last good snapshot kept: {last['caffemodel'] if last else 'none yet'}")
        self.solver.snapshot()        # writes <snapshot_prefix>_iter_<it>.caffemodel/.solverstate
        base = f"{self.stage}_iter_{it}"
        files = [self.dir / f"{base}.caffemodel", self.dir / f"{base}.solverstate"]
        write_atomic(self.marker, json.dumps(
            {"iter": it, "caffemodel": files[0].name, "solverstate": files[1].name,
             "sizes": [f.stat().st_size for f in files]}))
        for p in self.dir.glob(f"{self.stage}_iter_*"):
            if not p.name.startswith(base + "."):
                p.unlink()
        return self.latest()
