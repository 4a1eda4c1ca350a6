# Two entry points for a fresh machine: `make quick` (install, fetch data, run the quick standard leaderboard) and
# `make test` (install, run the test suite). Everything lives in a local virtual environment.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
OUT ?= results/quick
BIN = $(VENV)/bin

.PHONY: quick test lint data browser shells install

quick: install data
	$(BIN)/clbench run --benchmark split-fmnist --scenario class task \
		--strategy naive joint ewc replay --set replay.mem_size=1000 \
		--seeds 0 1 2 --epochs 1 --batch-size 128 --lr 0.01 --momentum 0.9 --out $(OUT)

test: install data browser shells
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check clbench tests scripts

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test,lint,avalanche,ray,tensorboard,wandb,mlflow]"
	touch $@

# Fashion-MNIST from Debian's archive where we may install it; otherwise see the README (data root or --download).
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi

# Chromium from Debian's archive where we may install it: the report test opens the HTML page in a headless browser
# (and is skipped without one).
browser:
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi

# zsh from Debian's archive where we may install it: the completion test checks the generated zsh script's syntax (and
# is skipped without zsh; bash's is tested wherever bash is).
shells:
	@if ! command -v zsh >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zsh; fi
