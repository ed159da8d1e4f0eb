#!/usr/bin/env python
"""`make bench`, part two: a small table serially and on a two-node Ray cluster on this machine.

The table: 4 arms of the paper's regressor from scratch (configs/ours/regression_scratch.yaml,
SYNTHETIC phantom, 40 iterations each, distinct seeds). Measured:
  serial     `dentcae table T` (one job after another, Caffe with every core's BLAS threads);
  cluster    `dentcae table T --ray ADDRESS --cpus-per-job 1` on a head and a second node joined by
             address (1 CPU each, this machine): two jobs at a time, one BLAS thread each;
  start      seconds to start the two nodes (`ray start`, not part of the table's wall time);
  overhead   seconds per job that do no work (runtime.cluster.ping) from submit to result, one at a
             time: what Ray adds to each task (the table's jobs take minutes on real data).
Writes results/bench_cluster.json. The two nodes are `ray start --block` processes, stopped at the end.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dentcae.runtime.atomic import write_atomic
from dentcae.runtime.cluster import RayCluster, ping

RAY = str(Path(sys.executable).parent / "ray")
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}   # loopback only


def _table(tmp, arms, iterations):
    table = {"name": "bench_cluster", "results_dir": str(tmp / "results"),
             "set": {"runs_dir": str(tmp / "runs"), "solver.max_iter": iterations, "solver.snapshot": iterations,
                     "solver.test_interval": iterations},
             "arms": [{"key": f"arm{i}", "label": f"regressor, seed set {i}", "config": "configs/ours/regression_scratch.yaml",
                       "set": {"seed": i, "solver.random_seed": i}} for i in range(arms)]}
    path = tmp / "bench_cluster.yaml"
    path.write_text(yaml.safe_dump(table))
    return path


def _timed_table(path, *flags):
    start = time.time()
    subprocess.run([sys.executable, "-m", "dentcae.cli", "table", str(path), *flags], check=True,
                   capture_output=True, env=ENV)
    return time.time() - start


def _start_nodes():
    """A head and a second node (1 CPU each), each its own process group; (address, processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", str(80 * 2 ** 20), "--block"]
    start = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=ENV)
    nodes = [subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false", *common], **start)]
    address = f"127.0.0.1:{port}"
    _wait_for(address, 1)
    nodes.append(subprocess.Popen([RAY, "start", "--address", address, *common], **start))
    _wait_for(address, 2)
    return address, nodes


def _wait_for(address, n):
    code = f"import ray; ray.init(address={address!r}, log_to_driver=False); print(sum(x['Alive'] for x in ray.nodes()))"
    for _ in range(180):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
        if p.returncode == 0 and p.stdout.split() and int(p.stdout.split()[-1]) >= n:
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {n} nodes")


def _stop(nodes):
    for node in nodes:
        os.killpg(node.pid, signal.SIGTERM)
    for node in nodes:
        try:
            node.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)


def _overhead(address, runs_dir, n):
    os.environ.update({k: ENV[k] for k in ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")})
    with RayCluster(runs_dir, address, cpus_per_job=1, log=lambda m: None) as ray:
        ray.gather([ray.submit(ping, {"runs_dir": str(runs_dir), "name": "warm-up"}, "warm-up")])
        start = time.time()
        for i in range(n):
            ray.gather([ray.submit(ping, {"runs_dir": str(runs_dir), "name": f"ping{i}"}, f"ping{i}")])
        return (time.time() - start) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--out", default="results/bench_cluster.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dentcae-bench-cluster-") as tmp:
        tmp = Path(tmp)
        (tmp / "serial").mkdir()
        (tmp / "cluster").mkdir()
        serial = _timed_table(_table(tmp / "serial", args.arms, args.iterations))
        print(f"table of {args.arms} jobs, serial: {serial:.1f} s", flush=True)
        started = time.time()
        address, nodes = _start_nodes()
        start_s = time.time() - started
        try:
            cluster = _timed_table(_table(tmp / "cluster", args.arms, args.iterations), "--ray", address,
                                   "--cpus-per-job", "1")
            print(f"table of {args.arms} jobs, two-node local cluster (1 CPU each): {cluster:.1f} s "
                  f"(starting the nodes: {start_s:.1f} s)", flush=True)
            overhead = _overhead(address, tmp / "cluster" / "runs", 20)
            print(f"Ray's cost per job (an empty job, submit to result): {1000 * overhead:.0f} ms", flush=True)
        finally:
            _stop(nodes)
    info = {"data": "SYNTHETIC phantom", "table": f"{args.arms} regressor arms, {args.iterations} iterations each",
            "cores": len(os.sched_getaffinity(0)), "serial_s": round(serial, 1), "two_node_cluster_s": round(cluster, 1),
            "node_start_s": round(start_s, 1), "overhead_per_task_s": round(overhead, 4)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(args.out), json.dumps(info, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
