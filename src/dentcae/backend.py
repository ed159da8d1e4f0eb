"""The one place dentcae imports Caffe.

Everything else calls `get_caffe()` (and `set_device()` before building solvers), so a missing or
broken build is reported once, readably, with the command that fixes it.
"""
import os
import sys

_caffe = None
SETUP_HINT = "run `make setup` (it builds a CPU Caffe into ~/.cache/dentcae and links it into .venv)"


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


def caffe_pb2():
    get_caffe()
    from caffe.proto import caffe_pb2 as pb2
    return pb2


def gpu_available():
    """True when this Caffe build was compiled with CUDA.

    A CPU_ONLY build's set_mode_gpu() does not fail, and its device calls abort the whole process
    ("Cannot use GPU in CPU-only Caffe"), so look at the built module instead of asking a device."""
    so = getattr(get_caffe()._caffe, "__file__", "")
    try:
        with open(so, "rb") as fh:
            return b"cudaGetDevice" in fh.read()
    except OSError:
        return False


def set_device(gpu=None):
    """CPU by default; `gpu=N` selects CUDA device N, and fails before any work on a CPU-only build."""
    caffe = get_caffe()
    if gpu is None:
        caffe.set_mode_cpu()
        return "cpu"
    if not gpu_available():
        raise CaffeUnavailable(
            f"--gpu {gpu} asked for, but this Caffe build is CPU-only (built from the brocolli-caffe "
            "sdist, whose CMake forces CPU_ONLY). Drop --gpu, or point PYTHONPATH at a CUDA build of "
            "BVLC Caffe.")
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
        "mode": "GPU-capable" if gpu_available() else "CPU-only",
        "layer_types": len(layers),
        "has_bvlc_layers": all(t in layers for t in (
            "Convolution", "Deconvolution", "InnerProduct", "HDF5Data", "EuclideanLoss", "LRN",
            "Crop", "Reshape", "Input", "Dropout", "Pooling", "ReLU")),
        "python": sys.version.split()[0],
    }
