#!/usr/bin/env bash
# Run a command inside the project's environment (venv + ROS 2 wheels + the built fastsam2_msgs).
# Usage: scripts/run.sh fastsam2-demo --help     (after scripts/setup_env.sh)
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/scripts/env.sh"
exec "$@"
