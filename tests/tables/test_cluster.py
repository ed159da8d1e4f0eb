"""Tables on Ray (runtime/cluster.py): a real two-node Ray cluster on this machine (a head and a node
joined by address, 1 CPU each) runs a tiny table with the per-sample errors of a serial run with one
BLAS thread (Caffe's CPU results depend on the thread count, and Ray gives a 1-CPU job one); a worker
killed mid-run is retried and the run resumes from its snapshot; a node that cannot see runs_dir
fails with the clear error. The nodes are `ray start --block` processes this test stops itself."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_cli, tiny_config
from dentcae.evaluation.metrics import read_prediction_errors
from dentcae.runtime.cluster import ClusterError, check_shared, driver_marker
from dentcae.tables.run import run_table
from dentcae.train.losslog import LossLog

RAY = str(Path(sys.executable).parent / "ray")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(address):
    """(alive nodes, CPUs the scheduler can hand out) of the cluster: a node counts once its CPUs do."""
    code = ("import ray; ray.init(address=%r, log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()), int(ray.available_resources().get('CPU', 0)))" % address)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return tuple(map(int, p.stdout.split()[-2:])) if p.returncode == 0 and len(p.stdout.split()) >= 2 else (0, 0)


def _stop(nodes):
    """Stop the nodes this test started (each its own process group), and only those."""
    for node in nodes:
        try:
            os.killpg(node.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for node in nodes:
        try:
            node.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()


@contextmanager
def ray_cluster(head_cpus=1, node_cpus=1, node_prefix=()):
    """A head and one more node joined by address on this machine, each a `ray start --block` in its
    own process group (so another Ray of this user is left alone); yields the address."""
    pytest.importorskip("ray")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--object-store-memory", str(80 * 2 ** 20), "--disable-usage-stats",
              "--block"]
    local = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}   # a loopback-only test cluster
    saved = {k: os.environ.get(k) for k in local}
    os.environ.update(local)                            # the drivers here join it the same way
    start = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
    nodes = []
    try:
        nodes.append(subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--num-cpus", str(head_cpus),
                                       "--include-dashboard", "false", *common], **start))
        _wait_for(address, 1, head_cpus)
        nodes.append(subprocess.Popen([*node_prefix, RAY, "start", "--address", address, "--num-cpus", str(node_cpus),
                                       *common], **start))
        _wait_for(address, 2, head_cpus + node_cpus)
        yield address
    finally:
        _stop(nodes)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _wait_for(address, n, cpus, timeout=180):
    deadline = time.time() + timeout
    while not all(got >= want for got, want in zip(_ready(address), (n, cpus))):
        if time.time() > deadline:
            raise RuntimeError(f"the Ray cluster at {address} did not reach {n} nodes, {cpus} CPUs in {timeout} s")
        time.sleep(1)


def _table(tmp, root, name="tiny", arms=("a", "b", "c")):
    pre = tiny_config(tmp, root, stage="pretrain", name="cae", solver={"max_iter": 2})
    cfgs = {k: tiny_config(tmp, root, name=f"arm_{k}", model={"init": "cae" if k == "c" else "scratch"},
                           solver={"max_iter": 3}) for k in arms}
    table = {"name": name, "results_dir": str(tmp / "results"), "pretrainings": {"cae": str(pre)},
             "arms": [{"key": k, "label": k, "config": str(c)} for k, c in cfgs.items()],
             "comparisons": [["a", "b"]] if {"a", "b"} <= set(arms) else []}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(table))
    return path


def test_a_task_that_cannot_see_the_shared_folders_says_which_and_where(tmp_path):
    marker = str(driver_marker("runs", "t"))
    with pytest.raises(ClusterError, match="cannot see the driver's working folder"):
        check_shared(str(tmp_path / "absent"), marker, "t")
    (tmp_path / "runs").mkdir()
    here = os.getcwd()
    try:
        with pytest.raises(ClusterError, match=r"does not see the run folders .*runs/\.dentcae-cluster-t\.json is missing"):
            check_shared(str(tmp_path), marker, "t")
        (tmp_path / marker).write_text(json.dumps({"token": "other"}))
        with pytest.raises(ClusterError, match="another driver"):
            check_shared(str(tmp_path), marker, "t")
    finally:
        os.chdir(here)


def test_two_drivers_sharing_a_runs_folder_keep_their_own_markers(tmp_path):
    """Two tables at once on one runs folder: each driver's marker is its own file, so one driver
    writing (or removing, when it ends) its marker never fails the other's tasks."""
    (tmp_path / "runs").mkdir()
    a, b = driver_marker("runs", "a"), driver_marker("runs", "b")
    assert a != b and a.parent == b.parent == Path("runs")
    here = os.getcwd()
    try:
        (tmp_path / a).write_text(json.dumps({"token": "a"}))
        (tmp_path / b).write_text(json.dumps({"token": "b"}))
        check_shared(str(tmp_path), str(a), "a")
        check_shared(str(tmp_path), str(b), "b")
        (tmp_path / b).unlink()                 # driver b ends
        check_shared(str(tmp_path), str(a), "a")
    finally:
        os.chdir(here)


