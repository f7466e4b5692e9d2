# Two entry points for a fresh machine:  make demo   (decompose the bundled real radiograph)
#                                        make test   (the test suite; what CI runs)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test env bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,lidc]'
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/cxrdecomp demo -o out/demo

test: $(STAMP)
	$(BIN)/cxrdecomp data fetch
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out
