#!/usr/bin/env bash
# Stop the Ray processes of this machine (head or worker).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
"${BRIVL_BIN:-$here/.venv/bin}/ray" stop --force
