# The two commands: `make run` (the whole pipeline on the default data) and `make test`.
# Both create .venv when missing and (re)install only when pyproject.toml or requirements.lock changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAMP_RUN := $(VENV)/.installed-run
# The installer is uv (pinned, put into the venv by pip): it unpacks and byte-compiles in parallel, about a minute
# here where pip took three (torch's CUDA build brings 4 GB of libraries). It installs from the same sources pip is
# configured with (scripts/uv_sources.py). Byte-compiling at install stays: with PYTHONDONTWRITEBYTECODE=1, as on
# this machine, a venv without .pyc files recompiles every import in every process (`make run` 2 minutes slower).
UV_VERSION := 0.13.9
PIP_FLAGS := --quiet --disable-pip-version-check --no-input
UV_FLAGS := --compile-bytecode --no-progress
# `make run` needs the pipeline tools; `make test` adds pytest, ruff and the S3/Kubernetes test servers.
EXTRAS_RUN := pipeline
EXTRAS_TEST := pipeline,dev

.PHONY: run test lint format lock pipeline remote clean-venv

# $(call install,EXTRAS): create the venv if missing, install bodymap with EXTRAS from the lock, check it.
define install
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing bodymap[$(1)] into $(VENV) (first time: about a minute)"
	@{ $(BIN)/python -m pip install $(PIP_FLAGS) uv==$(UV_VERSION) && sources=$$($(BIN)/python scripts/uv_sources.py) \
		&& $(BIN)/uv pip install --python $(BIN)/python $(UV_FLAGS) $$sources -c requirements.lock -e '.[$(1)]'; } \
		> $(VENV)/pip.log 2>&1 \
		|| { grep -v "is ignored: it is neither" $(VENV)/pip.log | tail -40; echo "install failed (full log: $(VENV)/pip.log)"; exit 1; }
	@$(BIN)/python -c "import bodymap" || { echo "install failed: bodymap does not import"; exit 1; }
	@$(BIN)/python -m pip check
endef

$(STAMP_RUN): pyproject.toml requirements.lock
	$(call install,$(EXTRAS_RUN))
	@touch $@

$(STAMP): pyproject.toml requirements.lock
	$(call install,$(EXTRAS_TEST))
	@touch $@ $(STAMP_RUN)

# DVC stage commands call `bodymap`, so the venv's bin goes first on PATH. When something is out of date, the
# stages' MLflow runs nest under one pipeline run (BODYMAP_PIPELINE_RUN_ID); an up-to-date repro starts no run.
run: $(STAMP_RUN)
	@export PATH="$(CURDIR)/$(BIN):$$PATH"; \
	if dvc status --quiet; then dvc repro; else \
		run_id=$$(bodymap tracking start) || exit 1; \
		if BODYMAP_PIPELINE_RUN_ID=$$run_id dvc repro; then bodymap tracking end $$run_id; \
		else bodymap tracking end $$run_id --status FAILED; exit 1; fi; \
	fi
	@cat data/evaluation/report/report.md metrics/register.json
	@echo "all metrics: .venv/bin/dvc metrics show; plots: .venv/bin/dvc plots show; runs: .venv/bin/mlflow ui"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The Kubeflow pipeline's IR YAML (committed; a test fails when it is stale). PIPELINE_ARGS for another cluster
# shape, e.g. make pipeline PIPELINE_ARGS="--set cluster.nodes=4 --out /tmp/bodymap-4nodes.yaml"
pipeline: $(STAMP)
	$(BIN)/python -m pipelines.compile $(PIPELINE_ARGS)

# The DVC remote on the S3-compatible store (README: "Run on a cluster"). The endpoint comes from the environment;
# credentials stay there too (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are read by DVC at push/pull time).
# Written to .dvc/config.local (git-ignored) unless DVC_REMOTE_SCOPE=--project.
#   AWS_ENDPOINT_URL=http://minio.bodymap.svc:9000 make remote [DVC_REMOTE_URL=s3://bodymap/dvc]
DVC ?= $(BIN)/dvc
DVC_REMOTE ?= store
DVC_REMOTE_URL ?= s3://bodymap/dvc
DVC_REMOTE_SCOPE ?= --local
remote:
	@test -n "$(AWS_ENDPOINT_URL)" || { echo "set AWS_ENDPOINT_URL to the store's endpoint, e.g. http://minio.bodymap.svc:9000"; exit 2; }
	@test -x "$(DVC)" || { echo "$(DVC) not found: run 'make test' (or 'make run') once to install"; exit 2; }
	$(DVC) remote add $(DVC_REMOTE_SCOPE) -d -f $(DVC_REMOTE) $(DVC_REMOTE_URL)
	$(DVC) remote modify $(DVC_REMOTE_SCOPE) $(DVC_REMOTE) endpointurl $(AWS_ENDPOINT_URL)
	@echo "DVC remote '$(DVC_REMOTE)' -> $(DVC_REMOTE_URL) at $(AWS_ENDPOINT_URL); credentials from the environment"

# Re-resolve the pinned versions from pyproject.toml (needs the registries).
lock:
	rm -rf /tmp/bodymap-lock && $(PYTHON) -m venv /tmp/bodymap-lock
	/tmp/bodymap-lock/bin/pip install $(PIP_FLAGS) '.[pipeline,dev]' > /tmp/bodymap-lock/pip.log 2>&1 \
		|| { tail -40 /tmp/bodymap-lock/pip.log; exit 1; }
	/tmp/bodymap-lock/bin/pip check
	{ head -2 requirements.lock; /tmp/bodymap-lock/bin/pip freeze | grep -v '^bodymap'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean-venv:
	rm -rf $(VENV)
