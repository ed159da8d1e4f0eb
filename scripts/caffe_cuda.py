"""The CUDA side of scripts/build_caffe.py: toolkit from PyPI, GPU arch, source changes, CMake args.

    toolkit = install_toolkit(cache)            # ~/.cache/dentcae/cuda-13.0.2/nvidia/cu13
    arch = gpu_arch()                           # "90" from nvidia-smi, CAFFE_CUDA_ARCH, or 90
    patch_cuda_source(src)
    cmake_args(toolkit, arch)

No CUDA 11/12 wheel on PyPI carries a compiler; CUDA 13 does (nvcc, cicc in nvvm, the CCCL headers).
The `nvvm` extra is pinned with the rest: a newer nvvm emits PTX that ptxas 13.0 rejects. The wheel's
lib/ holds only versioned .so files, so the unversioned names CMake looks for are linked next to them.
cuDNN stays off (this tree's cuDNN code uses APIs removed in cuDNN 8). Standard library only.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CUDA_VERSION = "13.0.2"
TOOLKIT = f"cuda-toolkit[nvcc,nvvm,crt,cudart,cublas,curand,cccl]=={CUDA_VERSION}"
DEFAULT_ARCH = "90"     # H100/H200; CUDA 13 builds nothing older than sm_75
UNVERSIONED = ("libcudart", "libcublas", "libcublasLt", "libcurand")
CUDA_PATCH_VERSION = "3"

# CUDA 13 removed these cudaDeviceProp fields; DeviceQuery asks for the attributes instead.
DEVICE_PROP_FIELDS = {"prop.clockRate": "cudaDevAttrClockRate",
                      "prop.deviceOverlap": "cudaDevAttrGpuOverlap",
                      "prop.kernelExecTimeoutEnabled": "cudaDevAttrKernelExecTimeout"}
STUB_BLOCK = re.compile(r"#ifdef CPU_ONLY\s*\n\s*STUB_GPU\((\w+)\);\s*\n\s*#endif")
GPU_FALLBACK = """#ifdef CPU_ONLY
STUB_GPU({cls});
#else
// dentcae: this fork ships no .cu for {cls}; on the GPU it runs its CPU code
template <typename Dtype>
void {cls}<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {{ this->Forward_cpu(bottom, top); }}
template <typename Dtype>
void {cls}<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {{
  this->Backward_cpu(top, propagate_down, bottom);
}}
#endif"""
PROPOSAL_BACKWARD = """// dentcae: proposals carry no gradient; the fork instantiated a Backward_gpu it never defined
template <typename Dtype>
void ProposalLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {}

INSTANTIATE_LAYER_GPU_FUNCS(ProposalLayer);"""
CUDA_INCLUDES = """if(HAVE_CUDA)      # dentcae: every C++ target here includes the CUDA headers (device_alternate.hpp)
  include_directories(${CUDA_INCLUDE_DIRS} ${CUDA_TOOLKIT_ROOT_DIR}/include/cccl)
endif()
"""
CUDA_CMAKE = """
if(HAVE_CUDA)
  cuda_include_directories(/usr/include/hdf5/serial ${PYTHON_INCLUDE_DIRS} ${NUMPY_INCLUDE_DIR}
                           ${CUDA_TOOLKIT_ROOT_DIR}/include/cccl)
  caffe_cuda_compile(caffe_cuda_objs ${cuda})
  target_sources(pycaffe PRIVATE ${caffe_cuda_objs})
  target_sources(caffe_tool PRIVATE ${caffe_cuda_objs})
  foreach(target pycaffe caffe_tool)
    target_link_libraries(${target} ${CUDA_CUDART_LIBRARY} ${CUDA_curand_LIBRARY} ${CUDA_CUBLAS_LIBRARIES})
  endforeach()
endif()
"""


def log(msg):
    print(f"[build_caffe] {msg}", flush=True)


def _replace(path, old, new, count=1):
    text = path.read_text()
    if text.count(old) != count:
        raise RuntimeError(f"{path}: expected {count} x {old[:60]!r} to patch, found {text.count(old)}")
    path.write_text(text.replace(old, new))


