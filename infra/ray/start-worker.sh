#!/usr/bin/env bash
# Join this machine to a Ray cluster as a worker node.
#   RAY_ADDRESS (required, head ip:port)  RAY_NODE_IP (default 127.0.0.1)  RAY_NUM_CPUS  RAY_NUM_GPUS
set -euo pipefail
: "${RAY_ADDRESS:?set RAY_ADDRESS to the head node, e.g. 10.0.0.5:6379}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${BRIVL_BIN:-$here/.venv/bin}"
args=(--address="$RAY_ADDRESS" --node-ip-address="${RAY_NODE_IP:-127.0.0.1}" --disable-usage-stats)
[ -n "${RAY_NUM_CPUS:-}" ] && args+=(--num-cpus="$RAY_NUM_CPUS")
[ -n "${RAY_NUM_GPUS:-}" ] && args+=(--num-gpus="$RAY_NUM_GPUS")
RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" "$bin/ray" start "${args[@]}"
