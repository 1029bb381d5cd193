# The two commands a newcomer needs (see README.md):
#   make demo   - set up .venv and run the demo pipeline (synthetic data, local dask, CPU)
#   make test   - set up .venv, lint (ruff) and run the test suite
.PHONY: setup setup-test lint demo test test-all clean-demo
VENV := .venv
setup:
	@scripts/setup.sh
demo: setup
	$(VENV)/bin/reidaug run configs/demo.yaml
setup-test:
	@scripts/setup.sh --test
lint: setup-test
	$(VENV)/bin/ruff check .
test: lint
	$(VENV)/bin/python -m pytest -q tests
test-all: lint
	$(VENV)/bin/python -m pytest -q -m "" tests
clean-demo:
	rm -rf workspace/demo
