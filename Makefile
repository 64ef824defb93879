# Posta: `make run` serves on http://127.0.0.1:5000, `make test` runs the whole suite.
VENV ?= .venv
PYTHON ?= python3
PORT ?= $(or $(FLASK_RUN_PORT),5000)
SYNC_INTERVAL ?= $(or $(FLASK_POSTA_SYNC_INTERVAL),120)
FLASK := $(VENV)/bin/flask --app app
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
CATALOGS := $(patsubst %.po,%.mo,$(wildcard translations/*/LC_MESSAGES/messages.po))

.PHONY: run test bench lint format translations extract-messages worker

$(STAMP): requirements.txt requirements-dev.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

%.mo: %.po $(STAMP)
	$(VENV)/bin/pybabel compile -i $< -o $@

translations: $(CATALOGS)

run: $(STAMP) translations
	$(FLASK) db upgrade
	@echo "Posta on http://127.0.0.1:$(PORT) (background sync every $(SYNC_INTERVAL) s)"
	@trap 'kill 0' EXIT INT TERM; \
	$(FLASK) email sync --every $(SYNC_INTERVAL) & \
	$(FLASK) run --host 127.0.0.1 --port $(PORT)

worker: $(STAMP)
	$(FLASK) worker

test: $(STAMP) translations
	scripts/system-deps
	$(VENV)/bin/pytest

bench: $(STAMP) translations
	scripts/system-deps
	timeout 900 $(VENV)/bin/python -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .

extract-messages: $(STAMP)
	$(VENV)/bin/pybabel extract -F babel.cfg -k _l -k lazy_gettext -k _ln:1,2 -k lazy_ngettext:1,2 -o translations/messages.pot app.py blueprints posta templates
	$(VENV)/bin/pybabel update -i translations/messages.pot -d translations --no-fuzzy-matching --ignore-obsolete
