# Two commands on a fresh machine with Python 3.11 and pip:
#   make demo   - trains SCNF-GLOW on moons (the embedded default) into runs/demo
#   make test   - runs the default test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/scnf demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs
