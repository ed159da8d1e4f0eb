#!/usr/bin/env python
"""`make bench`: `caffe time` per-iteration forward/backward ms and images/s of the generated nets.

The CAE and the landmark regressor at batch 16, 224x224, beside BVLC AlexNet (the classifier, 227x227)
as the reference. Speed targets live here, never in the tests.
"""
import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from dentcae import nets

NETS = {"CAE (224)": lambda: nets.cae(size=224, deploy=True),
        "regressor (224)": lambda: nets.regressor(8, size=224, deploy=True),
        "BVLC AlexNet (227, reference)": lambda: nets.classifier(size=227, deploy=True)}


def time_net(net, batch, iterations, tmp):
    net.layer[0].input_param.shape[0].dim[0] = batch
    path = Path(tmp) / "net.prototxt"
    nets.write_net(net, path)
    tool = Path(sys.executable).parent / "caffe"
    p = subprocess.run([str(tool), "time", f"-model={path}", f"-iterations={iterations}"],
                       capture_output=True, text=True, env={"GLOG_logtostderr": "1", "PATH": "/usr/bin:/bin"})
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    fwd = float(re.search(r"Average Forward pass: ([\d.]+) ms", p.stderr).group(1))
    bwd = float(re.search(r"Average Backward pass: ([\d.]+) ms", p.stderr).group(1))
    return fwd, bwd


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=5)
    args = ap.parse_args()
    print(f"caffe time, batch {args.batch}, {args.iterations} iterations, CPU")
    print(f"{'net':32s} {'forward ms':>11s} {'backward ms':>12s} {'images/s (fwd+bwd)':>19s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in NETS.items():
            fwd, bwd = time_net(make(), args.batch, args.iterations, tmp)
            print(f"{name:32s} {fwd:11.1f} {bwd:12.1f} {args.batch * 1000 / (fwd + bwd):19.1f}", flush=True)


if __name__ == "__main__":
    main()
