#!/usr/bin/env bash
# Make sure uv is available, installing it from PyPI with pip if it is not.
#
# After `python3 -m pip install uv` the binary may land in a directory that is not
# on PATH (~/.local/bin), but `python3 -m uv` always finds it; the Makefile falls
# back to that form, so no PATH editing is needed.
set -euo pipefail

# Pinned so every machine resolves uv.lock with the same uv (the Dockerfile pins
# the same version). Override with UV_PIP_SPEC='uv>=0.13' if you must.
spec=${UV_PIP_SPEC:-uv==0.13.8}

if command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1; then
  exit 0
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "ensure-uv: neither uv nor pip is installed; install one (Debian: apt-get install -y python3-pip)" >&2
  exit 1
fi

echo "ensure-uv: installing $spec with pip" >&2
# Debian's own python3 refuses system-wide pip installs (PEP 668); uv is a single
# self-contained binary, so a user-level install next to it is harmless.
python3 -m pip install --quiet --disable-pip-version-check "$spec" 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$spec"
python3 -m uv --version >&2
