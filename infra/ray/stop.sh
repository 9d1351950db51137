#!/usr/bin/env bash
# Stop the Ray processes of this machine (head or worker). `ray stop` finds them by name, so on a
# machine shared with other Ray clusters this stops those too; a test or a second cluster on one
# machine should instead start each node in its own session (setsid) and signal that group.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
"${BRIVL_BIN:-$here/.venv/bin}/ray" stop --force
