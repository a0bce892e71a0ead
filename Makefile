# Two commands set everything up: `make train` and `make test` create .venv and install what is missing.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
# make transfer: the data, its two class lists (absolute: any working directory), the study's folder
DATA ?= ../shared/data/fruits360-sample
CLASSES_A ?= $(CURDIR)/conf/classes/fruits360_a.txt
CLASSES_B ?= $(CURDIR)/conf/classes/fruits360_b.txt
NOW := $(shell date +%Y-%m-%d_%H-%M-%S)
TRANSFER_DIR ?= $(if $(FRUITRES_ROOT),$(FRUITRES_ROOT)/)logs/transfer/$(NOW)
# make bench-tta: the validation accuracy to reach, a transfer_source run's best checkpoint (empty: train one
# first, on CLASSES_A), and the folder of the table, CSVs and curves
TARGET ?= 0.95
SOURCE_CKPT ?=
BENCH_TTA_DIR ?= $(if $(FRUITRES_ROOT),$(FRUITRES_ROOT)/)logs/bench_tta/$(NOW)
# make fewshot: the source on classes A of SOURCE_DATA within SOURCE_BUDGET, then 10 images per class of
# classes B of DATA over seeds 0,1,2 (FEWSHOT_DIR/source, FEWSHOT_DIR/target with the sweep table); ARGS go
# to both steps, SOURCE_ARGS and TARGET_ARGS to one
SOURCE_DATA ?= $(DATA)
SOURCE_BUDGET ?= 00:00:10:00
FEWSHOT_DIR ?= $(if $(FRUITRES_ROOT),$(FRUITRES_ROOT)/)logs/fewshot/$(NOW)
# make full: from scratch on the full Fruits-360 (DATA=<the folder with its Training/ and Test/>) within BUDGET,
# with FULL_EXPERIMENT's recipe (experiment=resnet18_scratch for the ResNet-18 rows of docs/results.md)
BUDGET ?= 00:00:15:00
FULL_EXPERIMENT ?= mobilenet_v3_small_scratch
# make bench-peers: the ladder of wall-clock budgets (minutes) and the folder of the table and figure
BUDGETS ?= 0.5,1
BENCH_PEERS_DIR ?= $(if $(FRUITRES_ROOT),$(FRUITRES_ROOT)/)logs/bench_peers/$(NOW)

.DEFAULT_GOAL := help
.PHONY: help install test test-slow test-all lint format train lr-find sweep transfer tensorboard clean bench \
	bench-tta bench-peers bench-gpu full fewshot eval predict export archs seeds

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,mlflow,timm,peers]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package (editable) with its dev tools

test: $(STAMP) ## run the test suite (without the tests marked slow)
	$(PY) -m pytest -m "not slow" $(ARGS)

test-slow: $(STAMP) ## run only the slow end-to-end tests
	$(PY) -m pytest -m slow $(ARGS)

test-all: $(STAMP) ## run every test
	$(PY) -m pytest $(ARGS)

lint: $(STAMP) ## ruff lint and format check; the import layers contract (pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: $(STAMP) ## run the main job (embedded data); pass overrides with ARGS="experiment=resnet18 ..."
	$(PY) -m fruitres.train $(ARGS)

lr-find: $(STAMP) ## learning-rate range test: lr_find.png and the model.optimizer.lr to use; ARGS="experiment=..."
	$(PY) -m fruitres.lr_find $(ARGS)

sweep: $(STAMP) ## demo sweep, lr x frozen_stages on the embedded data: 4 jobs, then the table of results
	$(PY) -m fruitres.train -m model.optimizer.lr=1e-3,3e-3 model.frozen_stages=0,3 \
		data.image_size=64 trainer.max_epochs=3 $(ARGS)

seeds: $(STAMP) ## one recipe over seeds 0,1,2: the jobs' table and mean ± std per configuration; ARGS="experiment=..."
	$(PY) -m fruitres.train -m seed=0,1,2 $(ARGS)

# Source on classes A (TRANSFER_DIR/source), then the grid on classes B from its best checkpoint
# (TRANSFER_DIR/target): recipe x training images per class, with the sweep table and transfer.png/.csv/.md.
# ARGS go to both steps, SOURCE_ARGS and TARGET_ARGS to one.
transfer: $(STAMP) ## transfer study: source on classes A, B by recipe x images/class (~30 min); DATA=<dir>
	$(PY) -m fruitres.train experiment=transfer_source data.data_dir=$(DATA) data.classes=$(CLASSES_A) \
		hydra.run.dir=$(TRANSFER_DIR)/source $(ARGS) $(SOURCE_ARGS)
	source_ckpt=$$(ls $(TRANSFER_DIR)/source/checkpoints/epoch_*.ckpt) && \
	$(PY) -m fruitres.train experiment=transfer_target hparams_search=transfer data.data_dir=$(DATA) \
		data.classes=$(CLASSES_B) source_ckpt=$$source_ckpt hydra.sweep.dir=$(TRANSFER_DIR)/target \
		$(ARGS) $(TARGET_ARGS)

