#!/usr/bin/env bash
# Release one image to the cluster kubectl points at: apply an overlay with that image, wait
# for the rollout, smoke-test through the Service, and on failure restore the revision that
# ran before. CD runs it (.github/workflows/cd.yml); so can you (docs/deployment.md).
#
#   deployment/kubernetes/rollout.sh OVERLAY IMAGE:TAG
#   e.g. deployment/kubernetes/rollout.sh production ghcr.io/me/cats-dogs:3f2c1e0...
#
# Environment: SMOKE_PHOTO, SMOKE_LABEL (a committed photo and its class), SMOKE_API_KEY
# (when the cluster has the cats-dogs-api Secret), ROLLOUT_TIMEOUT (default 300s).
# Exit 0: the new revision runs and passed the smoke test. Exit 1: it failed and the
# previous revision is back; or, when there is none (a first release, or this image was
# already the running one), it says so loudly and restores nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ $# -eq 2 ] || { echo "usage: $0 OVERLAY IMAGE:TAG" >&2; exit 2; }
overlay=$1
image=$2
[ -d "deployment/kubernetes/overlays/$overlay" ] || { echo "no overlay $overlay" >&2; exit 2; }
case "${image##*/}" in *:*) ;; *) echo "IMAGE must carry a tag: $image" >&2; exit 2 ;; esac
namespace=cats-dogs
deployment=cats-dogs
timeout=${ROLLOUT_TIMEOUT:-300s}
photo=${SMOKE_PHOTO:-tests/data/fullres/cat.1.jpg}
label=${SMOKE_LABEL:-cat}
k() { kubectl -n "$namespace" "$@"; }
error() { echo "::error::$*"; }
revision() {
  k get deployment "$deployment" --ignore-not-found \
    -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision}'
}
running_image() {
  k get deployment "$deployment" --ignore-not-found -o jsonpath='{.spec.template.spec.containers[0].image}'
}

work=$(mktemp -d "$PWD/.rollout.XXXXXX")   # inside the repo: kustomize needs relative bases
forward_pid=
cleanup() {
  if [ -n "$forward_pid" ]; then kill "$forward_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

previous=$(revision)
previous_image=$(running_image)
echo "== running now: ${previous_image:-nothing} (revision ${previous:-none})"

rollback() {
  error "$1"
  if [ -z "$previous" ]; then
    error "First release: there is no previous revision to roll back to, so nothing was restored. The failed release stays for inspection (kubectl -n $namespace describe deployment/$deployment); fix it and deploy again."
    exit 1
  fi
  if [ "$(revision)" = "$previous" ]; then
    error "$image was already the running release (revision $previous): this deploy changed nothing, and there is nothing it could roll back. The cluster runs what it ran before."
    exit 1
  fi
  echo "== rolling back to revision $previous ($previous_image)"
  k rollout undo "deployment/$deployment" --to-revision="$previous"
  if ! k rollout status "deployment/$deployment" --timeout="$timeout"; then
    error "The rollback to revision $previous did not become ready either: the service needs a hand."
    exit 1
  fi
  error "Release of $image failed; revision $previous ($(running_image)) is running again."
  exit 1
}

echo "== apply overlay $overlay with $image"
cat > "$work/kustomization.yaml" <<YAML
resources:
  - ../deployment/kubernetes/overlays/$overlay
images:
  - name: cats-dogs
    newName: ${image%:*}
    newTag: ${image##*:}
YAML
kubectl kustomize "$work" > "$work/manifests.yaml"
grep -qF "image: $image" "$work/manifests.yaml" || { error "the overlay did not take $image"; exit 1; }
kubectl apply -f "$work/manifests.yaml"
k annotate "deployment/$deployment" --overwrite kubernetes.io/change-cause="$image"

echo "== wait for the rollout (and the database)"
k rollout status statefulset/cats-dogs-postgres --timeout="$timeout" \
  || rollback "PostgreSQL did not become ready"
k rollout status "deployment/$deployment" --timeout="$timeout" \
  || rollback "The rollout of $image did not become ready in $timeout"

# Through the Service, with a committed photo: nothing to download that could fail. A
# failed attempt is retried once over a fresh port-forward, so only a release that fails
# twice is rolled back, not a good one behind a hiccup of the tunnel.
smoke() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  kubectl -n "$namespace" port-forward "service/$deployment" "$port:80" > "$work/port-forward.log" 2>&1 &
  forward_pid=$!
  local status=0
  python3 scripts/smoke_test.py "http://127.0.0.1:$port" --image "$photo" --label "$label" \
    --wait 60 ${SMOKE_API_KEY:+--api-key "$SMOKE_API_KEY"} || status=$?
  kill "$forward_pid" 2>/dev/null || true
  wait "$forward_pid" 2>/dev/null || true
  forward_pid=
  return "$status"
}
for attempt in 1 2; do
  echo "== smoke test through service/$deployment (attempt $attempt)"
  if smoke; then
    echo "== released $image (revision $(revision))"
    exit 0
  fi
  cat "$work/port-forward.log"
done
rollback "The smoke test of $image failed twice"
