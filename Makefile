# The same commands locally and in CI.
.PHONY: demo test check bench bench-qlib clean

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

check:
	.venv/bin/ruff check src tests benchmarks examples
	.venv/bin/mypy

bench:
	.venv/bin/python benchmarks/pool_throughput.py
	.venv/bin/python benchmarks/ensemble.py
	.venv/bin/python benchmarks/features.py

bench-qlib:
	bash scripts/qlib-env.sh
	.venv/bin/python benchmarks/vs_qlib.py

clean:
	rm -rf demo_output .pytest_cache .mypy_cache .ruff_cache
