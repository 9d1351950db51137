#!/usr/bin/env bash
# Start a Ray head node. Flows reach it through RAY_ADDRESS=<ip>:<port>.
#   RAY_NODE_IP (default 127.0.0.1)  RAY_PORT (6379)  RAY_NUM_CPUS (all)  RAY_NUM_GPUS (auto)
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${BRIVL_BIN:-$here/.venv/bin}"
eval "$("$bin/python" -c 'from brivl.env import apply_defaults; import os; apply_defaults(); print("export RAY_TMPDIR=" + os.environ["RAY_TMPDIR"])')"
args=(--head --node-ip-address="${RAY_NODE_IP:-127.0.0.1}" --port="${RAY_PORT:-6379}"
      --temp-dir="$RAY_TMPDIR" --include-dashboard=false --disable-usage-stats)
[ -n "${RAY_NUM_CPUS:-}" ] && args+=(--num-cpus="$RAY_NUM_CPUS")
[ -n "${RAY_NUM_GPUS:-}" ] && args+=(--num-gpus="$RAY_NUM_GPUS")
RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" "$bin/ray" start "${args[@]}"
echo "export RAY_ADDRESS=${RAY_NODE_IP:-127.0.0.1}:${RAY_PORT:-6379}"
