#!/usr/bin/env bash
# The prepared check for a session lent a GPU machine (15 device-minutes: run it once):
#   1. the CUDA build of Caffe (make caffe CAFFE_GPU=1; CAFFE_CUDA_ROOT=<toolkit> where PyPI is out
#      of reach and the machine has its own CUDA 13, e.g. /usr/local/cuda),
#   2. dentcae doctor and the GPU tests (tests/runtime/test_gpu.py: they skip without a device),
#   3. `caffe time` GPU vs CPU for the CAE, the regressor and the heatmap net,
#   4. training images/s on the GPU vs the CPU (make bench's runner, --gpu 0),
#   5. Table I on the SYNTHETIC phantom with GPU-sized schedules (--preset gpu),
# printing each step's time. Everything it prints also goes to ${OUT:-results}/gpu_check.log.
# Tables II-III at paper scale are one command each afterwards:
#   dentcae table configs/paper/table2.yaml --preset gpu --gpu 0
set -uo pipefail
cd "$(dirname "$0")/.."
LOG_DIR=${OUT:-results}
mkdir -p "$LOG_DIR"
exec > >(tee "$LOG_DIR/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
step() { echo; echo "== $(date +%T) $*"; SECONDS=0; }
done_step() { echo "-- took ${SECONDS} s"; }

step "machine"
nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap --format=csv || echo "no nvidia-smi"
nproc; python3 --version; (command -v nvcc && nvcc --version | tail -2) || echo "no nvcc on PATH"
if [ -z "${CAFFE_CUDA_ROOT:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    export CAFFE_CUDA_ROOT=/usr/local/cuda     # offline machines: use their toolkit, not PyPI's
fi
done_step

step "build: make caffe CAFFE_GPU=1 (CAFFE_CUDA_ROOT=${CAFFE_CUDA_ROOT:-PyPI wheels})"
make caffe CAFFE_GPU=1 || { echo "BUILD FAILED"; exit 1; }
done_step

step "doctor"
.venv/bin/dentcae doctor
done_step

step "GPU tests (tests/runtime/test_gpu.py, tests/nets/test_caffe_patches.py)"
.venv/bin/pytest -q tests/runtime/test_gpu.py tests/nets/test_caffe_patches.py -rs
done_step

step "caffe time, GPU vs CPU (batch 16, forward+backward)"
.venv/bin/python scripts/bench.py --caffe-time-only --gpu 0 --out "$LOG_DIR/gpu_caffe_time.json"
done_step

step "training images/s: GPU vs CPU (make bench's runner)"
.venv/bin/python scripts/bench.py --gpu 0 --iterations 20 --out "$LOG_DIR/gpu_bench.json"
done_step

step "Table I on the SYNTHETIC phantom, GPU-sized schedules (--preset gpu: iterations x20)"
.venv/bin/dentcae table configs/paper/table1.yaml --preset gpu --gpu 0 --out "$LOG_DIR"
done_step
echo "gpu_check: done"
