#!/usr/bin/env bash
# Build the serving image and smoke-test the container the way the pod runs it: read-only
# root, tmpfs /tmp, all capabilities dropped, no new privileges, user 10001. Run by .ci/run
# after the tests; reports the image's size and build time.
#
# - Engine: the running Docker engine when there is one (GitHub's runners: BuildKit and the
#   real base image). Otherwise this script starts dockerd itself (Debian `docker.io`, in
#   .ci/apt-packages.txt) with no bridge and no iptables, every container on the host's
#   network, and stops it by its PID on exit. Its images are kept under the cats-dogs cache.
# - Base image: the Dockerfile's FROM, pulled when Docker Hub answers; where it does not, a
#   stand-in of the same Debian release made with debootstrap (python3, python3-venv,
#   ca-certificates, this machine's CA bundle and pip settings so pip reaches the package
#   registry), imported under the same name and kept for the next run.
# - Bundle: CI has no trained one, so the tests' tiny bundle (python -m tests.helpers.bundle:
#   the export code on a small CNN trained for seconds).
# CATSDOGS_SKIP_IMAGE=1 skips all of this, saying so, where no engine can run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CATSDOGS_SKIP_IMAGE:-0}" = 1 ]; then
  echo "Skipping the image build and its smoke test (CATSDOGS_SKIP_IMAGE=1)"
  exit 0
fi

cache=${CATSDOGS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cats-dogs}
tag=${CATSDOGS_IMAGE_TAG:-cats-dogs:ci}
work=$(mktemp -d /tmp/cats-dogs-image.XXXXXX)   # short: dockerd's socket path must fit
dockerd_pid=
container=
cleanup() {
  if [ -n "$container" ]; then docker rm -f "$container" >/dev/null 2>&1 || true; fi
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
  # dockerd leaves its network namespace mounted under its exec root (and a failed
  # debootstrap may leave /proc mounted in its tree).
  awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount || true
  rm -rf "$work" || true
}
trap cleanup EXIT

start_engine() {
  if docker info >/dev/null 2>&1; then
    echo "Docker engine: the running one ($(docker version -f '{{.Server.Version}}'))"
    return
  fi
  if ! command -v dockerd >/dev/null; then
    echo "No Docker engine answers and dockerd is not installed (Debian: docker.io, in" >&2
    echo ".ci/apt-packages.txt). Where no engine can run, set CATSDOGS_SKIP_IMAGE=1." >&2
    exit 1
  fi
  mkdir -p "$cache/docker"
  exec 8> "$cache/docker.lock"   # one engine at a time on the cached image store
  flock 8
  export DOCKER_HOST="unix://$work/docker.sock"
  echo "Starting dockerd (no bridge, no iptables: containers use the host's network)"
  dockerd --host "$DOCKER_HOST" --data-root "$cache/docker" --exec-root "$work/exec" \
    --pidfile "$work/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
    --ip-masq=false > "$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 1
  done
  cat "$work/dockerd.log" >&2
  echo "dockerd did not start; where no engine can run, set CATSDOGS_SKIP_IMAGE=1." >&2
  exit 1
}

# The CA bundle and index settings pip uses on this machine, for pip inside the stand-in.
pip_settings() {
  python - "$1" <<'EOF'
import os, subprocess, sys
from pathlib import Path

root = Path(sys.argv[1])
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
config = {}
for line in out.splitlines():
    key, _, value = line.partition("=")
    config[key.split(".", 1)[-1]] = value.strip().strip("'\"")
for key in ("cert", "index-url", "extra-index-url", "trusted-host"):
    env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
    if env:
        config[key] = env
cert = config.get("cert") or "/etc/ssl/certs/ca-certificates.crt"
lines = ["[global]", "cert = /etc/ssl/certs/ca-certificates.crt"]
for key in ("index-url", "extra-index-url", "trusted-host"):
    # Local folders (file://, find-links) do not exist inside the image.
    values = [v for v in config.get(key, "").split() if not v.startswith("file:")]
    if values:
        lines.append(f"{key} = {' '.join(values)}")
(root / "etc" / "ssl" / "certs" / "ca-certificates.crt").write_bytes(Path(cert).read_bytes())
(root / "etc" / "pip.conf").write_text("\n".join(lines) + "\n")
print(f"CA bundle {cert}; pip.conf: {' | '.join(lines[1:])}")
EOF
}

