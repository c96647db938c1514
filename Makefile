# Convenience targets; the two set-up commands in the README call scripts/ directly.
PY := .venv/bin/python
.PHONY: run test lint format emulator bench bench-quick soak screenshot image image-smoke clean

run:            ## install and start the app (local sandbox unless a pool is configured)
	bash scripts/run-app.sh
test:           ## install everything and run lint + the whole test suite (browser tests included)
	bash scripts/run-tests.sh
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .
emulator:       ## start a standalone local dynamic-sessions emulator
	$(PY) -m azure_sessions.emulator
bench:          ## full benchmarks -> BENCHMARKS.md and bench/results/
	bash scripts/setup.sh test && $(PY) -m bench
bench-quick:
	bash scripts/setup.sh test && $(PY) -m bench --quick
soak:           ## slow reliability cases that are kept out of CI
	bash scripts/setup.sh test && $(PY) -m pytest -m soak --run-soak tests/reliability
screenshot:     ## refresh assets/screenshot.png and assets/screenshot-phone.png from a browser test run
	UPDATE_SCREENSHOT=1 $(PY) -m pytest tests/e2e/test_notebook.py tests/e2e/test_phone.py -q
image:          ## build the Docker image (podman where there is no Docker engine; root) and print its size
	bash scripts/build-image.sh
image-smoke:    ## build the image, run it as a Space would and run one cell through its page (root; not in CI)
	bash scripts/docker-smoke.sh
clean:
	rm -rf .venv .cache .pytest_cache .ruff_cache bench/results/*.tmp
