#!/usr/bin/env bash
# `make lock`: pin every dependency of pyproject.toml, with hashes, for the
# interpreter PIXL runs on (CPython 3.11, Linux). Two files, one resolution:
#   requirements.lock      what PIXL runs with, plus its build backend; the image,
#                          bootstrap and CI install it (pip --require-hashes)
#   requirements-dev.lock  requirements.lock plus the test and lint tools (the
#                          `dev` extra), constrained by it so every shared pin agrees
# Existing pins are kept unless pyproject.toml no longer allows them; run
# `scripts/lock.sh --upgrade` to move everything to the newest allowed versions.
set -euo pipefail
cd "$(dirname "$0")/.."

UV=.venv/bin/uv
if [ ! -x "$UV" ]; then
    # uv alone, at its locked version: the rest of the virtualenv may not match
    # pyproject.toml yet (that is why the lock is being made).
    [ -x .venv/bin/python ] || /usr/bin/python3.11 -m venv .venv
    uv_pin=$(grep -m1 '^uv==' requirements-dev.lock 2>/dev/null | cut -d' ' -f1 || true)
    .venv/bin/pip install -q --disable-pip-version-check "${uv_pin:-uv}"
fi

# The editable install of PIXL needs its build backend, offline too (wheelhouse).
mkdir -p build
.venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
    > build/build-requirements.in

common=(--generate-hashes --python-version 3.11 --python-platform linux
        --custom-compile-command "make lock" --quiet "$@")
"$UV" pip compile "${common[@]}" pyproject.toml build/build-requirements.in -o requirements.lock
"$UV" pip compile "${common[@]}" pyproject.toml --extra dev -c requirements.lock -o requirements-dev.lock
echo "lock: wrote requirements.lock and requirements-dev.lock"
