#!/usr/bin/env python3
"""Build pycaffe (and the `caffe` CLI) from the brocolli-caffe sdist, cached: CPU, or CUDA with --gpu.

    python scripts/build_caffe.py --venv .venv            # CPU (make caffe)
    python scripts/build_caffe.py --venv .venv --gpu      # CUDA 13 from PyPI (make caffe CAFFE_GPU=1)

Debian 12 has no caffe package and PyPI no pycaffe wheel, so we build BVLC Caffe from the one
sdist PyPI carries, with the source changes that `patch_source` lists (found by building it on
Debian 12: protobuf 3.21, boost 1.74, gcc 12, Python 3.11).
The relocatable install tree is cached under $DENTCAE_CACHE (default ~/.cache/dentcae) in a folder
named by a hash of everything the build depends on; a build that fails leaves no entry behind.
Finally the venv gets a `.pth` file pointing at the cache entry and a `bin/caffe` link.
Standard library only: this runs before anything else is installed.
"""
import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import caffe_cuda

SDIST = "brocolli-caffe==9.0.2"
SDIST_FILE = "brocolli-caffe-9.0.2.tar.gz"
SDIST_SHA256 = "c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a"
PATCH_VERSION = "6"  # bump when patch_source() changes: it is part of the cache key
BUILD_PACKAGES = [
    "build-essential", "cmake", "protobuf-compiler", "libprotobuf-dev", "libgoogle-glog-dev",
    "libgflags-dev", "libhdf5-dev", "libopenblas-dev", "libboost-python-dev",
    "libboost-system-dev", "libboost-thread-dev", "libboost-filesystem-dev",
    "libboost-regex-dev",
]
# Crop's CPU copy (BVLC's crop_layer.cpp as well): at the last axis it loops over that axis and
# copies the whole row once per element, the same row to the same place shape(-1) times. Copying
# each row once gives identical outputs; it was 466 of the CAE's 1900 ms forward+backward (batch 8).
CROP_ROW_LOOP = ("    // We are at the last dimensions, which is stored continously in memory\n"
                 "    for (int i = 0; i < top[0]->shape(cur_dim); ++i) {\n")
CROP_ROW_ONCE = ("    // We are at the last dimensions, which is stored continously in memory\n"
                 "    for (int i = 0; i < 1; ++i) {  // dentcae: each row once, not shape(cur_dim) times\n")
ADAM_OPENMP = ("add_library(caffe_objs OBJECT ${srcs})\n"
               "set_source_files_properties(${PROJECT_SOURCE_DIR}/src/caffe/solvers/adam_solver.cpp\n"
               "                            PROPERTIES COMPILE_OPTIONS \"-fopenmp;-fno-math-errno\")\n")
LINK_LIBS = ("proto -lglog -lgflags -lprotobuf -lboost_thread -lboost_system -lboost_filesystem "
             "-lboost_regex -lhdf5_hl -lhdf5 -lopenblas -lgomp")

# python/CMakeLists.txt, rewritten: the caffe sources compile once as an OBJECT library that both
# the python module and the command-line tool link.
PYTHON_CMAKELISTS = """\
include_directories(${PYTHON_INCLUDE_DIRS} ${NUMPY_INCLUDE_DIR} ${Boost_INCLUDE_DIRS})
file(GLOB_RECURSE python_srcs ${PROJECT_SOURCE_DIR}/python/*.cpp)
caffe_pickup_caffe_sources(${PROJECT_SOURCE_DIR})
include_directories(${Caffe_INCLUDE_DIR})

add_library(caffe_objs OBJECT ${srcs})
add_dependencies(caffe_objs proto)

add_library(pycaffe SHARED ${python_srcs} $<TARGET_OBJECTS:caffe_objs>)
target_link_libraries(pycaffe LINK_LIBS -lBOOST_PYTHON)
set_target_properties(pycaffe PROPERTIES PREFIX "" OUTPUT_NAME "_caffe")

add_executable(caffe_tool ${PROJECT_SOURCE_DIR}/tools/caffe.cpp $<TARGET_OBJECTS:caffe_objs>)
target_link_libraries(caffe_tool LINK_LIBS)
set_target_properties(caffe_tool PROPERTIES OUTPUT_NAME "caffe")

add_custom_command(TARGET pycaffe POST_BUILD
                   COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_SOURCE_DIR}/python/caffe/proto
                   COMMAND touch ${PROJECT_SOURCE_DIR}/python/caffe/proto/__init__.py
                   COMMAND cp ${proto_gen_folder}/*.py ${PROJECT_SOURCE_DIR}/python/caffe/proto/)

install(DIRECTORY caffe DESTINATION python FILES_MATCHING PATTERN "*.py" PATTERN "test" EXCLUDE)
install(TARGETS pycaffe DESTINATION python/caffe)
install(TARGETS caffe_tool DESTINATION bin)
"""


