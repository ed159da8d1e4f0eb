#!/usr/bin/env python3
"""Build a CPU-only pycaffe (and the `caffe` CLI) from the brocolli-caffe sdist, cached.

    python scripts/build_caffe.py --venv .venv

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
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

SDIST = "brocolli-caffe==9.0.2"
SDIST_FILE = "brocolli-caffe-9.0.2.tar.gz"
SDIST_SHA256 = "c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a"
PATCH_VERSION = "4"  # bump when patch_source() changes: it is part of the cache key
BUILD_PACKAGES = [
    "build-essential", "cmake", "protobuf-compiler", "libprotobuf-dev", "libgoogle-glog-dev",
    "libgflags-dev", "libhdf5-dev", "libopenblas-dev", "libboost-python-dev",
    "libboost-system-dev", "libboost-thread-dev", "libboost-filesystem-dev",
    "libboost-regex-dev",
]
LINK_LIBS = ("proto -lglog -lgflags -lprotobuf -lboost_thread -lboost_system -lboost_filesystem "
             "-lboost_regex -lhdf5_hl -lhdf5 -lopenblas")

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


def cache_key(python):
    """Everything the built tree depends on, hashed: a change in any rebuilds."""
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


def patch_source(src, boost_python):
    """The source changes this build needs:
    1. max-pooling backward skips windows with no maximum (NaN inputs; see below);
    2. net.cpp drops an include of gtest's test_caffe_main.hpp (gtest is not shipped, nothing uses it);
    3. python/CMakeLists.txt is replaced (PYTHON_CMAKELISTS): caffe's sources compile once and link
       into both the python module and the `caffe` tool, against Debian's per-interpreter boost_python;
    4. python/caffe/io.py imports skimage's resize and says as_gray= (modern scikit-image)."""
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


def build(python, cache, entry, jobs):
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
        hdf5_lib = "-L/usr/lib/x86_64-linux-gnu/hdf5/serial" if platform.machine() == "x86_64" else \
            f"-L/usr/lib/{platform.machine()}-linux-gnu/hdf5/serial"
        bld = tmp / "build"
        run(["cmake", "-S", src, "-B", bld, "-DCMAKE_BUILD_TYPE=Release", "-DCPU_ONLY=ON",
             "-DANACONDA_HOME=/nonexistent", "-DCMAKE_SKIP_RPATH=ON",
             f"-DPYTHON_INCLUDE_DIRS={py_include}", f"-DNUMPY_INCLUDE_DIR={np_include}",
             "-DCMAKE_CXX_FLAGS=-I/usr/include/hdf5/serial -Wno-deprecated-declarations",
             f"-DCMAKE_SHARED_LINKER_FLAGS={hdf5_lib}", f"-DCMAKE_EXE_LINKER_FLAGS={hdf5_lib}"],
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
    args = ap.parse_args()
    python = Path(args.venv).resolve() / "bin/python"
    if not python.exists():
        sys.exit(f"[build_caffe] no virtualenv at {args.venv}: create it first (make venv)")
    cache = Path(os.environ.get("DENTCAE_CACHE", Path.home() / ".cache/dentcae")).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    ensure_debian_packages()  # also the runtime libraries a cached build links against
    key, parts = cache_key(python)
    entry = cache / f"caffe-{key}"
    if args.print_entry:
        print(entry)
        return
    if (entry / "python/caffe/_caffe.so").exists():
        log(f"cached: {entry}")
    else:
        log(f"building Caffe into {entry} (key from: {', '.join(parts)})")
        build(python, cache, entry, args.jobs)
        log(f"built: {entry}")
    link_into_venv(args.venv, entry)
    log(f"linked into {args.venv}: import caffe, {args.venv}/bin/caffe")


if __name__ == "__main__":
    main()