def patch_cuda_source(src):
    """The changes a CUDA 13 build of this tree needs, on top of build_caffe.patch_source."""
    _replace(src / "CMakeLists.txt", "add_definitions( -DCPU_ONLY=1 )",
             "if(CPU_ONLY)\n  add_definitions( -DCPU_ONLY=1 )\nendif()")
    _replace(src / "CMakeLists.txt", "-std=c++14", "-std=c++17")        # CCCL 3 requires C++17
    deps = src / "cmake/Dependencies.cmake"
    deps.write_text(deps.read_text() + "\n# dentcae: CUDA\ninclude(cmake/Cuda.cmake)\n")
    (src / "include/caffe/proto/caffe.pb.h").unlink(missing_ok=True)    # stale; nvcc found it first
    common = src / "src/caffe/common.cpp"
    text = common.read_text()
    for field, attr in DEVICE_PROP_FIELDS.items():
        if text.count(field) != 1:
            raise RuntimeError(f"{common}: {field} to patch not found")
        text = text.replace(field, f"[&]{{ int v = 0; cudaDeviceGetAttribute(&v, {attr}, device); return v; }}()")
    common.write_text(text)
    _replace(src / "src/caffe/layers/proposal_layer.cu", "INSTANTIATE_LAYER_GPU_FUNCS(ProposalLayer);",
             PROPOSAL_BACKWARD)
    layers = src / "src/caffe/layers"
    for cpp in sorted(layers.glob("*.cpp")):
        text = cpp.read_text()
        if not (layers / f"{cpp.stem}.cu").exists() and STUB_BLOCK.search(text):
            cpp.write_text(STUB_BLOCK.sub(lambda m: GPU_FALLBACK.format(cls=m.group(1)), text))
    cmake = src / "python/CMakeLists.txt"
    text = cmake.read_text().replace("\nadd_custom_command(", CUDA_CMAKE + "\nadd_custom_command(", 1)
    cmake.write_text(CUDA_INCLUDES + text)


def install_toolkit(cache):
    """CUDA 13 from PyPI into cache/cuda-<version> (once); returns its nvidia/cu13 root.
    CAFFE_CUDA_ROOT names an installed toolkit instead (a machine that cannot reach PyPI)."""
    if os.environ.get("CAFFE_CUDA_ROOT"):
        root = Path(os.environ["CAFFE_CUDA_ROOT"])
        if not (root / "bin/nvcc").exists():
            raise SystemExit(f"[build_caffe] CAFFE_CUDA_ROOT={root} has no bin/nvcc")
        return root
    target = cache / f"cuda-{CUDA_VERSION}"
    root = target / "nvidia/cu13"
    if not (root / "bin/nvcc").exists():
        partial = cache / f"cuda-{CUDA_VERSION}.partial"
        log(f"installing {TOOLKIT} from PyPI into {target} (about 1 GB)")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(partial), TOOLKIT], check=True)
        partial.rename(target)
    lib = root / "lib"
    for name in UNVERSIONED:
        versioned = sorted(lib.glob(f"{name}.so.*"), key=lambda p: len(p.name))
        link = lib / f"{name}.so"
        if versioned and not link.exists():
            link.symlink_to(versioned[0].name)
    return root


def nvcc_version(root):
    out = subprocess.run([str(root / "bin/nvcc"), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release ([\d.]+)", out)
    return m.group(1) if m else "unknown"


def gpu_arch():
    """Compute capability to build for: CAFFE_CUDA_ARCH, else the first GPU nvidia-smi reports,
    else 90 (there is nothing to detect on a machine without a GPU)."""
    if os.environ.get("CAFFE_CUDA_ARCH"):
        return os.environ["CAFFE_CUDA_ARCH"].replace(".", "")
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        out = []
    return out[0].replace(".", "") if out else DEFAULT_ARCH


def cmake_args(root, arch):
    """CMake arguments of the CUDA build; the wheel's lib/ goes into RPATH (no LD_LIBRARY_PATH)."""
    rpath = f"-Wl,-rpath,{root / 'lib'}"
    return ["-DCPU_ONLY=OFF", "-DUSE_CUDNN=OFF", "-DUSE_NCCL=OFF", f"-DCUDA_TOOLKIT_ROOT_DIR={root}",
            f"-DCUDA_NVCC_EXECUTABLE={root / 'bin/nvcc'}", "-DCUDA_ARCH_NAME=Manual",
            f"-DCUDA_ARCH_BIN={arch}", f"-DCUDA_ARCH_PTX={arch}", f"-DCUDA_curand_LIBRARY={root / 'lib/libcurand.so'}",
            "-DCUDA_PROPAGATE_HOST_FLAGS=ON"], rpath
