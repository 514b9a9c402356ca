# Source me (bash): activates the virtual environment and the ROS 2 overlay of ./ros_ws
# (fastsam2_msgs and fastsam2_ros, so `ros2 launch fastsam2_ros ...` finds the package).
_fs2_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_fs2_venv="${FASTSAM2_VENV:-$_fs2_root/.venv}"
if [ ! -x "$_fs2_venv/bin/python" ]; then
  echo "fastsam2_ros: no environment at $_fs2_venv; run scripts/setup_env.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "$_fs2_venv/bin/activate"
export AMENT_PREFIX_PATH="$_fs2_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
if [ -f "$_fs2_root/ros_ws/install/setup.sh" ]; then
  # colcon's setup script reads unset variables; relax nounset while sourcing it
  _fs2_u=$(set +o | grep nounset); set +u
  COLCON_CURRENT_PREFIX="$_fs2_root/ros_ws/install" . "$_fs2_root/ros_ws/install/setup.sh"
  eval "$_fs2_u"
fi
unset _fs2_root _fs2_venv _fs2_u
