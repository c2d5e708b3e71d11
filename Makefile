# The two commands of PIXL's quick start. Both install what they need first.
VENV := .venv

.PHONY: demo test bootstrap

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/python -m pixl_stack.demo

test: bootstrap
	$(VENV)/bin/python -m pytest
