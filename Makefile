# Two commands for a fresh machine: `make run` (demo pipeline through Airflow) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
export RECSYS_HOME ?= $(CURDIR)/var
# Logical date of the demo run: yesterday (UTC). Override: make run DS=2026-01-31
DS     ?= $(shell date -u -d yesterday +%F)
PORT   ?= 8080
MLFLOW_PORT ?= 5000

.PHONY: install postgres-server chromium run test airflow mlflow bench-validate bench-signals bench-quality bench-sessions bench-serving bench-scale bench-load chaos clean

# The stamp is rebuilt whenever the pinned requirements or the package metadata change.
$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -e .
	@touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/recsys demo-data --end-date $(DS)
	$(BIN)/recsys airflow db migrate > $(RECSYS_HOME)/airflow-db-migrate.log 2>&1 || { cat $(RECSYS_HOME)/airflow-db-migrate.log; exit 1; }
	$(BIN)/recsys airflow-test --ds $(DS)
	$(BIN)/recsys show

# Two pytest workers (pytest-xdist), one test module per worker at a time (module fixtures built once);
# the longest modules are scheduled first (tests/conftest.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: install postgres-server chromium
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder) tests

# The tests start a real PostgreSQL server (the serving copy) from Debian's package; install it
# when the machine has none (needs root, as on CI).
postgres-server:
	@ls /usr/lib/postgresql/*/bin/pg_ctl > /dev/null 2>&1 || { \
	  echo "installing Debian's postgresql package for the serving-copy tests"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: PostgreSQL server missing; run: sudo apt-get install -y postgresql" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql > /dev/null; }

# The report screenshot tests (tests/test_reports_browser.py) load the reports and the Data Docs in
# headless Chromium from Debian's package; install it when the machine has none (needs root, as on CI).
chromium:
	@command -v chromium > /dev/null 2>&1 || { \
	  echo "installing Debian's chromium package for the report screenshot tests"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: chromium missing; run: sudo apt-get install -y chromium" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium > /dev/null; }

airflow: install
	$(BIN)/recsys airflow db migrate > /dev/null
	@echo "Airflow UI: http://127.0.0.1:$(PORT)  user: admin  password: see $(RECSYS_HOME)/airflow/simple_auth_manager_passwords.json.generated"
	AIRFLOW__API__PORT=$(PORT) AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$(PORT)/execution/ \
	  $(BIN)/recsys airflow standalone

mlflow: install
	@echo "MLflow UI: http://127.0.0.1:$(MLFLOW_PORT)"
	$(BIN)/recsys mlflow-ui --port $(MLFLOW_PORT)

# Quality on UCI Online Retail (or DATA=path): candidates, baselines and the published lists.
DATA ?= $(CURDIR)/../shared/data/online_retail.parquet
bench-quality: install
	$(BIN)/python benchmarks/bench_quality.py $(DATA) --write-docs

# Ten million demo events: generation, the whole nightly run (each step in its own process, the score
# step as 2 shard tasks at once), the ALS floor, block scoring, and the score step again with the
# floor's 64-factor ALS as champion; FLOOR_ONLY=1: generation, the floor and block scoring only;
# DEEP=SECONDS: the deep candidates too (lightgcn, two_tower, sasrec), each fit within SECONDS;
# EVENTS=N: N events instead of ten million, users (N / 10) and items (N / 100) scaled alike.
bench-scale: install
	$(BIN)/python benchmarks/bench_scale.py $(if $(FLOOR_ONLY),,--pipeline) $(if $(DEEP),--deep $(DEEP)) $(if $(EVENTS),--events $(EVENTS))

# Next item in a session (issue 16): session-kNN and item co-occurrence, leave-last-out HR@20 / MRR@20 on
# Online Retail's invoices taken as sessions (benchmarks/bench_sessions.py says why).
bench-sessions: install
	$(BIN)/python benchmarks/bench_sessions.py $(DATA)

bench-serving: install
	$(BIN)/python benchmarks/bench_serving.py $(DATA)

bench-validate: install
	$(BIN)/python benchmarks/bench_validate.py

# The wider signals (ratings, reviews, wishlists, dwell, context) on demo data: used, ignored, absent.
bench-signals: install
	$(BIN)/python benchmarks/bench_signals.py

# The rank, train and score steps alone and beside two CPU-bound processes (docs/benchmarks.md,
# "Under load"); demo data, or DATA=../shared/data/online_retail.parquet.
bench-load: install
	$(BIN)/python benchmarks/bench_load.py $(DATA)

# Fault injection: nights on demo data with the operator's accidents injected at seeded random points,
# then the invariants checked (benchmarks/chaos.py). NIGHTS=7 SEED=7 by default.
chaos: install
	$(BIN)/python benchmarks/chaos.py --nights $(or $(NIGHTS),7) --seed $(or $(SEED),7)

clean:
	rm -rf $(RECSYS_HOME)