def log(msg):
    print(f"[build_caffe] {msg}", flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def ensure_debian_packages():
    missing = [p for p in BUILD_PACKAGES
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    line = "apt-get update && apt-get install -y --no-install-recommends " + " ".join(missing)
    if os.geteuid() != 0:
        sys.exit(f"[build_caffe] missing Debian packages: {' '.join(missing)}\n"
                 f"Install them as root, then run this again:\n  sudo {line}")
    log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["bash", "-c", line + " >/dev/null"], env=env)


def tool_version(cmd, pattern):
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    m = re.search(pattern, out)
    return m.group(1) if m else "unknown"


def cache_key(python, cuda=None):
    """Everything the built tree depends on, hashed: a change in any rebuilds. `cuda`: None for the
    CPU build, else (toolkit root, arch)."""
    os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    info = subprocess.run(
        [python, "-c", "import sys, sysconfig, numpy; print(sys.implementation.cache_tag,"
         " sysconfig.get_config_var('SOABI'), numpy.__version__.split('.')[0])"],
        capture_output=True, text=True, check=True).stdout.strip()
    parts = [
        re.search(r'VERSION_ID="?([^"\n]*)', os_release).group(1) if "VERSION_ID" in os_release
        else "unknown-os",
        platform.machine(), info,
        tool_version(["dpkg-query", "-W", "libboost-python-dev"], r"\t(\S+)"),
        tool_version(["protoc", "--version"], r"(\d[\d.]*)"),
        SDIST_SHA256, PATCH_VERSION,
    ]
    if cuda:
        parts += ["cuda", caffe_cuda.nvcc_version(cuda[0]), f"sm_{cuda[1]}", caffe_cuda.CUDA_PATCH_VERSION]
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return digest, parts


def fetch_sdist(cache):
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    path = downloads / SDIST_FILE
    if not path.exists():
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             SDIST, "-d", downloads])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        path.unlink()
        sys.exit(f"[build_caffe] {SDIST_FILE}: sha256 {digest} != expected {SDIST_SHA256}; "
                 "deleted it, run again to download it anew")
    return path


POOL_BACKWARD = "            bottom_diff[bottom_index] += top_diff[index];\n"

# Adam's CPU update, as the sdist has it: weight decay (one axpy), seven passes of Adam's rule
# (axpby, mul, axpby, powx, add_scalar, div, scale, where powx is a scalar std::pow loop from
# mkl_alternate.hpp: 11 % of a regressor step went to powf alone) and the weight update (one more
# axpy), each a pass over every parameter. dentcae's build runs them as one pass per blob, split over
# the cores with OpenMP and vectorised (-fno-math-errno lets sqrt vectorise; errno is never read):
# the same arithmetic per element, in the same order, as BVLC's Regularize ->
# ComputeUpdateValue -> Net::Update (and as Caffe's own adam_update_gpu kernel); pow(v, 0.5) becomes
# sqrt(v), both correctly rounded. The diff still holds the applied update afterwards. Other modes
# (GPU, L1 decay) keep BVLC's path. tests/nets/test_caffe_patches.py checks the result against BVLC's rules.
ADAM_CPU_FIRST = "    // update m <- \\beta_1 m_{t-1} + (1-\\beta_1)g_t\n"
ADAM_CPU_LAST = ("    caffe_cpu_scale(N, local_rate*correction,\n        val_t->cpu_data(),\n"
                 "        net_params[param_id]->mutable_cpu_diff());\n")
