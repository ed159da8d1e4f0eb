# dentcae: every target installs what it needs (Debian packages, .venv, the cached Caffe build).
# `make demo` runs the whole pipeline on the built-in synthetic phantom; `make test` runs the tests.

PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
DENTCAE    := $(VENV)/bin/dentcae
STAMP      := $(VENV)/.dentcae-installed
CONFIG     ?= configs/phantom_cae_finetune.yaml
PRETRAIN_CONFIG ?= configs/phantom_cae_pretrain.yaml
GPU        ?=
# The CUDA build of Caffe: CAFFE_GPU=1, and by default wherever nvidia-smi lists a GPU.
CAFFE_GPU  ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
GPU_FLAG   := $(if $(GPU),--gpu $(GPU),)
TRAIN_FLAGS ?=

.PHONY: help setup venv caffe doctor test test-fast data prepare prototxt pretrain finetune evaluate demo \
        bench table1 table2 table3 clean lock

help:
	@echo "make demo      synthetic phantom -> the detector and the paper's CAE + regressor -> evaluate both -> export the"
	@echo "               detector -> predict with it, LabelMe files to correct (CPU, <20 min)"
	@echo "make test      the whole test suite (builds Caffe on first use, cached; trains narrow nets)"
	@echo "make test-fast pure and data tests only: no Caffe build, no training (< 1 min)"
	@echo "make setup     Debian packages + .venv + cached CPU Caffe build, then 'dentcae doctor'"
	@echo "make venv      .venv with dentcae and its Python dependencies at constraints.txt's versions (no Caffe)"
	@echo "make lock      refresh constraints.txt: the newest versions pyproject.toml admits, in a fresh venv"
	@echo "make caffe     the cached CPU Caffe build, linked into .venv; CAFFE_GPU=1: the CUDA build"
	@echo "               (CUDA 13 from PyPI; the default where nvidia-smi finds a GPU)"
	@echo "make doctor    what Caffe build and Python stack dentcae sees"
	@echo "make data      write the default synthetic phantom to data/phantom (no Caffe needed)"
	@echo "make prepare   preprocess the dataset of CONFIG=$(CONFIG) into cached HDF5 splits"
	@echo "make prototxt  regenerate the committed prototxt/paper/ from the paper's configs"
	@echo "make pretrain  unsupervised pre-training with PRETRAIN_CONFIG=$(PRETRAIN_CONFIG)"
	@echo "make finetune  landmark fine-tuning with CONFIG=$(CONFIG)"
	@echo "make evaluate  dentcae evaluate the run of CONFIG=$(CONFIG): radial errors in mm, summary.json"
	@echo "make table1 / make table2   rebuild the paper's Tables I / II from configs/paper/"
	@echo "make table3    ours: regression vs heatmap head x scratch vs CAE vs augmentation pretext"
	@echo "make bench     training images/s of the CAE, regressor, heatmap and refine nets against caffe time's"
	@echo "               forward+backward bound; predict seconds per image (Caffe, ONNX Runtime)"
	@echo "               a small table serially and on a two-node local Ray cluster, Ray's cost per job"
	@echo "make clean     delete runs/, results/ and data/cache/ (datasets and .venv stay)"
	@echo "GPU=N          pass --gpu N to training (needs a CUDA build of Caffe)"
	@echo "TRAIN_FLAGS=--resume (or --overwrite)   for make pretrain / make finetune on an existing run"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON_SYS) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# constraints.txt anew: the newest versions pyproject.toml admits, in a fresh venv (then run make test
# and commit both; docs/pipeline.md)
lock:
	rm -rf .lock-venv && $(PYTHON_SYS) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip && .lock-venv/bin/pip install -q -e '.[dev]'
	{ grep '^#' constraints.txt; .lock-venv/bin/pip freeze --exclude-editable | grep -v '^WARNING'; } > .constraints.new
	mv .constraints.new constraints.txt && rm -rf .lock-venv
	@echo "constraints.txt refreshed; run make test (it reinstalls .venv with the new pins), then commit it"

venv: $(STAMP)

caffe: $(STAMP)
	$(PY) scripts/build_caffe.py --venv $(VENV) $(if $(filter 1,$(CAFFE_GPU)),--gpu,)

setup: caffe
	$(DENTCAE) doctor

doctor: caffe
	$(DENTCAE) doctor

test: caffe
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

PHANTOM    := data/phantom/dataset.yaml

$(PHANTOM): $(STAMP)
	$(DENTCAE) synth --out data/phantom --images 108 --annotated 54 --seed 0

data: $(PHANTOM)

prepare: data
	$(DENTCAE) prepare --config $(CONFIG)

prototxt: caffe
	$(PY) scripts/make_prototxts.py

pretrain: caffe data
	$(DENTCAE) pretrain --config $(PRETRAIN_CONFIG) $(GPU_FLAG) $(TRAIN_FLAGS)

finetune: caffe data
	$(DENTCAE) finetune --config $(CONFIG) $(GPU_FLAG) $(TRAIN_FLAGS)

evaluate: caffe
	$(DENTCAE) evaluate --config $(CONFIG) $(GPU_FLAG)

demo: setup
	$(PY) scripts/demo.py $(GPU_FLAG)

bench: caffe data
	$(PY) scripts/bench.py
	$(PY) scripts/bench_cluster.py

table1: caffe data
	$(DENTCAE) table configs/paper/table1.yaml $(GPU_FLAG)

table2: caffe data
	$(DENTCAE) table configs/paper/table2.yaml $(GPU_FLAG)

# On the phantom the heatmap arms run without their refine net: its halves are 256 x 320 px, which the
# first net already sees at 256 px, so a finer scale would be interpolated. Real data gets it (ISBI:
# configs/isbi/table3.yaml). TABLE3_FLAGS= runs the arms exactly as configured.
TABLE3_FLAGS ?= --set model.refine.patch=0
table3: caffe data
	$(DENTCAE) table configs/ours/table3.yaml $(TABLE3_FLAGS) $(GPU_FLAG)

clean:
	rm -rf runs results data/cache