@pytest.mark.slow
def test_a_two_node_cluster_runs_the_table_as_a_serial_run_does(phantom, clean_tmp, quiet):
    serial_dir, ray_dir = clean_tmp / "serial", clean_tmp / "ray"
    for d in (serial_dir, ray_dir):
        d.mkdir()
    # a serial run with as many BLAS threads as a job has CPUs here (Ray sets OMP_NUM_THREADS to it):
    # Caffe on the CPU is deterministic for a given thread count, not across thread counts
    run_cli("table", str(_table(serial_dir, phantom)), env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
            check=True)
    serial = json.loads((serial_dir / "results/tiny.json").read_text())
    with ray_cluster() as address:
        clustered = run_table(_table(ray_dir, phantom), ray=address, cpus_per_job=1, log=quiet)
    nodes = clustered["ran_on"]["runs_by_node"]
    assert len(nodes) == 2, nodes                       # both nodes ran jobs
    assert sorted(sum(nodes.values(), [])) == ["a_r0", "b_r0", "c_r0", "cae_r0"]
    assert serial["ran_on"] == {"engine": "serial", "device": "cpu"}
    for key in ("a", "b", "c"):
        e_serial, ids_serial = read_prediction_errors(serial_dir / "runs/tiny" / f"{key}_r0" / "predictions.csv")
        e_ray, ids_ray = read_prediction_errors(ray_dir / "runs/tiny" / f"{key}_r0" / "predictions.csv")
        assert ids_serial == ids_ray
        np.testing.assert_array_equal(e_serial, e_ray)
    assert [r["ours_mre_mm"] for r in serial["rows"]] == [r["ours_mre_mm"] for r in clustered["rows"]]
    assert serial["comparisons"][0]["wilcoxon_p"] == clustered["comparisons"][0]["wilcoxon_p"]


def _kill_once_snapshotted(run, note, killed):
    """Kill the worker of `run` (its pid in `note`) once its first snapshot exists."""
    deadline = time.time() + 600
    while time.time() < deadline and not killed:
        if (run / "snapshots" / "latest.json").exists() and note.exists():
            pid = json.loads(note.read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_its_run_resumes_from_the_snapshot(phantom, clean_tmp, quiet):
    pytest.importorskip("ray")
    cfg = tiny_config(clean_tmp, phantom, name="long", prepare={"input_size": 96, "resize": "pad"},
                      model={"head": "heatmap", "head_width": 16},
                      solver={"max_iter": 60, "snapshot": 5, "test_interval": 20, "batch_size": 2})
    table = clean_tmp / "kill.yaml"
    table.write_text(yaml.safe_dump({"name": "kill", "results_dir": str(clean_tmp / "results"),
                                     "arms": [{"key": "long", "label": "long", "config": str(cfg)}]}))
    run, killed = clean_tmp / "runs/kill/long_r0", []
    killer = threading.Thread(target=_kill_once_snapshotted, args=(run, clean_tmp / "runs/kill/.workers/long_r0.json", killed))
    killer.start()
    try:
        result = run_table(table, ray="local", cpus_per_job=1, log=quiet)
    finally:
        killed.append("stop")
        killer.join()
    assert isinstance(killed[0], int), "the run finished before its worker could be killed"
    log = (run / "log.txt").read_text()
    assert "resumed" in log                              # the retried task went on from the snapshot
    assert json.loads((clean_tmp / "runs/kill/.workers/long_r0.json").read_text())["pid"] != killed[0]
    iters = LossLog(run / "loss.csv").read()["train"][0]
    assert list(iters) == sorted(set(iters)) and len(iters) == 60          # one continuous run
    assert np.isfinite(result["rows"][0]["ours_mre_mm"])


@pytest.mark.slow
def test_a_node_that_cannot_see_runs_dir_fails_clearly_without_hanging(phantom, clean_tmp):
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespaces here (unshare --mount) to hide runs_dir from a node")
    runs = clean_tmp / "runs"
    runs.mkdir()
    path = _table(clean_tmp, phantom, name="blind", arms=("a",))
    # the second node sees an empty folder where the driver's runs_dir is; the head runs no job
    hide = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"mount -t tmpfs none {runs} && exec \"$0\" \"$@\""]
    with ray_cluster(head_cpus=0, node_prefix=hide) as address:
        started = time.time()
        code, out = run_cli("table", str(path), "--ray", address, "--cpus-per-job", "1")
        took = time.time() - started
    assert code != 0 and "does not see the run folders the driver writes" in out, out[-3000:]
    assert "Traceback" not in out and took < 300