standin_base() {
  local base=$1 root="$work/rootfs" mirror
  # The mirror apt uses here: deb822 sources (Debian 12's default), else sources.list.
  mirror=$(awk '$1 == "URIs:" {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  command -v debootstrap >/dev/null || { echo "debootstrap is missing (.ci/apt-packages.txt)" >&2; exit 1; }
  echo "Making a stand-in for $base: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  pip_settings "$root"
  ln -sfn python3 "$root/usr/bin/python"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$base" > /dev/null
  rm -rf "$root"
}

start_engine
ours=$([ -n "$dockerd_pid" ] && echo true || echo false)
base=$(awk 'toupper($1) == "FROM" {print $2; exit}' Dockerfile)
if docker image inspect "$base" >/dev/null 2>&1; then
  echo "Base image $base: present"
elif timeout 30 docker pull -q "$base" >/dev/null 2>&1; then
  echo "Base image $base: pulled"
else
  echo "Base image $base: Docker Hub does not answer"
  started=$(date +%s)
  standin_base "$base"
  echo "Stand-in base made in $(( $(date +%s) - started )) s; kept in $cache/docker for the next run"
fi

echo "== the test bundle (python -m tests.helpers.bundle)"
context="$work/context"
mkdir -p "$context/models"
target=$(python -m tests.helpers.bundle "$context/models/export" | tail -n 1)
field() { python -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$target" "$1"; }
version=$(field model_version)
# The build context: what the runtime stage COPYs from the checkout, plus the bundle.
cp Dockerfile .dockerignore "$context/"
for src in $(awk 'toupper($1) == "COPY" && $2 !~ /^--from/ {for (i = 2; i < NF; i++) print $i}' Dockerfile); do
  case "$src" in models/*) continue ;; esac
  mkdir -p "$context/$(dirname "$src")"
  cp -r "$src" "$context/$(dirname "$src")/"
done

echo "== docker build -t $tag (model $version)"
# OCI labels: the bundle version and, when the gate promoted it, its registry version/alias.
read -r -a build_args <<< "$(python scripts/image_labels.py "$context/models/export")"
build_args+=(--label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
if [ "$ours" = true ]; then
  build_args+=(--network host)   # no bridge here: RUN steps reach the registry on the host's network
  export DOCKER_BUILDKIT=0       # no buildx here: the classic builder
fi
started=$(date +%s)
docker build "${build_args[@]}" -t "$tag" "$context" > "$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log" >&2; echo "docker build failed" >&2; exit 1; }
build_s=$(( $(date +%s) - started ))
size=$(docker image inspect -f '{{.Size}}' "$tag")

echo "== run it as the pod does, smoke test"
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
container=cats-dogs-ci-$$
# The image refuses to start without a key (or AUTH_DISABLED=true): a fresh one, as the
# pod gets its Secret; the smoke test sends it.
api_key=$(python -c 'import secrets; print(secrets.token_hex(24))')
docker run -d --name "$container" --network host --read-only --tmpfs /tmp \
  --cap-drop ALL --security-opt no-new-privileges --user 10001:10001 \
  -e HOST=127.0.0.1 -e PORT="$port" -e API_KEY="$api_key" "$tag" > /dev/null
status=0
python scripts/smoke_test.py "http://127.0.0.1:$port" --image "$(field photo)" \
  --label "$(field label)" --expect-version "$version" --wait 90 --api-key="$api_key" || status=$?
if [ "$status" -ne 0 ]; then
  docker logs "$container" 2>&1 | tail -50
  echo "The image's smoke test failed" >&2
  exit 1
fi
how=$(docker inspect -f 'user {{.Config.User}}, read-only {{.HostConfig.ReadonlyRootfs}}, cap-drop {{.HostConfig.CapDrop}}, tmpfs {{.HostConfig.Tmpfs}}' "$container")
memory=$(docker stats --no-stream --format '{{.MemUsage}}' "$container" | cut -d/ -f1)
echo "image $tag: $(( size / 1000000 )) MB, built in ${build_s} s on $base; ran as $how; memory ${memory% }; model $version"

echo "== the batch image (Dockerfile.batch) on it: score the committed photos and a bad file"
batch_tag=${CATSDOGS_BATCH_TAG:-cats-dogs-batch:ci}
cp Dockerfile.batch "$context/"
mkdir -p "$context/batch"
cp batch/*.py batch/requirements.txt "$context/batch/"
docker build "${build_args[@]}" -f "$context/Dockerfile.batch" --build-arg BASE="$tag" \
  -t "$batch_tag" "$context" > "$work/build-batch.log" 2>&1 \
  || { tail -40 "$work/build-batch.log" >&2; echo "docker build (batch) failed" >&2; exit 1; }
photos="$work/batch-photos" out="$work/batch-out"
mkdir -p "$photos" "$out"
cp -r tests/data/photos/cat tests/data/photos/dog "$photos/"
echo "not a photo" > "$photos/notes.txt"
chmod -R a+rX "$photos" && chmod 777 "$out"   # the container runs as user 10001
docker run --rm --network host --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges --user 10001:10001 \
  -v "$photos:/photos:ro" -v "$out:/out" "$batch_tag" /photos --out /out/scores.csv \
  > "$work/batch.log" 2>&1 || { tail -20 "$work/batch.log" >&2; echo "batch scoring failed" >&2; exit 1; }
python - "$out/scores.csv" "$photos" "$version" <<'PY'
import csv, sys
from pathlib import Path
rows = list(csv.DictReader(open(sys.argv[1])))
files = [p for p in Path(sys.argv[2]).rglob("*") if p.is_file()]
bad = [r for r in rows if r["error"]]
assert len(rows) == len(files), f"{len(rows)} rows for {len(files)} files"
assert [r["file"].rsplit("/", 1)[-1] for r in bad] == ["notes.txt"], bad
assert all(r["label"] in ("cat", "dog") and r["model_version"] == sys.argv[3] for r in rows if not r["error"])
print(f"batch image: {len(rows)} rows, {len(bad)} with its reason ({bad[0]['error']}), model {sys.argv[3]}")
PY
echo "batch image $batch_tag: $(( $(docker image inspect -f '{{.Size}}' "$batch_tag") / 1000000 )) MB"
