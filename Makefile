# sysdesign: the commands the README gives.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint format bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install  ## every built system on the embedded defaults, with demo accounts
	$(BIN)/sysdesign up --demo 5

test: lint  ## ruff, then the whole test suite
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: install
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

bench: install  ## load comes from wrk (Debian package), installed here when missing
	@command -v wrk >/dev/null || apt-get install -y -q wrk
	$(BIN)/sysdesign bench platform

clean:
	rm -rf $(VENV) .sysdesign .pytest_cache .ruff_cache
