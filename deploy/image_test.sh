#!/usr/bin/env bash
# `make image-test`: build the Dockerfile for real and call the container.
#
# No Docker engine or registry is reachable here, so this uses Debian's daemonless podman
# with the settings that work on this machine kind (runc, cgroupfs, vfs storage, host
# networking) and a stand-in for python:3.11-slim built from a debootstrapped Debian:
#   1. debootstrap a minimal bookworm -> localhost/debian-min:bookworm
#   2. python3 + venv on PATH in it     -> tagged docker.io/library/python:3.11-slim
#   3. build ./Dockerfile with --pull=never (the host CA bundle mounted so pip's HTTPS works)
#   4. export the MNIST example, run the image with it (host network, other ports),
#      wait for /v1/readyz, call REST and gRPC, check the non-root user and the
#      HEALTHCHECK command, stop with SIGTERM and expect exit code 0.
#
# Skips (exit 0, with a message) when podman/runc/debootstrap are missing and cannot be
# installed; fails (exit 1) on a real problem. Environment:
#   IMAGE_TEST_DIR      work and storage folder (default /tmp/servable-image-test)
#   IMAGE_TEST_INSTALL  0 = do not try `apt-get install podman runc debootstrap`
#   IMAGE_TEST_KEEP     1 = keep the container storage (base images) for a faster rerun
#   IMAGE_TEST_GRPC_PORT / IMAGE_TEST_REST_PORT (default: free ports picked at start)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${IMAGE_TEST_DIR:-/tmp/servable-image-test}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
IMAGE="localhost/servable:image-test"
CONTAINER="servable-image-test-$$"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

log() { printf 'image-test: %s\n' "$*" >&2; }
skip() { log "SKIPPED: $*"; exit 0; }
fail() { log "FAILED: $*"; exit 1; }

have_tools() { command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null; }

if ! have_tools && [ "${IMAGE_TEST_INSTALL:-1}" = "1" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing podman, runc and debootstrap with apt-get"
    apt-get install -y -q --no-install-recommends podman runc debootstrap >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends podman runc debootstrap >/dev/null 2>&1; } \
        || true
fi
have_tools || skip "podman, runc and debootstrap are needed (apt-get install podman runc debootstrap)"
[ "$(id -u)" = 0 ] || skip "debootstrap and this podman setup need root"
[ -x "$PY" ] || fail "no Python at $PY (run make first, or set PYTHON)"
[ -f "$ROOT/requirements.lock" ] || fail "requirements.lock is missing"

# Podman configuration of its own, nothing written to /etc.
mkdir -p "$WORK"
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
cat >"$WORK/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
export CONTAINERS_CONF="$WORK/containers.conf" CONTAINERS_STORAGE_CONF="$WORK/storage.conf"

cleanup() {
    podman rm -f "$CONTAINER" >/dev/null 2>&1 || true
    if [ "${IMAGE_TEST_KEEP:-0}" != "1" ]; then
        podman system reset -f >/dev/null 2>&1 || true
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# 1-2. The stand-in base image (kept across runs with IMAGE_TEST_KEEP=1).
if ! podman image exists docker.io/library/python:3.11-slim; then
    if ! podman image exists localhost/debian-min:bookworm; then
        log "debootstrap bookworm (about 30 s)"
        rm -rf "$WORK/rootfs"
        debootstrap --variant=minbase bookworm "$WORK/rootfs" >"$WORK/debootstrap.log" 2>&1 \
            || { tail -20 "$WORK/debootstrap.log" >&2; skip "debootstrap could not reach a Debian mirror"; }
        tar -C "$WORK/rootfs" -c . | podman import -q - localhost/debian-min:bookworm >/dev/null
        rm -rf "$WORK/rootfs"
    fi
    log "building the python:3.11-slim stand-in"
    mkdir -p "$WORK/base"
    cat >"$WORK/base/Containerfile" <<'EOF'
FROM localhost/debian-min:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /usr/local
EOF
    podman build -q --pull=never -t docker.io/library/python:3.11-slim "$WORK/base" >/dev/null
fi

# 3. The project image, from the repository's Dockerfile unchanged (docker format: OCI
#    images drop HEALTHCHECK).
log "building the image from Dockerfile"
start=$(date +%s)
podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
podman image prune -f >/dev/null 2>&1 || true
# --layers=false: vfs copies the whole root file system at every committed layer, so one
# commit at the end is minutes faster than caching each step.
podman build --pull=never --format docker --layers=false -v "$CA_BUNDLE:$CA_BUNDLE:ro" -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; fail "podman build failed (log: $WORK/build.log)"; }
log "image built in $(( $(date +%s) - start )) s"

