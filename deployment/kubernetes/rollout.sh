#!/usr/bin/env bash
# Release one image to the cluster kubectl points at: apply an overlay with that image, wait
# for the rollout, smoke-test every pod of the new ReplicaSet, and on failure restore the
# revision that ran before. CD runs it (.github/workflows/cd.yml); so can you
# (docs/deployment.md).
#
#   deployment/kubernetes/rollout.sh OVERLAY IMAGE:TAG
#   deployment/kubernetes/rollout.sh --render OVERLAY IMAGE:TAG   # print what it would apply
#   e.g. deployment/kubernetes/rollout.sh production ghcr.io/me/cats-dogs:3f2c1e0...
#
# Environment: MODEL_VERSION (the model version the image must serve; by default read from
# the image's model.json with `docker run`), SMOKE_PHOTO, SMOKE_LABEL (a committed photo and
# its class), SMOKE_API_KEY (when the cluster has the cats-dogs-api Secret),
# ROLLOUT_TIMEOUT (default 300s).
# Secrets: the overlay's secrets/ folder (scripts/make_secrets.py; never committed), or exit 2
# before anything is applied.
# Exit 0: the new revision runs and every one of its pods passed the smoke test with that
# image and model version. Exit 1: it failed; the script then says exactly what it restored
# (or that it restored nothing, and why), and fails loudly whenever a step of the rollback
# fails too.
set -euo pipefail
cd "$(dirname "$0")/../.."

render_only=false
if [ "${1:-}" = --render ]; then render_only=true; shift; fi
[ $# -eq 2 ] || { echo "usage: $0 [--render] OVERLAY IMAGE:TAG" >&2; exit 2; }
overlay=$1
image=$2
[ -d "deployment/kubernetes/overlays/$overlay" ] || { echo "no overlay $overlay" >&2; exit 2; }
case "${image##*/}" in *:*) ;; *) echo "IMAGE must carry a tag: $image" >&2; exit 2 ;; esac
# The overlay's Secrets come from files that are never committed (its kustomization's
# secretGenerator): refuse before anything is rendered or applied when one is missing.
# An overlay without a secretGenerator of its own (shadow) uses the one it builds on.
secrets_overlay=$overlay
if ! grep -q secretGenerator "deployment/kubernetes/overlays/$overlay/kustomization.yaml"; then
  base=$(sed -n 's#^  - \.\./\([a-z-]*\)$#\1#p' "deployment/kubernetes/overlays/$overlay/kustomization.yaml" | head -n 1)
  [ -n "$base" ] && secrets_overlay=$base
fi
secrets_dir="deployment/kubernetes/overlays/$secrets_overlay/secrets"
missing=
for file in db.env api.env tls.crt tls.key; do
  [ -s "$secrets_dir/$file" ] || missing="$missing $file"
done
if [ -n "$missing" ]; then
  echo "Overlay $overlay has no secrets: missing${missing} in $secrets_dir/." >&2
  echo "Generate them with: python scripts/make_secrets.py kubernetes $secrets_overlay" >&2
  echo "(production: once, then keep them safe; docs/deployment.md, \"Settings a production deployment must set\")" >&2
  exit 2
fi
namespace=cats-dogs
deployment=cats-dogs
timeout=${ROLLOUT_TIMEOUT:-300s}
photo=${SMOKE_PHOTO:-tests/data/fullres/cat.1.jpg}
label=${SMOKE_LABEL:-cat}
k() { kubectl -n "$namespace" "$@"; }
error() { echo "::error::$*"; }

work=$(mktemp -d "$PWD/.rollout.XXXXXX")   # inside the repo: kustomize needs relative bases
forward_pid=
cleanup() {
  if [ -n "$forward_pid" ]; then kill "$forward_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The API Deployment's image in rendered manifests (its only container; the other workload,
# PostgreSQL, is a StatefulSet).
deployment_image() {
  awk '/^---/ {d = 0} /^kind: Deployment$/ {d = 1} d && ($1 == "image:" || $2 == "image:") {print $NF; exit}' "$1"
}

# The overlay with the released image. Kustomize matches image names exactly, so the wrapper
# names the image the overlay renders (production has already renamed `cats-dogs` to its
# GHCR name), whatever the overlay calls it.
render_release() {
  local current name
  kubectl kustomize "deployment/kubernetes/overlays/$overlay" > "$work/overlay.yaml"
  current=$(deployment_image "$work/overlay.yaml")
  name=${current%@*}
  case "${name##*/}" in *:*) name=${name%:*} ;; esac
  [ -n "$name" ] || { error "no Deployment image in overlay $overlay"; exit 1; }
  cat > "$work/kustomization.yaml" <<YAML
resources:
  - ../deployment/kubernetes/overlays/$overlay
images:
  - name: $name
    newName: ${image%:*}
    newTag: ${image##*:}
YAML
  kubectl kustomize "$work" > "$work/manifests.yaml"
  if [ "$(deployment_image "$work/manifests.yaml")" != "$image" ]; then
    error "the overlay did not take $image (it renders $(deployment_image "$work/manifests.yaml"))"
    exit 1
  fi
}

render_release
if [ "$render_only" = true ]; then
  cat "$work/manifests.yaml"
  exit 0
fi

# The model version the image carries: what every new pod must serve.
if [ -z "${MODEL_VERSION:-}" ]; then
  command -v docker >/dev/null || { echo "Set MODEL_VERSION (no docker to read it from $image)" >&2; exit 2; }
  MODEL_VERSION=$(docker run --rm --network none --entrypoint python "$image" -c \
    'import json, os; print(json.load(open(os.environ["MODEL_DIR"] + "/model.json"))["version"])') \
    || { echo "Could not read the model version from $image: set MODEL_VERSION" >&2; exit 2; }
fi

revision() {
  k get deployment "$deployment" --ignore-not-found \
    -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision}'
}
running_image() {
  k get deployment "$deployment" --ignore-not-found -o jsonpath='{.spec.template.spec.containers[0].image}'
}