ADAM_LOOP = """\
#pragma omp parallel for schedule(static) if (N > 65536)
    for (int i = 0; i < N; ++i) {
      const Dtype gi = DECAYED;
      const Dtype mi = (Dtype(1) - beta1) * gi + beta1 * m[i];
      const Dtype vi = (Dtype(1) - beta2) * (gi * gi) + beta2 * v[i];
      m[i] = mi;
      v[i] = vi;
      UPDATE
    }
"""
ADAM_CPU_FUSED = """\
    // dentcae: one fused pass (see build_caffe.py)
    Dtype* g = net_params[param_id]->mutable_cpu_diff();
    Dtype* m = val_m->mutable_cpu_data();
    Dtype* v = val_v->mutable_cpu_data();
    const Dtype scale = local_rate * correction;
    (void) val_t;
""" + ADAM_LOOP.replace("DECAYED", "g[i]").replace("UPDATE", "g[i] = scale * (mi / (std::sqrt(vi) + eps_hat));")
ADAM_APPLY = "const Dtype u = scale * (mi / (std::sqrt(vi) + eps_hat));\n      g[i] = u;\n      w[i] -= u;"
ADAM_APPLY_UPDATE = """
// dentcae: weight decay, Adam's rule and the weight update in one pass per blob (see build_caffe.py)
template <typename Dtype>
void AdamSolver<Dtype>::ApplyUpdate() {
  if (Caffe::mode() != Caffe::CPU || this->param_.regularization_type() != "L2") {
    SGDSolver<Dtype>::ApplyUpdate();
    return;
  }
  CHECK(Caffe::root_solver());
  const Dtype rate = this->GetLearningRate();
  if (this->param_.display() && this->iter_ % this->param_.display() == 0) {
    LOG(INFO) << "Iteration " << this->iter_ << ", lr = " << rate;
  }
  this->ClipGradients();
  const vector<Blob<Dtype>*>& net_params = this->net_->learnable_params();
  const vector<float>& net_params_lr = this->net_->params_lr();
  const vector<float>& net_params_weight_decay = this->net_->params_weight_decay();
  const Dtype beta1 = this->param_.momentum();
  const Dtype beta2 = this->param_.momentum2();
  const Dtype eps_hat = this->param_.delta();
  const int t = this->iter_ + 1;
  const Dtype correction = std::sqrt(Dtype(1) - pow(beta2, t)) /
      (Dtype(1.) - pow(beta1, t));
  const size_t update_history_offset = net_params.size();
  for (int param_id = 0; param_id < net_params.size(); ++param_id) {
    this->Normalize(param_id);
    const Dtype local_decay = this->param_.weight_decay() * net_params_weight_decay[param_id];
    const Dtype scale = rate * net_params_lr[param_id] * correction;
    const int N = net_params[param_id]->count();
    Dtype* w = net_params[param_id]->mutable_cpu_data();
    Dtype* g = net_params[param_id]->mutable_cpu_diff();
    Dtype* m = this->history_[param_id]->mutable_cpu_data();
    Dtype* v = this->history_[param_id + update_history_offset]->mutable_cpu_data();
    if (local_decay) {
""" + ADAM_LOOP.replace("DECAYED", "local_decay * w[i] + g[i]").replace("UPDATE", ADAM_APPLY) + """\
    } else {
""" + ADAM_LOOP.replace("DECAYED", "g[i]").replace("UPDATE", ADAM_APPLY) + """\
    }
  }
}

INSTANTIATE_CLASS(AdamSolver);"""
ADAM_DECLARATION = "  virtual void ComputeUpdateValue(int param_id, Dtype rate);\n\n  DISABLE_COPY_AND_ASSIGN(AdamSolver);"


