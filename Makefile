# The two front-door commands (see README):
#   make demo   — installs, then runs the demo on the embedded default (SQLite, no server)
#   make test   — installs, then runs the whole test suite
# and: make constraints (re-pin the dependencies), make audit (known vulnerabilities).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every dependency at the version CI tested (also used by the Dockerfile).
CONSTRAINTS := constraints.txt

.PHONY: install demo test test-fast audit constraints bench clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/relance demo --days 90 --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not postgres and not redis and not e2e"

# Known vulnerabilities of the installed dependencies (PyPI's advisory data): needs the
# PyPI JSON API; --strict fails when a dependency could not be audited at all.
audit: $(STAMP)
	$(BIN)/pip-audit --strict --skip-editable --progress-spinner off

# Re-pin after a change of pyproject.toml: the venv as installed, without the project itself.
constraints:
	$(BIN)/python -m pip install --quiet -e '.[test]'
	{ echo "# Every dependency pinned to the version CI tested (pip constraints: used by the Makefile and the Dockerfile)."; \
	  echo "# Regenerate after changing pyproject.toml: make constraints (pip freeze of .venv, without relance itself)."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -vi '^relance=='; } > $(CONSTRAINTS)

clean:
	rm -rf demo-out var .pytest_cache
