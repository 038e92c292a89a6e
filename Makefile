# The two set-up commands: `make demo` (trains on the embedded demo data) and `make test`.
# Each creates .venv if missing and installs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo pose-demo face-demo cls-demo test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.core: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(PY) train.py --config configs/seg_demo.py --workdir runs/seg_demo

pose-demo: $(VENV)/.core
	$(PY) train.py --config configs/pose_demo.py --workdir runs/pose_demo

cls-demo: $(VENV)/.core
	$(PY) train.py --config configs/cls_demo.py --workdir runs/cls_demo

face-demo: $(VENV)/.core
	$(PY) train.py --config configs/face_demo.py --workdir runs/face_demo

test: $(VENV)/.dev
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV)
