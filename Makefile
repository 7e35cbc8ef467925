# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dashboard's npm packages (ui/node_modules) and Debian's Chromium for the browser tests; see their targets below.
UI_STAMP := ui/node_modules/.installed
BROWSER := /usr/bin/chromium
REDIS_SERVER := /usr/bin/redis-server

.PHONY: install demo inspector test test-lowest lint format typecheck unit soak bench mutants clean foreign-tools bundle lock dist system-deps dashboard browser screenshots

NEEDS_PY311 := $(PYTHON) -c 'import sys; sys.exit("dessert-mcp needs Python 3.11 or newer" if sys.version_info < (3, 11) else 0)'

$(STAMP): pyproject.toml
	@$(NEEDS_PY311)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(STAMP)

# Node tools (Node 22, the MCP Inspector, the conformance suite, the MCPB CLI that packs the bundle), pinned by
# tests/foreign/package-lock.json and installed from the npm registry into .tools/ (git-ignored). Any npm can
# bootstrap it: Node 22 itself comes from the `node` package. Failing here fails `make test`, loudly.
TOOLS := .tools
TOOLS_STAMP := $(TOOLS)/.installed

$(TOOLS_STAMP): tests/foreign/package.json tests/foreign/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm is needed to install the foreign MCP clients (Node 22 comes from the npm registry)" >&2; exit 1; }
	mkdir -p $(TOOLS)
	cp tests/foreign/package.json tests/foreign/package-lock.json $(TOOLS)/
	cd $(TOOLS) && npm ci --no-audit --no-fund --loglevel=error --engine-strict=false
	$(TOOLS)/node_modules/.bin/node -e 'if (+process.versions.node.split(".")[0] < 22) { console.error("Node 22+ was not installed"); process.exit(1) }'
	touch $@

foreign-tools: $(TOOLS_STAMP)

# The demo needs the package alone, not the development tools: its own environment, editable so it runs this tree.
DEMO_VENV ?= .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed

$(DEMO_STAMP): pyproject.toml
	@$(NEEDS_PY311)
	test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/dessert-mcp demo

# The MCP Inspector's web UI (the pinned copy in .tools/, on its own Node 22) against `dessert-mcp --sandbox`.
inspector: $(STAMP) $(TOOLS_STAMP)
	$(TOOLS)/node_modules/.bin/node $(TOOLS)/node_modules/.bin/inspector $(abspath $(BIN))/dessert-mcp --sandbox

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian packages the tests run for real: PostgreSQL (tests/auth start their own throw-away cluster on 127.0.0.1),
# Chromium with fonts (pages in a real browser, driven by playwright with executable_path=/usr/bin/chromium), tmux
# (a real terminal for the Ctrl+C test) and Redis (tests/fanout start their own on 127.0.0.1, and stop and restart
# it). Idempotent: skipped when all four are there.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

system-deps:
	@if [ -x $(BROWSER) ] && [ -x $(REDIS_SERVER) ] && command -v tmux >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; else \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			postgresql chromium fonts-liberation fonts-dejavu-core tmux redis-server; \
	fi

# Two workers (`--dist loadgroup`: tests/conftest.py keeps each family with a heavy session fixture on one worker),
# with branch coverage of server/dessert_mcp printed and gated ([tool.coverage.*] in pyproject.toml).
PYTEST_ARGS ?= -n 2 --dist loadgroup --cov --cov-report=term

unit: $(STAMP) $(TOOLS_STAMP) $(UI_STAMP) system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

# The same suite against the LOWEST versions pyproject.toml allows for each direct dependency, in its own venv
# (.venv-lowest, git-ignored), so a lower bound is tested rather than hoped. CI runs it beside `make test`.
LOWEST := .venv-lowest

$(LOWEST)/.installed: pyproject.toml $(STAMP)
	$(BIN)/uv venv --quiet --allow-existing --python $(PYTHON) $(LOWEST)
	$(BIN)/uv pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[dev]'
	touch $@

test-lowest: $(LOWEST)/.installed $(TOOLS_STAMP) $(UI_STAMP) system-deps
	$(LOWEST)/bin/pytest $(PYTEST_ARGS)

