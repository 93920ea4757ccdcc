# The README's commands. Each installs what it needs into a local virtual environment (.venv) first.
VENV ?= .venv
PYTHON ?= python3
# torch/torchvision pair installed before the package; override on machines that need another build.
TORCH ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FASHION_MNIST_DEB := /usr/share/datasets/fashion-mnist

.PHONY: install demo theory test lint bench data

# pip runs quietly; each step says first what it installs and how long it takes.
$(STAMP): pyproject.toml
	@echo "make install (1/3): creating the virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "make install (2/3): installing $(TORCH) into $(VENV): the long step, a few minutes without output"
	$(PY) -m pip install --quiet $(TORCH)
	@echo "make install (3/3): installing varshift (editable) with its dev and slurm extras: about a minute"
	$(PY) -m pip install --quiet -e ".[dev,slurm]"
	touch $@

install: $(STAMP)
	@echo "varshift is installed in $(VENV): $(VENV)/bin/varshift-train --help to start"

# Fashion-MNIST for the demo: Debian's package where apt is usable, otherwise torchvision downloads it.
data:
	@if [ ! -d $(FASHION_MNIST_DEB) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) \
		>/dev/null || echo "dataset-fashion-mnist not installed; torchvision will try to download Fashion-MNIST"; fi

theory: $(STAMP)
	$(VENV)/bin/varshift-theory --out results/theory

# The demo: theory figures, then the small CNN on Fashion-MNIST with and without dropout, two runs at a time with
# one thread each (results/demo/demo). `make demo DEMO_ARGS=--update-readme` also puts its table into README.md.
DEMO_ARGS ?=
demo: theory data
	$(PY) experiments/demo.py --scale demo --launcher local $(DEMO_ARGS) trainer.threads=1

# The suite in two worker processes (pytest-xdist): most tests run one thread, so one process leaves a core idle.
TEST_PROCESSES ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_PROCESSES)

lint: $(STAMP)
	$(VENV)/bin/ruff check varshift conf analysis tests benchmarks experiments

# Loader throughput (in-memory datasets, then ImageNet's JPEGs), then training throughput of the paper's four networks: full size where CUDA is available,
# scaled down (--tiny, seconds) on a CPU. `make bench BENCH_ARGS=...` passes other options to throughput.py.
BENCH_ARGS ?= $(shell $(PY) -c "import torch; print('' if torch.cuda.is_available() else '--tiny')")
bench: $(STAMP)
	$(PY) benchmarks/loader_throughput.py --json results/bench/loader.json
	$(PY) benchmarks/imagenet_loader.py --workers $(shell nproc) --json results/bench/imagenet_loader.json
	$(PY) benchmarks/throughput.py $(BENCH_ARGS) --json results/bench/throughput.json
