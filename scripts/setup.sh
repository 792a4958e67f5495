#!/usr/bin/env bash
# One-command set-up: a Python environment from requirements.txt (cached by the file's
# hash, so a second run installs nothing) linked at .venv, then the sample photographs
# pulled from the DVC remote into data/raw/.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
hash=$(sha256sum requirements.txt | cut -c1-16)
cache=${CATSDOGS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cats-dogs}
venv="$cache/venv-$hash"

if [ ! -f "$venv/.complete" ]; then
  echo "Creating the environment in $venv (a few minutes, once per requirements.txt)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -r requirements.txt
  "$venv/bin/pip" check
  touch "$venv/.complete"
else
  echo "Environment up to date: $venv"
fi
ln -sfn "$venv" .venv

if [ "${SKIP_DVC_PULL:-0}" != 1 ]; then
  echo "Pulling the sample photographs (dvc pull data/raw.dvc)"
  .venv/bin/dvc pull data/raw.dvc
fi
echo "Ready. Activate with: source .venv/bin/activate"
