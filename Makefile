# One-command entry points (see README.md). Everything installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench serve pictures setup setup-test clean

## demo: set up the planner and plan Llama-2-7B for an RTX 4090 (no GPU, torch or network needed)
demo: $(VENV)/.core
	$(BIN)/fitplan plan meta-llama/Llama-2-7b-hf --gpu "RTX 4090"

## test: set up everything the tests need (CPU torch 2.13.0 pinned) and run the suite
test: $(VENV)/.test
	$(BIN)/python -m pytest -q

## serve: the planning page on 127.0.0.1 (no GPU or network needed)
serve: $(VENV)/.web
	$(BIN)/fitplan serve

## pictures: the README's pictures, drawn by fitplan: one training step and the planning page
pictures: $(VENV)/.test
	$(BIN)/fitplan estimate meta-llama/Llama-3.1-8B --method qlora --grad-ckpt --micro-batch 2 --gpu "RTX 4090" \
		--plot docs/timeline.png
	$(BIN)/python -m web.browser docs/page.png

## bench: predicted-versus-measured memory report into benchmarks/results/
bench: $(VENV)/.test
	$(BIN)/fitplan bench

setup: $(VENV)/.core
setup-test: $(VENV)/.test

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.web: pyproject.toml $(VENV)/.core
	$(BIN)/pip install -q -e '.[web]'
	touch $@

# torch first and pinned: an unpinned torch would pull a multi-gigabyte CUDA build
$(VENV)/.test: pyproject.toml constraints.txt $(VENV)/.core
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) *.egg-info
