"""Where a table's training jobs run: here, one after another (`Serial`), or as Ray tasks
(`RayCluster`) on a Ray started for the table (`--ray`; `--gpus 0,1`: with those CUDA devices) or on
a running cluster joined by address (`--ray HOST:PORT`).

    with open_engine(ray=None, gpus=None, gpu=None, runs_dir="runs/t") as engine:
        pre = engine.submit(train_pretraining, pre_cfg, "cae_r0")
        arm = engine.submit(train_and_evaluate, cfg, "scratch_r0", after=[pre])   # starts after pre
        summaries = engine.gather([arm])

`fn(cfg, device)` trains (and evaluates) one run; on Ray it is a task with declared resources: one
GPU on a CUDA build of Caffe where the cluster has GPUs (the task sees its GPU as device 0), else
`cpus_per_job` CPUs. Every node must see the driver's working folder and run folders at the same
path (a shared file system): each task checks the marker file its driver wrote into `runs_dir` (one
per driver, named by its token: two tables may share a runs_dir) and fails at once, naming the node
and the folder, when it cannot read it. A task whose worker process
dies is retried (`retries`) and `fn` resumes the run from its last snapshot, as --resume does.
"""
import json
import os
import socket
import time
import uuid
from pathlib import Path

from .atomic import write_atomic

MARKER = ".dentcae-cluster-{token}.json"      # in runs_dir, one per driver
RAY_HINT = "Ray is not installed: pip install 'dentcae[cluster]' (make installs it into .venv)"
CONNECT_TIMEOUT_S = 15.0        # --ray ADDRESS must answer within this


class ClusterError(RuntimeError):
    """A table's jobs cannot run where they were sent; the message says why and what to do."""


class Serial:
    """Each job runs here, when it is submitted, on one device (None: CPU)."""
    parallel = False

    def __init__(self, device=None):
        self.device, self.placements = device, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, cfg, name, after=()):
        return fn(cfg, self.device)

    def gather(self, results):
        return list(results)

    def describe(self):
        return {"engine": "serial", "device": "cpu" if self.device is None else f"gpu:{self.device}"}


def driver_marker(runs_dir, token):
    """The marker file of the driver whose token this is, in runs_dir."""
    return Path(runs_dir) / MARKER.format(token=token)


def check_shared(cwd, marker, token):
    """In a task: the driver's working folder and its runs_dir marker are visible here, else ClusterError."""
    host = socket.gethostname()
    if not os.path.isdir(cwd):
        raise ClusterError(f"node {host} cannot see the driver's working folder {cwd}: every node of the "
                           "cluster must mount the same shared file system at the same path (docs/cluster.md)")
    os.chdir(cwd)
    try:
        seen = json.loads(Path(marker).read_text()).get("token")
    except (OSError, ValueError):
        seen = None
    if seen != token:
        raise ClusterError(f"node {host} does not see the run folders the driver writes: {Path(cwd) / marker} "
                           f"is {'missing' if seen is None else 'another driver’s'} there. Mount runs_dir on every "
                           "node at the same path as on the driver (docs/cluster.md)")


def _task(fn, cfg, cwd, marker, token, gpu_job, *after):
    """One job on a Ray worker: check the shared storage, note this worker (runs_dir/.workers/), run."""
    import ray
    start = time.time()
    check_shared(cwd, marker, token)
    node = ray.get_runtime_context().get_node_id()
    note = {"pid": os.getpid(), "node": node, "host": socket.gethostname(), "started": start}
    workers = Path(cfg["runs_dir"]) / ".workers"
    workers.mkdir(parents=True, exist_ok=True)
    write_atomic(workers / f"{cfg['name']}.json", json.dumps(note))
    result = fn(cfg, 0 if gpu_job else None)
    return {"result": result, "node": node, "seconds": time.time() - start}


