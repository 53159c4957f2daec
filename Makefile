# Two commands for a fresh Debian 12 machine (Python 3.11): `make demo` and `make test`.
# Each installs what is missing first (scripts/setup.sh), then does its job.
VENV := .venv
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
unexport PYOPENGL_PLATFORM

.PHONY: setup demo test bench clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt setup.py scripts/setup.sh
	bash scripts/setup.sh

demo: $(STAMP)
	$(VENV)/bin/spec-vla-demo $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/spec-vla-bench $(ARGS)

clean-venv:
	rm -rf $(VENV)
