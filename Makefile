# AQAA Lab. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
AQAA   := $(VENV)/bin/aqaa
STAMP  := $(VENV)/.installed-stamp
EXPERIMENT ?= quickstart

.PHONY: setup demo test test-slow bench clean-venv

setup: $(STAMP)

# torch==2.14.1 is pinned in pyproject.toml: pip resolves it from the local wheel;
# an unpinned torch would pull a multi-GB download.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "AQAA Lab needs Python 3.11, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[eval,notebook,dev]'
	touch $(STAMP)

demo: setup
	$(AQAA) data build -e $(EXPERIMENT)
	$(AQAA) pipeline -e $(EXPERIMENT)
	@echo
	@echo "== aqaa chat: a held-out spoken question, answered in speech =="
	$(AQAA) chat -e $(EXPERIMENT) --input "$$($(PY) -c 'import json; from pathlib import Path; c = Path(json.load(open("checkpoints/latest.json"))["corpus"]); print(c / json.loads((c / "test.jsonl").read_text().splitlines()[0])["query_audio"])')" --output checkpoints/demo_answer.wav
	@echo
	@echo "Spoken answer: checkpoints/demo_answer.wav   Artifacts: checkpoints/latest.json"
	@echo "TensorBoard:   $(VENV)/bin/tensorboard --logdir runs   (then open http://localhost:6006)"

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) benchmarks/corpus.py

clean-venv:
	rm -rf $(VENV)
