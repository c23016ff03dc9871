#!/usr/bin/env bash
# Run the package's Flower app with `flwr run` on a local simulation federation.
# Usage: scripts/flwr_run_local.sh [NUM_SUPERNODES] [OVERRIDES]
#   e.g. scripts/flwr_run_local.sh 10 "rounds=5 client.lr=0.05"
# Needs the virtual environment's bin/ on PATH (`flwr run` spawns flower-superlink from it).
set -euo pipefail
cd "$(dirname "$0")/.."
supernodes=${1:-10}
overrides=${2:-rounds=5}

scratch=$(mktemp -d)
export FLWR_HOME="$scratch/flwr-home"            # private config + local SuperLink state
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1  # else the SuperLink runs `uv sync`
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1
# Private ports: the local SuperLink is a daemon that outlives the run; we stop it below.
export FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=${FLWR_LOCAL_SUPERLINK_HTTP_API_PORT:-39291}
export FLWR_LOCAL_CONTROL_API_PORT=${FLWR_LOCAL_CONTROL_API_PORT:-39293}
export FLOWER_SUITE_OUTPUT_DIR=${FLOWER_SUITE_OUTPUT_DIR:-$PWD/runs}
mkdir -p "$FLWR_HOME"

stop_superlink() {
  # Stopped by PID: the process listening on our private ports (never by name, which could
  # hit another user's SuperLink).
  for port in "$FLWR_LOCAL_SUPERLINK_HTTP_API_PORT" "$FLWR_LOCAL_CONTROL_API_PORT"; do
    pid=$(ss -Hltnp "sport = :${port}" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$scratch"
}
trap stop_superlink EXIT

flwr run . --stream \
  --federation-config "num-supernodes=${supernodes} client-resources-num-cpus=1 client-resources-num-gpus=0.0" \
  --run-config "overrides='${overrides}'"
echo "run directory written under $FLOWER_SUITE_OUTPUT_DIR"
