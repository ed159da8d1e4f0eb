"""The CUDA path of the Caffe build.

Everywhere: `dentcae doctor` names the build (CPU-only, or GPU with its CUDA version and devices),
and `--gpu N` without a device N (a CPU-only build, or a GPU build on a machine without that device)
fails before any work with a message that says why. With a GPU build and a device (a machine lent
one; scripts/gpu_check.sh) the GPU tests below run instead of skipping: a tiny training on GPU 0
follows the CPU's losses, and `caffe time -gpu 0` times a net.
"""
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, tiny, tiny_config
from dentcae.runtime.backend import CaffeUnavailable, cuda_devices, get_caffe, gpu_available, set_device
from dentcae.train.losslog import LossLog
from dentcae.train.runfiles import run_dir
from dentcae.train.loop import train

pytestmark = pytest.mark.slow
IN_SKIP_CONDITIONS = (cuda_devices, gpu_available)      # the string conditions below name them
ON_GPU = pytest.mark.skipif("not (gpu_available() and cuda_devices())",
                            reason="needs a CUDA build of Caffe (make caffe CAFFE_GPU=1) and a CUDA device")


def test_doctor_names_the_build_and_its_devices():
    code, out = run_cli("doctor")
    assert code == 0, out
    if gpu_available():
        assert "GPU build (CUDA " in out and "devices    " in out
    else:
        assert "build      CPU-only" in out


@pytest.mark.skipif("gpu_available() and cuda_devices()", reason="this machine has a CUDA device")
def test_gpu_flag_without_a_device_fails_before_any_work(phantom, tmp_path):
    why = "does not exist" if gpu_available() else "CPU-only"
    with pytest.raises(CaffeUnavailable, match=why):
        set_device(0)
    code, out = run_cli("finetune", "--config", str(tiny_config(tmp_path, phantom)), "--gpu", "0")
    assert code == 2 and why in out and "Traceback" not in out
    assert not (tmp_path / "runs").exists()     # it failed before any work


@ON_GPU
def test_a_tiny_training_on_the_gpu_follows_the_cpu(phantom, clean_tmp, quiet):
    losses = {}
    for device in (None, 0):
        cfg = tiny(clean_tmp, phantom, name=f"on_{device}", model={"dropout": 0.0},
                   solver={"max_iter": 6, "test_interval": 3, "snapshot": 6})
        summary = train(cfg, gpu=device, log=quiet)
        assert summary["device"] == ("cpu" if device is None else "gpu:0")
        losses[device] = LossLog(run_dir(cfg) / "loss.csv").read()["train"][1]
    np.testing.assert_allclose(losses[0], losses[None], rtol=2e-2)   # cuBLAS vs OpenBLAS rounding


@ON_GPU
def test_caffe_time_runs_on_the_gpu(tmp_path):
    from dentcae.heads.regression import regressor
    from dentcae.nets.alexnet import write_net
    net = regressor(8, size=224, deploy=True)
    net.layer[0].input_param.shape[0].dim[0] = 16
    write_net(net, tmp_path / "net.prototxt")
    tool = Path(get_caffe().__file__).resolve().parents[2] / "bin/caffe"
    p = subprocess.run([str(tool), "time", f"-model={tmp_path / 'net.prototxt'}", "-iterations=5", "-gpu=0"],
                       capture_output=True, text=True, env={"GLOG_logtostderr": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and "Average Forward pass" in p.stderr, p.stderr[-2000:]
