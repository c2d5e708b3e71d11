# The two commands of PIXL's quick start. Both install what they need first.
VENV := .venv

.PHONY: demo test bootstrap

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/python -m pixl_stack.demo

# Everything, the deployment test on a real Docker engine (tests/deploy) included.
test: bootstrap
	$(VENV)/bin/python -m pytest

# Pin every dependency with hashes (requirements.lock, requirements-dev.lock): run
# after changing pyproject.toml. A wheelhouse of requirements.lock for offline image
# builds (docs/deployment.md). The deployment test alone (a real Docker engine).
.PHONY: lock wheelhouse test-deploy

lock:
	@scripts/lock.sh

wheelhouse: bootstrap
	$(VENV)/bin/pip download --require-hashes --no-deps -r requirements.lock -d wheelhouse

test-deploy: bootstrap
	$(VENV)/bin/python -m pytest tests/deploy
