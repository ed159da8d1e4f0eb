"""The one place dentcae imports Caffe.

Everything else calls `get_caffe()` (and `set_device()` before building solvers), so a missing or
broken build is reported once, readably, with the command that fixes it.
"""
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

_caffe = None
SETUP_HINT = ("run `make setup` (it builds a CPU Caffe into ~/.cache/dentcae and links it into .venv; "
              "`make caffe CAFFE_GPU=1` builds the CUDA one)")


class CaffeUnavailable(RuntimeError):
    pass


def get_caffe():
    """Import pycaffe once, quietly (glog only warnings and up unless GLOG_minloglevel is set)."""
    global _caffe
    if _caffe is None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        try:
            import caffe  # noqa: the only `import caffe` in dentcae
        except ImportError as e:
            raise CaffeUnavailable(f"cannot import caffe ({e}); {SETUP_HINT}") from e
        _caffe = caffe
    return _caffe


def seed_caffe(seed):
    """Seed both random streams a Caffe training draws from: Caffe's own (fillers, Dropout) and
    the C library's rand(), which BVLC's HDF5Data shuffles with (std::random_shuffle). A process
    starts rand() at seed 1, the same as 0; seeding it for each run makes a run independent of
    what ran before it in the same process (a table's earlier runs), so it can be resumed exactly."""
    get_caffe().set_random_seed(int(seed))
    ctypes.CDLL(None).srand(ctypes.c_uint(int(seed)))


def caffe_pb2():
    get_caffe()
    from caffe.proto import caffe_pb2 as pb2
    return pb2


def build_record():
    """What scripts/build_caffe.py recorded next to the build it linked (build.json), or {}."""
    path = Path(get_caffe().__file__).resolve().parents[2] / "build.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def gpu_available():
    """True when this Caffe build was compiled with CUDA.

    A CPU_ONLY build's set_mode_gpu() does not fail, and its device calls abort the whole process
    ("Cannot use GPU in CPU-only Caffe"), so look at the build instead of asking a device."""
    record = build_record()
    if "mode" in record:
        return record["mode"] == "gpu"
    so = getattr(get_caffe()._caffe, "__file__", "")
    try:
        with open(so, "rb") as fh:
            return b"cudaGetDevice" in fh.read()
    except OSError:
        return False


def cuda_devices():
    """[(index, name, memory MiB)] of the CUDA devices nvidia-smi sees; [] without a driver or GPU."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [line.split(", ") for line in out.stdout.splitlines() if out.returncode == 0 and line.strip()]
    return [(int(r[0]), r[1], int(float(r[2]))) for r in rows if len(r) == 3 and r[0].isdigit()]


def set_device(gpu=None):
    """CPU by default; `gpu=N` selects CUDA device N, and fails before any work on a CPU-only build
    or when there is no device N (Caffe would abort the process instead of raising)."""
    caffe = get_caffe()
    if gpu is None:
        caffe.set_mode_cpu()
        return "cpu"
    if not gpu_available():
        raise CaffeUnavailable(
            f"--gpu {gpu} asked for, but this Caffe build is CPU-only. Drop --gpu, or build the CUDA "
            "Caffe with `make caffe CAFFE_GPU=1` (on a machine with an NVIDIA driver).")
    devices = cuda_devices()
    if int(gpu) not in [d[0] for d in devices]:
        found = ", ".join(f"{i}: {name}" for i, name, _ in devices) or "none (no NVIDIA driver or GPU here)"
        raise CaffeUnavailable(f"--gpu {gpu} asked for; this is a GPU build of Caffe, but CUDA device {gpu} "
                               f"does not exist. Devices nvidia-smi finds: {found}.")
    caffe.set_device(int(gpu))
    caffe.set_mode_gpu()
    return f"gpu:{gpu}"


def build_info():
    """What `dentcae doctor` prints about the Caffe build."""
    caffe = get_caffe()
    layers = sorted(caffe.layer_type_list())
    return {
        "caffe_path": os.path.dirname(caffe.__file__),
        "caffe_version": getattr(caffe, "__version__", "unknown"),
        "mode": _mode(),
        "devices": cuda_devices() if gpu_available() else [],
        "layer_types": len(layers),
        "has_bvlc_layers": all(t in layers for t in (
            "Convolution", "Deconvolution", "InnerProduct", "HDF5Data", "EuclideanLoss", "LRN",
            "Crop", "Reshape", "Input", "Dropout", "Pooling", "ReLU")),
        "python": sys.version.split()[0],
    }


def _mode():
    record = build_record()
    if not gpu_available():
        return "CPU-only"
    return f"GPU build (CUDA {record.get('cuda', '?')}, sm_{record.get('arch', '?')})"
