"""Where an output folder may go: never where an input is, inside it, or around it.

    how = overlap("preds", "xrays/")      # "is", "lies inside", "holds" or None
    if how: raise ValueError(f"--out preds {how} the input xrays/")

An output that is an input overwrites it; one inside an input is read back as input next time (a
folder of X-rays, a run's data); one holding an input is deleted with it by --overwrite.
"""
from pathlib import Path


def overlap(out, path, can_hold=True):
    """How the folder `out` meets `path`: "is", "lies inside" (only where `path` can hold it, i.e. is or
    may be a folder), "holds", or None. Both are resolved (links and '..' followed) first."""
    o, p = Path(out).resolve(), Path(path).resolve()
    if o == p:
        return "is"
    if p in o.parents:
        return "lies inside" if can_hold else None
    return "holds" if o in p.parents else None
