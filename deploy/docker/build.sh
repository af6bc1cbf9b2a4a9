#!/usr/bin/env bash
# Build the k2rl images on a machine with Docker (BuildKit), ports taken from k2rl.core.config.
#
#   deploy/docker/build.sh cpu                 # all six services, k2rl-<service>:cpu
#   deploy/docker/build.sh cuda trainer        # k2rl-trainer:cuda only
#
# Env: IMAGE_PREFIX (default k2rl-), TAG_SUFFIX (default empty), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
variant="${1:?usage: build.sh cpu|cuda [service...]}"
shift
case "$variant" in
  cpu) torch_index=https://download.pytorch.org/whl/cpu ;;
  cuda) torch_index=https://download.pytorch.org/whl/cu128 ;;
  *) echo "variant must be cpu or cuda, not $variant" >&2; exit 2 ;;
esac
python="${PYTHON:-.venv/bin/python}"
# name grpc_port metrics_port, one line per service, from the one source of truth
mapfile -t rows < <("$python" -c '
import sys
from k2rl.core.config import DEFAULT_GRPC_PORTS, DEFAULT_METRICS_PORTS, SERVICE_NAMES
wanted = sys.argv[1:] or SERVICE_NAMES
for name in wanted:
    if name not in SERVICE_NAMES:
        sys.exit(f"unknown service {name}; choose from {SERVICE_NAMES}")
    print(name, DEFAULT_GRPC_PORTS[name], DEFAULT_METRICS_PORTS[name])
' "$@")
version="$(git describe --tags --always --dirty 2>/dev/null || echo 0.0.0)"
for row in "${rows[@]}"; do
  read -r name grpc_port metrics_port <<<"$row"
  tag="${IMAGE_PREFIX:-k2rl-}${name//_/-}:${variant}${TAG_SUFFIX:-}"
  echo "building $tag"
  DOCKER_BUILDKIT=1 docker build -f deploy/docker/Dockerfile --target "$variant" \
    --build-arg SERVICE="$name" --build-arg GRPC_PORT="$grpc_port" --build-arg METRICS_PORT="$metrics_port" \
    --build-arg TORCH_INDEX_URL="$torch_index" --build-arg VERSION="$version" \
    -t "$tag" .
done
