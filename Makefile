# The two commands of the README. Each creates .venv and installs the project when needed.
#   make repro   run the DVC pipeline (default: the shapes world, CPU)
#   make test    run the test suite offline
VENV ?= .venv
export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: repro test install
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)

repro: $(VENV)/.installed
	dvc repro

test: $(VENV)/.installed
	python -m pytest $(PYTEST_ARGS)
