# The two set-up commands: `make demo` (trains on the embedded demo data) and `make test` (the
# fast test tier). `make test-all` runs every test (what CI runs). Each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo pose-demo posetrack-demo posetrack-detector-demo face-demo cls-demo det-demo faster-rcnn-demo cascade-rcnn-demo \
	mask-rcnn-demo cascade-mask-rcnn-demo htc-demo centernet-demo test test-all clean

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
	$(PY) train.py --config configs/seg_cityscapes.py:demo --workdir runs/seg_demo

pose-demo: $(VENV)/.core
	$(PY) train.py --config configs/pose_coco.py:demo --workdir runs/pose_demo

posetrack-demo: $(VENV)/.core
	$(PY) train.py --config configs/pose_posetrack.py:demo --workdir runs/posetrack_demo

posetrack-detector-demo: $(VENV)/.core
	$(PY) train.py --config configs/det_coco_faster_rcnn.py:tracking_demo \
		--workdir runs/posetrack_detector_demo

cls-demo: $(VENV)/.core
	$(PY) train.py --config configs/cls_imagenet.py:demo --workdir runs/cls_demo

face-demo: $(VENV)/.core
	$(PY) train.py --config configs/face_300w.py:demo --workdir runs/face_demo

det-demo: $(VENV)/.core
	$(PY) train.py --config configs/det_coco_fcos.py:demo --workdir runs/det_demo

faster-rcnn-demo: $(VENV)/.core
	$(PY) train.py --config configs/det_coco_faster_rcnn.py:demo --workdir runs/faster_rcnn_demo

cascade-rcnn-demo: $(VENV)/.core
	$(PY) train.py --config configs/det_coco_cascade_rcnn.py:demo --workdir runs/cascade_rcnn_demo

mask-rcnn-demo: $(VENV)/.core
	$(PY) train.py --config configs/det_coco_mask_rcnn.py:demo --workdir runs/mask_rcnn_demo

cascade-mask-rcnn-demo: $(VENV)/.core
	$(PY) train.py --config configs/det_coco_cascade_mask_rcnn.py:demo \
		--workdir runs/cascade_mask_rcnn_demo

htc-demo: $(VENV)/.core
	$(PY) train.py --config configs/det_coco_htc.py:demo --workdir runs/htc_demo

centernet-demo: $(VENV)/.core
	$(PY) train.py --config configs/det_coco_centernet.py:demo --workdir runs/centernet_demo

# Two pytest workers: XLA compiles each program on one thread, so two share 2 cores well.
# TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test: $(VENV)/.dev
	$(PYTEST) -m "not slow" tests

test-all: $(VENV)/.dev
	$(PYTEST) tests

clean:
	rm -rf $(VENV)