fewshot: $(STAMP) ## 10 images/class of classes B from a source on classes A of SOURCE_DATA; seeds 0,1,2
	$(PY) -m fruitres.train experiment=transfer_source data.data_dir=$(SOURCE_DATA) data.classes=$(CLASSES_A) \
		trainer.max_time=$(SOURCE_BUDGET) hydra.run.dir=$(FEWSHOT_DIR)/source $(ARGS) $(SOURCE_ARGS)
	source_ckpt=$$(ls $(FEWSHOT_DIR)/source/checkpoints/epoch_*.ckpt) && \
	$(PY) -m fruitres.train -m experiment=transfer_target recipe=fewshot data.data_dir=$(DATA) \
		data.classes=$(CLASSES_B) data.train_per_class=10 model.weights_path=$$source_ckpt seed=0,1,2 \
		hydra.sweep.dir=$(FEWSHOT_DIR)/target $(ARGS) $(TARGET_ARGS)

full: $(STAMP) ## from scratch on the full Fruits-360 within BUDGET (15 min); DATA=<full dataset>; prints the result
	$(PY) -m fruitres.train experiment=$(FULL_EXPERIMENT) data.data_dir=$(DATA) trainer.max_time=$(BUDGET) $(ARGS)

bench: $(STAMP) ## project vs the tutorial's loop, images/s (embedded data); ARGS="--data-dir DIR --json FILE"
	$(PY) -m fruitres.bench throughput $(ARGS)

# The tutorial's recipe and the project's recipes on CLASSES_B of DATA, from a backbone trained on CLASSES_A
# (SOURCE_CKPT, or trained first) and from random init: time to TARGET, curves (tta.png), table (tta.md/.csv).
bench-tta: $(STAMP) ## time to 0.95 val accuracy, tutorial vs recipes (<30 min on 2 cores); DATA, SOURCE_CKPT
	$(PY) -m fruitres.bench tta --target $(TARGET) --data-dir $(DATA) --classes-a $(CLASSES_A) \
		--classes-b $(CLASSES_B) $(if $(SOURCE_CKPT),--source-ckpt $(SOURCE_CKPT)) --out $(BENCH_TTA_DIR) $(ARGS)

# fruitres, fastai's fine_tune (± to_bf16) and the tutorial's loop on CLASSES_B of DATA, from one weights file
# (a backbone trained first on CLASSES_A): Test accuracy against wall time (peers.png, peers.md/.csv/.json).
bench-peers: $(STAMP) ## Test accuracy vs wall time beside fastai and the tutorial, BUDGETS=0.5,1 (min); DATA
	$(PY) -m fruitres.bench peers --budgets-minutes $(BUDGETS) --data-dir $(DATA) --classes-a $(CLASSES_A) \
		--classes-b $(CLASSES_B) --out $(BENCH_PEERS_DIR) $(ARGS)

# From scratch at an equal fitting budget on DATA: parameters, train and eval images/s, test accuracy.
archs: $(STAMP) ## compare backbones (torchvision and timm) at an equal time budget on DATA; ARGS="--seconds 300"
	$(PY) benchmarks/archs.py --data-dir $(DATA) $(ARGS)

bench-gpu: ## on a fresh GPU machine, <8 min: GPU tests, bf16/16-mixed, DDP, compile, speed; OUT/gpu_check.json+.md
	bash scripts/gpu_check.sh

tensorboard: $(STAMP) ## serve TensorBoard on the runs under logs/
	$(VENV)/bin/tensorboard --logdir logs

eval: $(STAMP) ## test a checkpoint and write its report: ARGS="ckpt_path=<.ckpt> [data.data_dir=<dir>]"
	$(PY) -m fruitres.eval $(ARGS)

predict: $(STAMP) ## top-k classes of images: ARGS="ckpt_path=<.ckpt> inputs=<image|folder|glob>"
	$(PY) -m fruitres.predict $(ARGS)

export: $(STAMP) ## ONNX or TorchScript model + model.json: ARGS="ckpt_path=<.ckpt> format=onnx|torchscript"
	$(PY) -m fruitres.export $(ARGS)

clean: ## remove caches and build files (keeps logs/, data/ and .venv)
	rm -rf .pytest_cache .ruff_cache .import_linter_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
