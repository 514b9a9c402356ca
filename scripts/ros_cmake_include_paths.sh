#!/usr/bin/env bash
# ros_cmake_include_paths.sh VENV: the ROS wheels' exported CMake targets (VENV/share/*/cmake)
# name the include folders of the machine they were built on (/opt/python/cp311-cp311/...);
# rosidl's build of fastsam2_msgs then fails on them. The venv's own copies are pointed at the
# running python's and numpy's include folders: no root needed (unlike links under /opt), any
# path (spaces too), idempotent (nothing matches the second time). Called by setup_env.sh.
set -euo pipefail
VENV="$1"
PYINC="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NPINC="$(python -c 'import numpy; print(numpy.get_include())')"
BUILT='/opt/python/cp3[0-9]+-cp3[0-9]+'
{ grep -rlZE --include='*.cmake' "$BUILT/" "$VENV/share" || true; } | xargs -0 -r sed -i -E \
    -e "s|$BUILT/include/python3\.[0-9]+|$PYINC|g" \
    -e "s|$BUILT/lib/python3\.[0-9]+/site-packages/numpy/_core/include|$NPINC|g"
if grep -rqE --include='*.cmake' "$BUILT/" "$VENV/share"; then
  echo "warning: the ROS wheels' CMake files still name /opt/python folders; building fastsam2_msgs may fail" >&2
fi
