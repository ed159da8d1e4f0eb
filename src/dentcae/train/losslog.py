"""loss.csv of a run: `iter,phase,loss` rows, appended at each snapshot, cut back on resume.

    log = LossLog("runs/x/loss.csv")
    log.add(100, "train", 0.0123); log.flush()     # rows reach the disk (fsync) only on flush
    log.cut_to(200)                                 # resume: forget rows after the snapshot
    curves = log.read()                             # {"train": (iters, losses), "test": (...)}
"""
import csv
import os
from pathlib import Path

from ..runtime.atomic import write_csv_atomic

FIELDS = ["iter", "phase", "loss"]


class LossLog:
    def __init__(self, path):
        self.path = Path(path)
        self.pending = []

    def add(self, it, phase, loss):
        self.pending.append([int(it), phase, f"{float(loss):.8g}"])

    def flush(self):
        """Append the pending rows (the header first in a new file) and fsync."""
        new = not self.path.exists()
        with self.path.open("a", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            if new:
                w.writerow(FIELDS)
            w.writerows(self.pending)
            fh.flush()
            os.fsync(fh.fileno())
        self.pending = []

    def rows(self):
        if not self.path.exists():
            return []
        with self.path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def cut_to(self, last_iter):
        """Drop rows after `last_iter` (they belong to steps a resume will run again)."""
        kept = [[r["iter"], r["phase"], r["loss"]] for r in self.rows() if int(r["iter"]) <= last_iter]
        write_csv_atomic(self.path, [FIELDS] + kept)
        self.pending = []

    def read(self):
        """{"train": (iters, losses), "test": (iters, losses)} for plots."""
        out = {"train": ([], []), "test": ([], [])}
        for r in self.rows():
            its, values = out.setdefault(r["phase"], ([], []))
            its.append(int(r["iter"]))
            values.append(float(r["loss"]))
        return out

    def last(self):
        """{phase: the last loss of that phase}."""
        return {phase: values[-1] for phase, (_, values) in self.read().items() if values}