def patch_source(src, boost_python):
    """The source changes this build needs:
    1. max-pooling backward skips windows with no maximum (NaN inputs; see below);
    2. net.cpp drops an include of gtest's test_caffe_main.hpp (gtest is not shipped, nothing uses it);
    3. python/CMakeLists.txt is replaced (PYTHON_CMAKELISTS): caffe's sources compile once and link
       into both the python module and the `caffe` tool, against Debian's per-interpreter boost_python;
    4. python/caffe/io.py imports skimage's resize and says as_gray= (modern scikit-image);
    5. Adam's CPU update runs as one fused OpenMP pass (fuse_adam; see ADAM_APPLY_UPDATE above);
    6. Crop's CPU copy copies each row once (CROP_ROW_ONCE; see above)."""
    # Max pooling over a window of NaNs finds no maximum and leaves its index at -1; the CPU
    # backward pass then writes bottom_diff[-1], corrupting the heap. Skip such windows.
    pool = src / "src/caffe/layers/pooling_layer.cpp"
    text = pool.read_text()
    if text.count(POOL_BACKWARD) != 1:
        raise RuntimeError(f"{pool}: the max-pooling backward line to patch was not found")
    pool.write_text(text.replace(POOL_BACKWARD, "            if (bottom_index >= 0) "
                                 "bottom_diff[bottom_index] += top_diff[index];\n"))
    net_cpp = src / "src/caffe/net.cpp"
    text = net_cpp.read_text()
    net_cpp.write_text(text.replace('#include "caffe/test/test_caffe_main.hpp"\n', ""))
    cmake = PYTHON_CMAKELISTS.replace("LINK_LIBS", LINK_LIBS)
    (src / "python/CMakeLists.txt").write_text(cmake.replace("BOOST_PYTHON", boost_python))
    io_py = src / "python/caffe/io.py"
    text = io_py.read_text().replace("as_grey=", "as_gray=")
    if "from skimage.transform import resize" not in text:
        text = text.replace("import numpy as np", "import numpy as np\nfrom skimage.transform import resize", 1)
    io_py.write_text(text)
    fuse_adam(src)
    crop = src / "src/caffe/layers/crop_layer.cpp"
    text = crop.read_text()
    if text.count(CROP_ROW_LOOP) != 1:
        raise RuntimeError(f"{crop}: the row loop of crop_copy to patch was not found")
    crop.write_text(text.replace(CROP_ROW_LOOP, CROP_ROW_ONCE))


def fuse_adam(src):
    """Change 5: Adam's CPU update as one OpenMP pass (ADAM_APPLY_UPDATE; see above)."""
    adam, header = src / "src/caffe/solvers/adam_solver.cpp", src / "include/caffe/sgd_solvers.hpp"
    text, head = adam.read_text(), header.read_text()
    first, last = text.find(ADAM_CPU_FIRST), text.find(ADAM_CPU_LAST)
    if first < 0 or last < first or text.count("INSTANTIATE_CLASS(AdamSolver);") != 1 \
            or head.count(ADAM_DECLARATION) != 1:
        raise RuntimeError(f"{adam}: the CPU Adam update to fuse was not found")
    text = text[:first] + ADAM_CPU_FUSED + text[last + len(ADAM_CPU_LAST):]
    adam.write_text(text.replace("INSTANTIATE_CLASS(AdamSolver);", ADAM_APPLY_UPDATE))
    header.write_text(head.replace(ADAM_DECLARATION, ADAM_DECLARATION.replace(
        "\n\n", "\n  virtual void ApplyUpdate();\n\n")))
    cmake = src / "python/CMakeLists.txt"
    cmake.write_text(cmake.read_text().replace("add_library(caffe_objs OBJECT ${srcs})\n", ADAM_OPENMP))