previous=$(revision)
previous_image=$(running_image)
echo "== running now: ${previous_image:-nothing} (revision ${previous:-none})"

# Called after `||`, where bash ignores `set -e`: every step checks its own result, and only
# what was verified is reported.
rollback() {
  error "$1"
  if [ -z "$previous" ]; then
    error "First release: there is no previous revision to roll back to, so nothing was restored. The failed release stays for inspection (kubectl -n $namespace describe deployment/$deployment); fix it and deploy again."
    exit 1
  fi
  local now
  if ! now=$(revision) || [ -z "$now" ]; then
    error "Could not read the Deployment's revision: nothing was rolled back; the cluster needs a hand."
    exit 1
  fi
  if [ "$now" = "$previous" ]; then
    error "$image was already the running release (revision $previous): this deploy changed nothing, and there is nothing it could roll back. The cluster runs what it ran before."
    exit 1
  fi
  echo "== rolling back to revision $previous ($previous_image)"
  if ! k rollout undo "deployment/$deployment" --to-revision="$previous"; then
    error "kubectl rollout undo failed: nothing was rolled back; the Deployment still holds $image (revision $now)."
    exit 1
  fi
  if ! k rollout status "deployment/$deployment" --timeout="$timeout"; then
    error "The rollback to $previous_image did not become ready in $timeout: the service needs a hand."
    exit 1
  fi
  if ! now=$(running_image) || [ "$now" != "$previous_image" ]; then
    error "After the rollback the Deployment runs '${now:-unknown}', not $previous_image: the service needs a hand."
    exit 1
  fi
  if ! k rollout status statefulset/cats-dogs-postgres --timeout=10s >/dev/null 2>&1; then
    error "Release of $image failed; $previous_image runs again (revision $(revision)), but PostgreSQL is still not ready: predictions are not being recorded."
    exit 1
  fi
  error "Release of $image failed; $previous_image runs again (revision $(revision)) and is ready."
  exit 1
}

echo "== apply overlay $overlay with $image (model $MODEL_VERSION)"
kubectl apply -f "$work/manifests.yaml"
k annotate "deployment/$deployment" --overwrite kubernetes.io/change-cause="$image"

echo "== wait for the rollout (and the database)"
k rollout status statefulset/cats-dogs-postgres --timeout="$timeout" \
  || rollback "PostgreSQL did not become ready"
k rollout status "deployment/$deployment" --timeout="$timeout" \
  || rollback "The rollout of $image did not become ready in $timeout"

# The pods of the ReplicaSet the current revision owns, not being deleted: the old ones
# may still answer from their preStop pause, and a port-forward to the Service picks any.
new_pods() {
  local rev hash
  rev=$(revision)
  hash=$(k get replicasets -l app.kubernetes.io/component=api -o jsonpath='{range .items[*]}{.metadata.annotations.deployment\.kubernetes\.io/revision}{" "}{.metadata.labels.pod-template-hash}{"\n"}{end}' \
    | awk -v rev="$rev" '$1 == rev {print $2}')
  [ -n "$hash" ] || return 1
  k get pods -l "pod-template-hash=$hash" -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.containers[0].image}{" "}{.metadata.deletionTimestamp}{"\n"}{end}' \
    | awk 'NF == 2 {print $1, $2}'
}

# One pod, over its own port-forward, with a committed photo (nothing to download that
# could fail): the image it runs, then the smoke test with the expected model version.
smoke_pod() {
  local pod=$1 pod_image=$2 port status=0
  if [ "$pod_image" != "$image" ]; then
    echo "FAIL image: pod $pod runs $pod_image, expected $image"
    return 1
  fi
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # kubectl itself, not through k(): $! must be its PID, or the kill below would end only
  # a subshell and leave the tunnel running.
  kubectl -n "$namespace" port-forward "pod/$pod" "$port:8000" > "$work/port-forward.log" 2>&1 &
  forward_pid=$!
  python3 scripts/smoke_test.py "http://127.0.0.1:$port" --image "$photo" --label "$label" \
    --expect-version "$MODEL_VERSION" --wait 60 ${SMOKE_API_KEY:+"--api-key=$SMOKE_API_KEY"} < /dev/null \
    || status=$?
  kill "$forward_pid" 2>/dev/null || true
  wait "$forward_pid" 2>/dev/null || true
  forward_pid=
  [ "$status" -eq 0 ] || cat "$work/port-forward.log"
  return "$status"
}

if ! pods=$(new_pods) || [ -z "$pods" ]; then
  rollback "No ready pod of the new ReplicaSet (revision $(revision)) to smoke-test"
fi
while read -r pod pod_image; do
  # A failed attempt is retried once over a fresh port-forward, so only a pod that fails
  # twice rolls the release back, not a good one behind a hiccup of the tunnel.
  passed=false
  for attempt in 1 2; do
    echo "== smoke test of pod $pod (attempt $attempt)"
    if smoke_pod "$pod" "$pod_image"; then passed=true; break; fi
  done
  [ "$passed" = true ] || rollback "The smoke test of $image failed twice on pod $pod"
done <<< "$pods"
echo "== released $image, model $MODEL_VERSION (revision $(revision), pods: $(cut -d' ' -f1 <<< "$pods" | tr '\n' ' '))"