# 4. Run it on an exported model.
log "exporting the MNIST example model"
(cd "$ROOT" && TF_CPP_MIN_LOG_LEVEL=3 "$PY" -m examples.mnist.train --dataset digits --training_steps 50,200 "$WORK/models/mnist" >/dev/null 2>&1) \
    || fail "could not export the MNIST example"
chmod -R a+rX "$WORK/models"

# (podman's complaints that it cannot schedule healthcheck timers without systemd go to
# podman.log; `podman healthcheck run` below runs the check directly.)
[ "$(podman run --rm --entrypoint id "$IMAGE" -u 2>>"$WORK/podman.log")" != "0" ] || fail "the image runs as root"

# Free ports by default (host networking: a fixed port may already be taken by another server).
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GRPC_PORT="${IMAGE_TEST_GRPC_PORT:-$(free_port)}"
REST_PORT="${IMAGE_TEST_REST_PORT:-$(free_port)}"
while [ "$REST_PORT" = "$GRPC_PORT" ]; do REST_PORT="$(free_port)"; done

podman run -d --name "$CONTAINER" --network=host -v "$WORK/models:/models:ro" \
    -e MODEL_NAME=mnist -e GRPC_PORT="$GRPC_PORT" -e REST_API_PORT="$REST_PORT" "$IMAGE" >/dev/null 2>>"$WORK/podman.log"
deadline=$(( $(date +%s) + 180 ))
until curl -fsS "http://127.0.0.1:$REST_PORT/v1/readyz" >/dev/null 2>&1; do
    if [ "$(podman inspect -f '{{.State.Running}}' "$CONTAINER")" != "true" ] || [ "$(date +%s)" -gt "$deadline" ]; then
        podman logs "$CONTAINER" 2>&1 | tail -40 >&2
        fail "the server did not become ready"
    fi
    sleep 1
done
[ "$(podman inspect -f '{{.State.Running}}' "$CONTAINER")" = "true" ] \
    || { podman logs "$CONTAINER" 2>&1 | tail -40 >&2; fail "the container exited (port $GRPC_PORT or $REST_PORT taken?)"; }
log "server ready on gRPC :$GRPC_PORT, REST :$REST_PORT"

curl -fsS "http://127.0.0.1:$REST_PORT/v1/models/mnist" | grep -q AVAILABLE || fail "model status is not AVAILABLE"
"$PY" - "$REST_PORT" <<'EOF' || fail "REST predict failed"
import json, sys, urllib.request
body = json.dumps({"signature_name": "predict_images", "instances": [[0.0] * 784]}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/models/mnist:predict", body)
scores = json.load(urllib.request.urlopen(req, timeout=30))["predictions"][0]
assert len(scores) == 10, scores
EOF
out=$(cd "$ROOT" && "$PY" -m examples.mnist.client --server="127.0.0.1:$GRPC_PORT" --dataset=digits 2>&1) \
    || fail "the gRPC client failed: $out"
log "gRPC client: $out"
[ -n "$(podman image inspect -f '{{.HealthCheck}}' "$IMAGE" | grep servable.healthcheck)" ] || fail "the image has no HEALTHCHECK"
podman healthcheck run "$CONTAINER" >"$WORK/healthcheck.log" 2>&1 \
    || { cat "$WORK/healthcheck.log" >&2; fail "the HEALTHCHECK command failed"; }

podman stop -t 30 "$CONTAINER" >/dev/null 2>>"$WORK/podman.log"
code=$(podman inspect -f '{{.State.ExitCode}}' "$CONTAINER")
[ "$code" = 0 ] || { podman logs "$CONTAINER" 2>&1 | tail -20 >&2; fail "exit code $code after SIGTERM (want 0)"; }
log "PASSED: image builds, serves MNIST over REST and gRPC as a non-root user, stops cleanly"
