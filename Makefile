# hrnas-automl: `make demo` and `make test` work on a fresh clone (they create .venv and install into it).
PYTHON     ?= python3
VENV       ?= .venv
# torch is installed first and on its own, so pip never resolves a CUDA build; pick another build here.
TORCH_SPEC ?= torch==2.13.0
PORT       ?= 8080
PYTEST_ARGS ?= -n 2 --dist loadgroup --durations=15   # 2 workers (CI has 2 cores), nnictl runs on one (conftest); the slowest tests shown

BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install lint test test-fast demo examples tables descriptions clean

help:
	@echo "make install    create $(VENV) and install torch ($(TORCH_SPEC)) + hrnas-automl with test extras"
	@echo "make lint       install, then ruff (pyflakes + pycodestyle, 120 columns; config in pyproject.toml)"
	@echo "make test       install, lint, then run the whole test suite (nnictl end-to-end runs included)"
	@echo "make test-fast  install, then the tests not marked slow"
	@echo "make demo       install, then a real nnictl evolution search over DetNAS-small (port PORT=$(PORT))"
	@echo "make examples   regenerate the examples' search-space JSON from the model spaces"
	@echo "make tables     recompile the cost tables shipped in the package (hrnas_automl/cost/shipped_tables)"
	@echo "make descriptions  regenerate the spaces' kept descriptions (hrnas_automl/space_descriptions.json)"
	@echo "make clean      remove $(VENV) and build leftovers"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade "pip>=23"
	$(BIN)/python -m pip install "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: install
	$(BIN)/hrnas-automl search examples/detnas/evolution.yml --port $(PORT)

# the strategy tags of examples/*/compare.yml, in order
COMPARED = random,evolution,optuna,tpe

examples: install
	$(BIN)/hrnas-automl export-space detnas-small --space-arg num_classes=10 -o examples/detnas/search_space_small.json
	$(BIN)/hrnas-automl export-space hrnas --space-arg setting=tiny --space-arg bn_momentum=0.1 --space-arg head=segmentation --space-arg num_classes=4 -o examples/hrnas/search_space_tiny_seg.json
	$(BIN)/hrnas-automl export-space lite-hrnet --space-arg head=keypoints --space-arg num_keypoints=17 -o examples/lite_hrnet/search_space.json
	$(BIN)/hrnas-automl export-space ranet --space-arg num_classes=4 -o examples/ranet/search_space.json
	$(BIN)/hrnas-automl export-space detnas-small --space-arg num_classes=10 --strategies $(COMPARED) -o examples/detnas/compare_space.json
	$(BIN)/hrnas-automl export-space hrnas --space-arg setting=tiny --space-arg bn_momentum=0.1 --space-arg head=segmentation --space-arg num_classes=4 --strategies $(COMPARED) -o examples/hrnas/compare_space.json
	$(BIN)/hrnas-automl export-space lite-hrnet --space-arg head=keypoints --space-arg num_keypoints=17 --strategies $(COMPARED) -o examples/lite_hrnet/compare_space.json
	$(BIN)/hrnas-automl export-space ranet --space-arg num_classes=4 --strategies $(COMPARED) -o examples/ranet/compare_space.json

tables: install
	$(BIN)/python -c "from hrnas_automl.cost.analytic import ship_tables; ship_tables()"

# what `spaces`, `describe`, `sample` and `export-space` read without importing NNI or torch (checked against the
# spaces by tests/test_descriptions.py)
descriptions: install
	$(BIN)/python -c "from hrnas_automl.arch import write_descriptions; write_descriptions()"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