class RayCluster:
    """Jobs as Ray tasks: on a local Ray started here (address None; `gpus`: those CUDA devices)
    or on the cluster at `address`."""
    parallel = True

    def __init__(self, runs_dir, address=None, gpus=None, cpus_per_job=None, retries=3, log=print):
        self.runs_dir, self.address, self.gpus = Path(runs_dir), address, list(gpus or [])
        self.cpus_per_job, self.retries, self.log = cpus_per_job, retries, log
        self.names, self.placements, self.marker = {}, {}, None

    def __enter__(self):
        self.ray = ray = _import_ray(local=self.address is None)
        if self.address is None:         # a new Ray of its own, never one `ray start` left running here
            if self.gpus:           # Ray hands each task one of these; the task sees it as device 0
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
            ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), num_gpus=len(self.gpus),
                     include_dashboard=False, object_store_memory=200 * 2 ** 20, log_to_driver=True)
        else:
            _check_answers(self.address)
            try:
                ray.init(address=self.address, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ClusterError(f"cannot join the Ray cluster at {self.address}: {e}") from None
        try:
            self._resources()
        except ClusterError:
            ray.shutdown()               # __exit__ does not run when __enter__ raises
            raise
        self.token = uuid.uuid4().hex
        self.marker = driver_marker(self.runs_dir, self.token)
        write_atomic(self.marker, json.dumps({"token": self.token, "driver": socket.gethostname()}))
        self.remote = ray.remote(_task)
        return self

    def _resources(self):
        """One GPU per job where the cluster has GPUs and Caffe is a CUDA build, else CPUs per job
        (default: up to 4, as many as the largest node has); a job no node can hold is refused."""
        from .backend import gpu_available
        nodes = [n["Resources"] for n in self.ray.nodes() if n["Alive"]]
        most_cpus = max(int(n.get("CPU", 0)) for n in nodes)
        self.gpu_job = any(n.get("GPU", 0) >= 1 for n in nodes) and gpu_available()
        if self.gpu_job:
            self.cpus_per_job = self.cpus_per_job or 1
        elif self.cpus_per_job is None:
            self.cpus_per_job = max(1, min(4, most_cpus))
        if self.cpus_per_job > most_cpus:
            raise ClusterError(f"--cpus-per-job {self.cpus_per_job}: no node of the cluster has that many CPUs "
                               f"(the largest has {most_cpus}); the jobs would wait forever")
        self.log(f"Ray: {len(nodes)} node(s), {'1 GPU' if self.gpu_job else f'{self.cpus_per_job} CPU(s)'} per job")

    def __exit__(self, *exc):
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)
        self.ray.shutdown()
        if self.address is None and self.gpus:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        return False

    def submit(self, fn, cfg, name, after=()):
        ref = self.remote.options(num_cpus=self.cpus_per_job, num_gpus=1 if self.gpu_job else 0,
                                  runtime_env={"env_vars": self._blas_threads()},
                                  max_retries=self.retries, retry_exceptions=False, name=name) \
            .remote(fn, cfg, os.getcwd(), str(self.marker), self.token, self.gpu_job, *after)
        self.names[ref] = name
        return ref

    def _blas_threads(self):
        """The BLAS threads a job's worker starts with: as many as the CPUs it holds. OpenBLAS reads
        them once, when Caffe loads it, and OPENBLAS_NUM_THREADS before OMP_NUM_THREADS; Ray sets only
        the latter, and only once the task runs, after unpickling it may have loaded Caffe already.
        Caffe on the CPU is deterministic for a given thread count, not across thread counts."""
        n = str(self.cpus_per_job)
        return {"OPENBLAS_NUM_THREADS": n, "OMP_NUM_THREADS": n}

    def gather(self, refs):
        """The jobs' results in order; a job that failed raises ClusterError with its name and cause."""
        out = []
        for ref in refs:
            try:
                got = self.ray.get(ref)
            except self.ray.exceptions.RayTaskError as e:
                cause = e.cause if getattr(e, "cause", None) is not None else e
                raise ClusterError(f"job {self.names[ref]} failed: {cause}") from None
            self.placements[self.names[ref]] = got["node"]
            out.append(got["result"])
        return out

    def describe(self):
        nodes = {}
        for name, node in self.placements.items():
            nodes.setdefault(node, []).append(name)
        return {"engine": "ray", "address": self.address or "local", "resources_per_job":
                {"GPU": 1} if self.gpu_job else {"CPU": self.cpus_per_job}, "runs_by_node": nodes}


def _import_ray(local):
    """Ray, set up so that a Ray started here (local) listens on the loopback interface only: its
    node address is 127.0.0.1 (Ray then binds every server there), so nothing off this machine can
    reach it or submit jobs to it. Joining a cluster by address keeps Ray's own choice."""
    try:
        import ray
        from ray._private import ray_constants
    except ImportError:
        raise ClusterError(RAY_HINT) from None
    # Read when Ray picks this node's address: off, a Ray started here takes 127.0.0.1 (and keeps it:
    # its servers and workers get that address from it), so nothing of it listens on the network.
    ray_constants.ENABLE_RAY_CLUSTER = not local
    return ray


def _check_answers(address, timeout=CONNECT_TIMEOUT_S):
    """Refuse, within `timeout` seconds, a cluster address nothing answers at (ray.init would wait)."""
    host, _, port = str(address).removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except ValueError:
        raise ClusterError(f"--ray {address}: give the cluster's head as HOST:PORT (e.g. 10.0.0.5:6379)") from None
    except OSError as e:
        raise ClusterError(f"--ray {address}: nothing answers there within {timeout:g} s ({e.strerror or e}); "
                           "start the cluster (`ray start --head`) or check the address") from None


def ping(cfg, device):
    """A job that does nothing: what running a job on the engine costs beyond the job (make bench)."""
    return None


def open_engine(runs_dir, ray=None, gpus=None, gpu=None, cpus_per_job=None, log=print):
    """Serial on `gpu` (None: CPU), or Ray: `ray` "local" or an address, `gpus` several devices."""
    if ray is None and not gpus:
        return Serial(gpu)
    return RayCluster(runs_dir, None if ray in (None, "local") else ray, gpus, cpus_per_job, log=log)
