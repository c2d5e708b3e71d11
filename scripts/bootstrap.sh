#!/usr/bin/env bash
# Install what PIXL needs on a fresh Debian bookworm machine, and nothing twice:
# the Debian packages (Orthanc and its plugins, dcmtk, PostgreSQL, Python 3.11)
# and a virtualenv made from /usr/bin/python3.11 (the interpreter Orthanc's
# Python plugin embeds) with PIXL installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(orthanc orthanc-python orthanc-dicomweb orthanc-postgresql orthanc-gdcm orthanc-webviewer
              dcmtk postgresql stunnel4
              python3.11 python3.11-venv tmux openssh-server
              chromium)  # chromium: tests render the HTML report and the web viewer
VENV=.venv

missing=()
for package in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # The orthanc package's init script would start a default server; we run our own.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

marker="$VENV/.pixl-installed"
if [ ! -x "$VENV/bin/python" ] || [ pyproject.toml -nt "$marker" ]; then
    echo "bootstrap: preparing the virtualenv in $VENV"
    [ -x "$VENV/bin/python" ] || /usr/bin/python3.11 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[dev]'
    touch "$marker"
fi
