# timbreamt: `make demo` sets up and transcribes the bundled example; `make test` sets up and runs every test.
PY := .venv/bin/python
TIMBREAMT := .venv/bin/timbreamt
EXAMPLE := ../shared/data/reference/three_mix.wav
DEMO_OUT := demo-output

.PHONY: setup demo test test-fast bench eval web clean

setup:
	bash .ci/setup.sh

# Transcribe the example with the CLI, build the web bundle, then serve it (Ctrl-C stops; DEMO_SERVE=0 skips).
# build/ is this project's own output folder: --force lets a bundle from before the marker file be replaced.
DEMO_SERVE ?= 1
demo: setup
	$(TIMBREAMT) transcribe $(EXAMPLE) -o $(DEMO_OUT) --instruments 3 --format midi,json,csv --overwrite
	@echo "demo: MIDI, JSON and CSV are in $(abspath $(DEMO_OUT))/"
	$(TIMBREAMT) bundle build/web --example $(EXAMPLE) --force
	@if [ "$(DEMO_SERVE)" = 1 ]; then $(TIMBREAMT) serve build/web --port $${PORT:-8000}; fi

web: setup
	$(TIMBREAMT) bundle build/web --example $(EXAMPLE) --force

test: setup
	$(PY) -m pytest -q -rs

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

bench: setup
	$(TIMBREAMT) bench

clean:
	rm -rf $(DEMO_OUT) build dist .pytest_cache
