# SkyClear: `make demo` and `make test` install everything they need on a fresh Debian 12.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SYSTEM_PYTHON ?= /usr/bin/python3
APT_PACKAGES := qgis python3-qgis qgis-providers xvfb python3-venv
DATA ?= ../shared/data
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed
QGIS_PROFILE ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default

.PHONY: setup test test-fast demo install uninstall benchmarks screenshots package clean

setup: $(STAMP) $(VENV)/bin/skyclear-process

# QGIS comes from Debian; the venv sees it through --system-site-packages.
$(VENV)/bin/python:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)

$(STAMP): $(VENV)/bin/python requirements/runtime.txt requirements/train.txt requirements/test.txt requirements/batch.txt pyproject.toml
	$(PIP) install -q --disable-pip-version-check -r requirements/test.txt
	$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -c "import qgis.core, rasterio, onnxruntime, torch, skyclear; print('environment ok')"
	touch $@

$(VENV)/bin/skyclear-process: scripts/skyclear-process $(VENV)/bin/python
	install -m 755 scripts/skyclear-process $@
	pwd > $(VENV)/skyclear-checkout

test: setup
	$(VENV)/bin/python -m pytest -ra

test-fast: setup
	$(VENV)/bin/python -m pytest -ra -m "not slow"

# GDAL_PAM_ENABLED=NO: reading the samples must not leave .aux.xml statistics beside them
demo: setup
	GDAL_PAM_ENABLED=NO $(PY) scripts/demo.py --data $(DATA) $(DEMO_ARGS)

benchmarks: setup
	$(PY) benchmarks/engine.py

# skyclear-<version>.zip for the QGIS plugin repository / Install from ZIP
package: setup
	$(PY) scripts/package.py --out dist

screenshots: setup
	GDAL_PAM_ENABLED=NO xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) scripts/screenshots.py docs/screenshots

# Link this checkout into the default QGIS profile as the `skyclear` plugin.
install:
	mkdir -p "$(QGIS_PROFILE)/python/plugins"
	ln -sfn "$(CURDIR)" "$(QGIS_PROFILE)/python/plugins/skyclear"
	@echo "linked $(CURDIR) -> $(QGIS_PROFILE)/python/plugins/skyclear; enable SkyClear in Plugins > Manage and Install Plugins"

uninstall:
	rm -f "$(QGIS_PROFILE)/python/plugins/skyclear"

clean:
	rm -rf $(VENV) .hypothesis demo_output dist
