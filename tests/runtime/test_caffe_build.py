"""A real pycaffe from the cached build; NetSpec nets train; the caffe CLI; doctor."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


def _small_net(caffe, source, deploy=False):
    L = caffe.layers
    n = caffe.NetSpec()
    if deploy:
        n.data = L.Input(shape=dict(dim=[4, 1, 8, 8]))
    else:
        n.data, n.label = L.HDF5Data(hdf5_data_param=dict(source=str(source), batch_size=4), ntop=2)
    fill = dict(type="gaussian", std=0.1)
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, stride=1, weight_filler=fill)
    n.relu = L.ReLU(n.conv, in_place=True)
    n.deconv = L.Deconvolution(n.conv, convolution_param=dict(num_output=2, kernel_size=3, weight_filler=fill))
    n.fc = L.InnerProduct(n.deconv, num_output=3, weight_filler=fill)
    if not deploy:
        n.loss = L.EuclideanLoss(n.fc, n.label)
    return n.to_proto()


def _toy_problem(tmp):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = np.stack([x.mean((1, 2, 3)), x[:, 0, :4].mean((1, 2)), x[:, 0, 4:].mean((1, 2))], 1)
    with h5py.File(tmp / "toy.h5", "w") as f:
        f["data"], f["label"] = x, y.astype(np.float32)
    (tmp / "toy.txt").write_text(str(tmp / "toy.h5") + "\n")
    return x


def _write_solver(tmp, caffe, max_iter=150):
    (tmp / "train.prototxt").write_text(str(_small_net(caffe, tmp / "toy.txt")))
    (tmp / "solver.prototxt").write_text(
        f'net: "{tmp / "train.prototxt"}"\nbase_lr: 0.05\nmomentum: 0.9\nlr_policy: "fixed"\n'
        f'max_iter: {max_iter}\ndisplay: 50\nsnapshot_prefix: "{tmp / "toy"}"\nsolver_mode: CPU\n'
        "random_seed: 1\n")
    return tmp / "solver.prototxt"


def test_netspec_net_trains_and_reloads_into_deploy(caffe, tmp_path):
    x = _toy_problem(tmp_path)
    solver = caffe.get_solver(str(_write_solver(tmp_path, caffe)))
    solver.net.forward()
    first = float(solver.net.blobs["loss"].data)
    solver.step(150)
    last = float(solver.net.blobs["loss"].data)
    assert np.isfinite(last) and last < 0.5 * first, (first, last)
    solver.net.save(str(tmp_path / "toy.caffemodel"))
    (tmp_path / "deploy.prototxt").write_text(str(_small_net(caffe, None, deploy=True)))
    deploy = caffe.Net(str(tmp_path / "deploy.prototxt"), str(tmp_path / "toy.caffemodel"), caffe.TEST)
    deploy.blobs["data"].data[...] = x[:4]
    got = deploy.forward()["fc"].copy()
    solver.net.blobs["data"].data[...] = x[:4]  # same weights, same input through the train net
    solver.net.forward(start="conv")
    np.testing.assert_allclose(got, solver.net.blobs["fc"].data, rtol=1e-5, atol=1e-6)


def test_same_solver_trains_with_caffe_command_line_tool(caffe, tmp_path):
    _toy_problem(tmp_path)
    solver = _write_solver(tmp_path, caffe, max_iter=100)
    tool = Path(sys.executable).parent / "caffe"
    p = subprocess.run([str(tool), "train", f"-solver={solver}"], capture_output=True, text=True,
                       env={**os.environ, "GLOG_minloglevel": "0", "GLOG_logtostderr": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    losses = [float(v) for v in re.findall(r"Iteration \d+, loss = ([\d.e+-]+)", p.stderr)]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
    assert (tmp_path / "toy_iter_100.caffemodel").exists()


def test_doctor_passes_and_names_the_build_it_found():
    """On either build: the CPU-only one says so; a CUDA build names its CUDA and the devices."""
    from dentcae.runtime.backend import gpu_available
    code, out = run_cli("doctor")
    assert code == 0, out
    assert "doctor: ok" in out
    if gpu_available():
        assert "GPU build (CUDA" in out and "devices" in out
    else:
        assert "CPU-only" in out


def test_doctor_fails_readably_without_the_caffe_cache():
    # drop exactly the path the venv's .pth adds (the cache entry, wherever DENTCAE_CACHE puts it)
    code = ("import sys, sysconfig, pathlib; "
            "entry = (pathlib.Path(sysconfig.get_paths()['purelib']) / 'dentcae_caffe.pth').read_text().strip(); "
            "sys.path = [p for p in sys.path if p != entry]; "
            "from dentcae.cli import main; sys.exit(main(['doctor']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode != 0
    assert "cannot import caffe" in p.stderr and "make setup" in p.stderr, p.stderr


def test_second_build_finds_the_cache():
    p = subprocess.run([sys.executable, "scripts/build_caffe.py", "--venv", str(Path(sys.executable).parents[1])],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "[build_caffe] cached:" in p.stdout and "building" not in p.stdout


def test_failed_build_leaves_no_cache_entry(tmp_path):
    """A build that fails while installing into its staging folder: the staging folder is removed,
    and the cache gets no caffe-* entry and no partial folder."""
    cache = Path(os.environ.get("DENTCAE_CACHE", Path.home() / ".cache/dentcae"))
    (tmp_path / "cache/downloads").mkdir(parents=True)
    shutil.copy(cache / "downloads/brocolli-caffe-9.0.2.tar.gz", tmp_path / "cache/downloads/")
    bad_bin = tmp_path / "bin"
    bad_bin.mkdir()
    # configure and build "succeed"; install writes part of the tree into the staging prefix, then fails
    (bad_bin / "cmake").write_text(
        "#!/bin/sh\ncase \"$*\" in *--install*)\n"
        "  prefix=$(echo \"$*\" | sed 's/.*--prefix //')\n"
        "  mkdir -p \"$prefix/python/caffe\" && touch \"$prefix/python/caffe/half.py\"\n"
        f"  echo \"$prefix\" > {tmp_path}/staging-was\n"
        "  echo 'cmake: simulated install failure' >&2; exit 1;;\nesac\nexit 0\n")
    (bad_bin / "cmake").chmod(0o755)
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "bin").mkdir()
    (venv / "bin/python").symlink_to(sys.executable)
    env = {**os.environ, "DENTCAE_CACHE": str(tmp_path / "cache"), "PATH": f"{bad_bin}:{os.environ['PATH']}"}
    p = subprocess.run([sys.executable, "scripts/build_caffe.py", "--venv", str(venv)], cwd=ROOT,
                       capture_output=True, text=True, env=env)
    assert p.returncode != 0 and "simulated install failure" in p.stderr
    staging = Path((tmp_path / "staging-was").read_text().strip())
    assert staging.parent == tmp_path / "cache" and ".partial-" in staging.name
    assert not staging.exists()                      # the clean-up really ran
    assert sorted(x.name for x in (tmp_path / "cache").iterdir()) == ["downloads"]