def build(python, cache, entry, jobs, cuda=None):
    """Configure, compile and install into `entry` (atomically); `cuda` as in cache_key."""
    sdist = fetch_sdist(cache)
    py_info = subprocess.run(
        [python, "-c", "import sysconfig, numpy; print(sysconfig.get_paths()['include']);"
         " print(numpy.get_include()); import sys; print(f'{sys.version_info[0]}{sys.version_info[1]}')"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    py_include, np_include, py_tag = py_info[0], py_info[1], py_info[2]
    with tempfile.TemporaryDirectory(prefix="dentcae-caffe-build-") as tmp:
        tmp = Path(tmp)
        run(["tar", "xzf", sdist, "-C", tmp])
        src = tmp / SDIST_FILE.replace(".tar.gz", "")
        patch_source(src, f"boost_python{py_tag}")
        link = f"-L/usr/lib/{platform.machine()}-linux-gnu/hdf5/serial"
        mode = ["-DCPU_ONLY=ON"]
        if cuda:
            caffe_cuda.patch_cuda_source(src)
            mode, rpath = caffe_cuda.cmake_args(*cuda)
            link += " " + rpath
        bld = tmp / "build"
        run(["cmake", "-S", src, "-B", bld, "-DCMAKE_BUILD_TYPE=Release", *mode,
             "-DANACONDA_HOME=/nonexistent", "-DCMAKE_SKIP_RPATH=ON",
             f"-DPYTHON_INCLUDE_DIRS={py_include}", f"-DNUMPY_INCLUDE_DIR={np_include}",
             "-DCMAKE_CXX_FLAGS=-I/usr/include/hdf5/serial -Wno-deprecated-declarations",
             f"-DCMAKE_SHARED_LINKER_FLAGS={link}", f"-DCMAKE_EXE_LINKER_FLAGS={link}"],
            stdout=subprocess.DEVNULL)
        run(["cmake", "--build", bld, "--target", "pycaffe", "caffe_tool", "-j", str(jobs)])
        staging = Path(tempfile.mkdtemp(prefix=entry.name + ".partial-", dir=cache))
        try:
            run(["cmake", "--install", bld, "--prefix", staging], stdout=subprocess.DEVNULL)
            shutil.rmtree(staging / "include", ignore_errors=True)  # headers: not needed at run time
            check = subprocess.run(
                [python, "-c", "import caffe; print(caffe.__file__)"],
                env=dict(os.environ, PYTHONPATH=str(staging / "python"), GLOG_minloglevel="2"),
                capture_output=True, text=True)
            if check.returncode != 0:
                raise RuntimeError("the built caffe does not import:\n" + check.stderr)
            record = {"mode": "gpu" if cuda else "cpu", "sdist": SDIST, "patch_version": PATCH_VERSION}
            if cuda:
                record.update(cuda=caffe_cuda.nvcc_version(cuda[0]), arch=cuda[1], toolkit=str(cuda[0]))
            (staging / "build.json").write_text(json.dumps(record, indent=1) + "\n")
            staging.rename(entry)  # atomic: the entry exists only once complete
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def link_into_venv(venv, entry):
    venv = Path(venv).resolve()
    python = venv / "bin/python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "dentcae_caffe.pth").write_text(str(entry / "python") + "\n")
    tool = venv / "bin/caffe"
    if tool.is_symlink() or tool.exists():
        tool.unlink()
    tool.symlink_to(entry / "bin/caffe")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default=".venv", help="virtualenv to link caffe into (default .venv)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs")
    ap.add_argument("--print-entry", action="store_true", help="print the cache entry path and exit")
    ap.add_argument("--gpu", action="store_true", default=os.environ.get("CAFFE_GPU") == "1",
                    help="the CUDA build (CUDA 13 from PyPI; arch from nvidia-smi or CAFFE_CUDA_ARCH, else 90); "
                         "also CAFFE_GPU=1")
    args = ap.parse_args()
    python = Path(args.venv).resolve() / "bin/python"
    if not python.exists():
        sys.exit(f"[build_caffe] no virtualenv at {args.venv}: create it first (make venv)")
    cache = Path(os.environ.get("DENTCAE_CACHE", Path.home() / ".cache/dentcae")).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    ensure_debian_packages()  # also the runtime libraries a cached build links against
    cuda = (caffe_cuda.install_toolkit(cache), caffe_cuda.gpu_arch()) if args.gpu else None
    key, parts = cache_key(python, cuda)
    entry = cache / f"caffe-{'cuda-' if cuda else ''}{key}"
    if args.print_entry:
        print(entry)
        return
    if (entry / "python/caffe/_caffe.so").exists():
        log(f"cached: {entry}")
    else:
        log(f"building {'CUDA' if cuda else 'CPU'} Caffe into {entry} (key from: {', '.join(parts)})")
        t0 = time.time()
        build(python, cache, entry, args.jobs, cuda)
        log(f"built in {(time.time() - t0) / 60:.1f} min: {entry}")
    link_into_venv(args.venv, entry)
    log(f"linked into {args.venv}: import caffe, {args.venv}/bin/caffe")


if __name__ == "__main__":
    main()
