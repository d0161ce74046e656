# The two commands README gives; both set up everything they need (Debian 12, as root).
.PHONY: demo test setup lint sanity unit integration

setup:
	hack/setup.sh

demo: setup
	python3 hack/demo.py

test: setup
	hack/test.sh
