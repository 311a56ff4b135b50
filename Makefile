# The two commands a newcomer needs are `make demo` and `make test`; everything else is for contributors.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The proxy's hot path compiled with mypyc: rebuilt when any proxy source changes.
NATIVE := src/gossamer/proxy/hotpath.digest
PROXY_SOURCES := $(wildcard src/gossamer/proxy/*.py)

# Debian packages that benchmarks and some tests run against (real servers, not mocks).
SYSTEM_COMMANDS := nginx haproxy wrk nats-server etcd prometheus redis-server redis-cli
SYSTEM_PACKAGES := nginx haproxy wrk nats-server etcd-server prometheus redis-server redis-tools

.PHONY: demo test lint unit bench docs clean system-deps native node browser wheel

# Create the virtual environment once, and reinstall only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Gossamer needs Python 3.11 or newer; set PYTHON=python3.11 (or newer)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Without a C compiler (installed here when run as root on Debian) the proxy runs as pure Python.
$(NATIVE): $(STAMP) $(PROXY_SOURCES)
	@command -v gcc >/dev/null 2>&1 || command -v cc >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing gcc (to compile the proxy's hot path)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null; \
	  fi; }
	$(BIN)/python -m gossamer.proxy.compile build --if-possible

native: $(NATIVE)

# dist/gossamer-*.whl with the hot path compiled (a platform wheel), from the extensions that
# `native` compiled here; pure Python where it could not compile (docs/packaging.md).
wheel: $(NATIVE)
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .
	@ls -1 dist/gossamer-*.whl

# The reference application's asset-consumer runs on Node.js (Debian's nodejs, no npm packages).
node:
	@command -v node >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nodejs (the asset-consumer of examples/assets)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null; \
	  else echo "missing: node; install: apt-get install nodejs"; exit 1; fi; }

# The browser tests drive Debian's chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (the browser tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "missing: chromium; install: apt-get install chromium"; exit 1; fi; }

demo: $(STAMP) $(NATIVE) node
	$(BIN)/gossamer validate -f examples/assets
	$(BIN)/gossamer up examples/assets

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

test: lint $(NATIVE) node browser
	$(BIN)/pytest -q

# Installs what is missing, once, when run as root on Debian; says what to install otherwise.
system-deps:
	@missing=""; for cmd in $(SYSTEM_COMMANDS); do \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$cmd"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "missing:$$missing; install: apt-get install $(SYSTEM_PACKAGES)"; exit 1; fi; \
	fi

bench: $(STAMP) $(NATIVE) system-deps
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/python bench/proxy_bench.py --markdown bench/results-proxy.md
	$(BIN)/python bench/hotpath_bench.py --markdown bench/results-hotpath.md
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/python bench/events_bench.py --markdown bench/results-events.md
	$(BIN)/python bench/up_bench.py --markdown bench/results-up.md
	$(BIN)/python bench/control_bench.py --markdown bench/results-control.md
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/python bench/mtls_bench.py --markdown bench/results-mtls.md
	$(BIN)/python bench/tcp_bench.py --markdown bench/results-tcp.md

docs: $(STAMP)
	$(BIN)/python -m gossamer.resources.reference docs/resources.md

clean:
	-test -x $(BIN)/python && $(BIN)/python -m gossamer.proxy.compile clean
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
