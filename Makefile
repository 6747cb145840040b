# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-workers lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo,dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m sayiir_nb.examples.email_campaign

test: $(VENV)/.installed
	$(BIN)/ruff check sayiir_nb tests
	$(BIN)/ruff format --check sayiir_nb tests
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python -m sayiir_nb.bench

# needs a PostgreSQL server: $$SAYIIR_NB_BENCH_DSN, else 127.0.0.1:5432
bench-workers: $(VENV)/.installed
	$(BIN)/python -m sayiir_nb.bench_workers

lint: $(VENV)/.installed
	$(BIN)/ruff check --fix sayiir_nb tests
	$(BIN)/ruff format sayiir_nb tests

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
