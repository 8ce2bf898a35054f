# Two commands for a fresh machine: `make demo` (train + evaluate Salience DETR on the synthetic dataset, then draw
# its detections) and `make test`.
# The first target run creates .venv/ and installs requirements.txt into it.
PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
DEMO_CONFIG ?= projects/salience_detr/configs/salience_detr_r18_synthetic.py
DEMO_OUTPUT ?= output/demo

.PHONY: install demo test test-all lint format clean-venv

install: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) train.output_dir=$(DEMO_OUTPUT)
	$(PY) scripts/visualize_detections.py --config-file $(DEMO_OUTPUT)/config.yaml --output $(DEMO_OUTPUT)/detections.png

# Fast suite (CI): everything but tests marked slow; includes a short end-to-end train + eval run.
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-venv:
	rm -rf $(VENV)
