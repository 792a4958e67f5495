#!/usr/bin/env bash
# One-command set-up: a Python environment from requirements.txt (cached by the file's
# hash, so a second run installs nothing) linked at .venv, this project installed into it
# (editable, no dependencies: a second each run, so the cached venv always points at this
# checkout), then the photographs pulled from the default DVC remote into data/raw/.
#
# The pull is skipped, with a message, in CI (CI=true: the tests use the photographs
# committed in tests/data) and with SKIP_DVC_PULL=1. Where the remote is a local folder
# that is not there (the team's ../shared/dvc-store seen from a GitHub clone), it names
# the command that fetches the public photos; a remote that fails (an S3 bucket without
# credentials, say) stops set-up with the reason (scripts/pull_data.py).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
hash=$(sha256sum requirements.txt | cut -c1-16)
cache=${CATSDOGS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cats-dogs}
venv="$cache/venv-$hash"

# One set-up at a time per cache: clones on one machine share the environment.
mkdir -p "$cache"
exec 9> "$cache/.setup.lock"
flock 9

# PyPI's torch for Linux bundles CUDA (gigabytes); PyTorch's CPU index has the same version
# without it, which is all the CPU trainer needs. Used only where pip has no extra index
# configured already; PIP_EXTRA_INDEX_URL (set, even empty) always wins: for a CUDA
# machine (trainer=gpu), run PIP_EXTRA_INDEX_URL= bash scripts/setup.sh.
if [ -z "${PIP_EXTRA_INDEX_URL+set}" ] \
  && [ -z "$("$python" -m pip config get global.extra-index-url 2>/dev/null)" ]; then
  export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
fi

if [ ! -f "$venv/.complete" ]; then
  echo "Creating the environment in $venv (a few minutes, once per requirements.txt)"
  echo "  extra index: ${PIP_EXTRA_INDEX_URL:-as pip is configured}"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -r requirements.txt
  "$venv/bin/pip" check
  touch "$venv/.complete"
else
  echo "Environment up to date: $venv"
fi
ln -sfn "$venv" .venv

# setuptools comes with the pinned requirements (torch needs it): no build isolation, so
# this needs no network and takes about a second. The environment then imports `stages`
# and `serving` from this checkout (from the last one set up, where several share it;
# inside a checkout its own folders come first anyway).
echo "Installing this checkout into the environment (pip install -e . --no-deps)"
PYTHONWARNINGS=ignore .venv/bin/pip install --quiet --no-deps --no-build-isolation \
  --disable-pip-version-check -e .
flock --unlock 9

# Vega, Vega-Lite and vega-embed for `dvc plots show` without the internet: the versions
# vendor/vega/package-lock.json pins, inlined into the page template .dvc/plots.html,
# which .dvc/config.local then names (scripts/plots_template.py).
vendor=vendor/vega
lock=$(sha256sum "$vendor/package-lock.json" | cut -c1-16)
if ! command -v npm >/dev/null; then
  echo "npm not found: 'dvc plots show' keeps DVC's page, which loads Vega from a CDN (no"
  echo "  charts offline). For offline plots install Node.js 18+ and run this again."
else
  if [ "$(cat "$vendor/node_modules/.lock-sha256" 2>/dev/null)" != "$lock" ]; then
    echo "Installing Vega for offline plots (npm ci --prefix $vendor)"
    npm ci --prefix "$vendor" --no-audit --no-fund --silent
    echo "$lock" > "$vendor/node_modules/.lock-sha256"
  fi
  .venv/bin/python scripts/plots_template.py
fi

# The photographs: the configured DVC remote first; where there is none (a GitHub clone:
# the team's ../shared/dvc-store is not there) or it cannot be used, it says why and names
# the command that fetches the public archive instead (scripts/pull_data.py, docs/data.md).
.venv/bin/python scripts/pull_data.py
echo "Ready. Activate with: source .venv/bin/activate"
