"""Solver prototxts from the `solver:` block of a config, built as caffe_pb2.SolverParameter.

    sp = solver_param(cfg["solver"], net="train.prototxt", snapshot_prefix="runs/x/snapshots/cae",
                      test_iter=3)
    write_solver(sp, "runs/x/solver.prototxt")
"""

from google.protobuf import text_format

from ..runtime.atomic import write_atomic
from ..runtime.backend import caffe_pb2

LR_POLICY_FIELDS = {"fixed": (), "step": ("gamma", "stepsize"), "exp": ("gamma",),
                    "inv": ("gamma", "power"), "poly": ("power",), "multistep": ("gamma", "stepvalue"),
                    "sigmoid": ("gamma", "stepsize")}


def solver_param(sc, net, snapshot_prefix, test_iter, gpu=None):
    """SolverParameter for one training run; `test_iter` covers the whole test split once."""
    pb2 = caffe_pb2()
    if sc["lr_policy"] not in LR_POLICY_FIELDS:
        raise ValueError(f"solver.lr_policy {sc['lr_policy']!r} is not one of {sorted(LR_POLICY_FIELDS)}")
    sp = pb2.SolverParameter()
    sp.net = str(net)
    sp.type = sc["type"]
    sp.base_lr = float(sc["base_lr"])
    sp.lr_policy = sc["lr_policy"]
    for key in LR_POLICY_FIELDS[sc["lr_policy"]]:
        if key == "stepvalue":
            sp.stepvalue.extend(int(v) for v in sc["stepvalue"])
        elif key == "stepsize":
            sp.stepsize = int(sc[key])
        else:
            setattr(sp, key, float(sc[key]))
    sp.momentum = float(sc["momentum"])
    if sc["type"] == "Adam":
        sp.momentum2 = float(sc["momentum2"])
    sp.weight_decay = float(sc["weight_decay"])
    sp.max_iter = int(sc["max_iter"])
    sp.test_iter.append(max(1, int(test_iter)))
    sp.test_interval = max(1, int(sc["test_interval"]))
    sp.test_initialization = False
    sp.display = int(sc["display"])
    sp.snapshot = int(sc["snapshot"])
    sp.snapshot_prefix = str(snapshot_prefix)
    if sc["clip_gradients"] > 0:
        sp.clip_gradients = float(sc["clip_gradients"])
    sp.random_seed = int(sc["random_seed"])
    sp.solver_mode = pb2.SolverParameter.GPU if gpu is not None else pb2.SolverParameter.CPU
    if gpu is not None:
        sp.device_id = int(gpu)
    return sp


def write_solver(sp, path):
    """Write a solver prototxt; parsing it back checks Caffe accepts every field."""
    text = text_format.MessageToString(sp)
    text_format.Parse(text, caffe_pb2().SolverParameter())
    write_atomic(path, text)
    return path