# ≥10,000 calls over streamable HTTP with ~40 % upstream faults (about two minutes); prints its figures.
soak: $(STAMP)
	$(BIN)/pytest -m soak -s tests/reliability/test_soak.py

# The bench's peer: the same job on the official TypeScript SDK (bench/ts-peer/server.mjs), pinned by its
# package-lock.json (node_modules git-ignored) and run on the Node 22 of .tools/.
TS_PEER_STAMP := bench/ts-peer/node_modules/.installed

$(TS_PEER_STAMP): bench/ts-peer/package.json bench/ts-peer/package-lock.json $(TOOLS_STAMP)
	cd bench/ts-peer && npm ci --no-audit --no-fund --loglevel=error
	touch $@

bench: $(STAMP) $(TS_PEER_STAMP)
	$(BIN)/python bench/run.py

# Mutation testing (tests/support/mutants.py): the client, the models, the service, the cache modules and the auth
# wing's token logic, each group against its own fast tests, one mutant at a time. Slow, so not part of `make test` or
# CI. Prints each group's score and the mutants the tests let live; `make mutants GROUPS="cache tokens"` runs some.
MUTMUT_DIR := .mutmut
GROUPS ?=

mutants: $(STAMP)
	$(BIN)/python -m tests.support.mutants $(GROUPS)

# The Claude Desktop bundle: manifest.json + what .mcpbignore lets through, packed (and validated) by the official
# MCPB CLI. Double-click dist/dessert-mcp.mcpb, or drag it onto Claude Desktop's Settings > Extensions.
BUNDLE := dist/dessert-mcp.mcpb

# server.json (the MCP Registry entry) lists the bundle with its sha256, which changes with every pack: mcpb stamps
# the pack time on each file. So the stamped copy goes beside the bundle and the tracked file is left alone (a build
# leaves `git status` clean): publish the bundle this run made with the server.json it wrote.
SERVER_JSON := server.json
SERVER_JSON_OUT := dist/server.json

bundle: $(TOOLS_STAMP)
	rm -f $(BUNDLE)
	$(TOOLS)/node_modules/.bin/node $(TOOLS)/node_modules/.bin/mcpb pack . $(BUNDLE) </dev/null
	$(PYTHON) scripts/set_mcpb_sha256.py $(SERVER_JSON) $(BUNDLE) $(SERVER_JSON_OUT)

# The wheel and sdist for PyPI, built by uv (the sdist first, then the wheel from it, so the sdist is proven whole).
DIST := dist

dist: $(STAMP)
	rm -f $(DIST)/dessert_mcp-*.whl $(DIST)/dessert_mcp-*.tar.gz
	$(BIN)/uv build --out-dir $(DIST)

# The dashboard (an MCP App page): sources and build in ui/, pinned by ui/package-lock.json (node_modules git-ignored),
# built into server/dessert_mcp/dashboard/dashboard.html, which is committed: the package ships it and needs no Node.
# tests/dashboard rebuilds it and fails when the committed page is stale.
$(UI_STAMP): ui/package.json ui/package-lock.json
	cd ui && npm ci --no-audit --no-fund --loglevel=error
	touch $@

dashboard: $(UI_STAMP) $(TOOLS_STAMP)
	$(TOOLS)/node_modules/.bin/node ui/build.mjs

browser: system-deps

# dashboard.png and dashboard-dark.png, rendered by the MCP Inspector against `dessert-mcp --sandbox`, into a
# git-ignored directory: copy them over docs/ when the README's pictures should change.
SCREENSHOTS := build/screenshots

screenshots: $(STAMP) $(TOOLS_STAMP) system-deps
	$(BIN)/python -m tests.support.screenshots $(SCREENSHOTS)

# uv.lock pins what the bundle installs on the user's machine; refresh it after changing dependencies.
lock: $(STAMP)
	$(BIN)/uv lock

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(LOWEST) $(TOOLS) .cache ui/node_modules bench/ts-peer/node_modules .artifacts .pytest_cache .mypy_cache .ruff_cache dist build $(MUTMUT_DIR)
