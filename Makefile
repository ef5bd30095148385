.PHONY: help demo test lint bench
help:  ## list the commands a newcomer needs
	@grep -E '^[a-z]+:.*## ' Makefile | sed 's/:.*## /\t/'
demo:  ## install, load synthetic patients and serve on 127.0.0.1:8000
	./bin/demo
test:  ## install everything and run every gate and test
	./bin/test
lint:  ## ruff, ruff format --check, mypy --strict
	.venv/bin/ruff check src tests bench && .venv/bin/ruff format --check src tests bench && .venv/bin/mypy
bench:  ## import and API benchmarks (figures, not tests)
	.venv/bin/python bench/bench_import.py && .venv/bin/python bench/bench_api.py
