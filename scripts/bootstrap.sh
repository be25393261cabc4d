#!/usr/bin/env bash
# Create the project's virtual environment (if missing) and install ditcompress into it.
#
# Usage: bash scripts/bootstrap.sh [VENV_DIR]      (called by `make repro` / `make test`)
#
# torch is installed first and on its own: on the machines this project is built on, pip is
# capped at torch 2.14.1 / torchvision 0.29.1, which lie on local disk; letting the resolver pick
# a bare `torch` would pull several GB. Elsewhere set TORCH_SPEC to the build you want, e.g.
#   TORCH_SPEC="torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cpu"
# Any torch >= 2.4 works. An already-installed torch is kept.
set -euo pipefail
venv="${1:-.venv}"
python="${PYTHON:-python3}"
torch_spec="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[bootstrap] creating $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
if ! "$venv/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[bootstrap] installing $torch_spec"
  # shellcheck disable=SC2086  # torch_spec is a list of pip arguments
  "${pip[@]}" install -q $torch_spec
fi
echo "[bootstrap] installing ditcompress and its dependencies"
"${pip[@]}" install -q -e ".[dev]"
touch "$venv/.installed"