def _listening(pids):
    """The local addresses of the TCP sockets in LISTEN state that processes `pids` hold."""
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:             # 0A: LISTEN
                found.append(cols[1].split(":")[0][-8:] if width == 32 else cols[1].split(":")[0])
    return found


def _descendants(root):
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _caffe_blas_threads(cfg, device):
    """A job: the threads the OpenBLAS that Caffe loaded in this worker runs with."""
    import ctypes
    from dentcae.runtime.backend import get_caffe
    get_caffe()
    maps = Path("/proc/self/maps").read_text().split()
    lib = next(w for w in maps if "libopenblas" in w)
    return {"threads": ctypes.CDLL(lib).openblas_get_num_threads(), "env": os.environ.get("OPENBLAS_NUM_THREADS")}


@pytest.mark.slow
def test_a_ray_job_runs_caffe_with_as_many_blas_threads_as_cpus_it_holds(tmp_path, monkeypatch):
    # the driver's own BLAS setting (here 2, Ray's OMP_NUM_THREADS would lose to it) must not reach the
    # jobs: a 1-CPU job trains with 1 thread, the thread count a serial run is compared with
    pytest.importorskip("ray")
    from ray import cloudpickle
    from dentcae.runtime.cluster import RayCluster
    cloudpickle.register_pickle_by_value(sys.modules[__name__])     # the job is defined here, in a test
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.chdir(tmp_path)
    other = driver_marker(tmp_path, "another-table")     # another table's driver on the same runs folder
    other.write_text(json.dumps({"token": "another-table"}))
    with RayCluster(tmp_path, cpus_per_job=1) as engine:
        assert engine.marker == driver_marker(tmp_path, engine.token) != other
        got = engine.gather([engine.submit(_caffe_blas_threads, {"runs_dir": str(tmp_path), "name": "probe"}, "probe")])
    assert got == [{"threads": 1, "env": "1"}]
    assert other.is_file() and not engine.marker.exists()      # this driver removed its own marker only


def test_the_ray_a_table_starts_itself_listens_on_loopback_only(tmp_path):
    pytest.importorskip("ray")
    from dentcae.runtime.cluster import RayCluster
    with RayCluster(tmp_path) as engine:
        addresses = _listening(_descendants(os.getpid()) | {os.getpid()})
        assert addresses and set(addresses) == {"0100007F"}, addresses     # 127.0.0.1, as /proc writes it
        assert "127.0.0.1" in engine.ray.get_runtime_context().gcs_address


def test_a_cluster_address_nothing_answers_at_fails_fast_and_table_flags_are_checked(tmp_path):
    started = time.time()
    code, out = run_cli("table", "configs/ours/table3.yaml", "--ray", f"127.0.0.1:{_free_port()}")
    assert code != 0 and "nothing answers there" in out and time.time() - started < 60
    for args, message in ((["--cpus-per-job", "1"], "--cpus-per-job applies to --ray"),
                          (["--arms", ""], "--arms names no arm"),
                          (["--set", "dataset.label_budget=[]"], "give at least one value")):
        code, out = run_cli("table", "configs/isbi/label_curve.yaml", *args)
        assert code == 2 and message in out, out
