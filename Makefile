# The two commands README gives; both set up everything they need (Debian 12, as root).
.PHONY: demo test setup bench

setup:
	hack/setup.sh

demo: setup
	python3 hack/demo.py

test: setup
	hack/test.sh

# Side-by-side timings against skopeo and community.docker; not part of the test run.
bench: setup
	python3 benchmarks/run.py
