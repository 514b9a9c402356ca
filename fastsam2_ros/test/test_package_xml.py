"""package.xml declares what the package imports: rosdep installs a robot's dependencies from it,
so an import missing there is a node that fails, or silently loses a feature, on a fresh install."""

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
#: Python module -> its rosdep key, where the two differ (a ROS package's key is its name)
ROSDEP_KEYS = {"numpy": "python3-numpy", "yaml": "python3-yaml", "scipy": "python3-scipy",
               "PIL": "python3-pil", "cv2": "python3-opencv", "pytest": "python3-pytest",
               "tf2_ros": "tf2_ros_py"}
#: installed with pip (docs/ros.md, "On a robot"), or optional tools: no rosdep key
PIP_ONLY = {"torch", "torchvision", "sam2", "open_clip", "transformers", "tokenizers",
            "safetensors", "matplotlib", "tqdm", "rosbags", "setuptools"}


def declared(*tags):
    root = ET.parse(PACKAGE / "package.xml").getroot()
    return {e.text.strip() for e in root if e.tag in tags}


def imported_keys(files):
    """rosdep key -> a file that imports it, for every module that is neither the standard
    library, pip-only nor this package's own (or a test helper)."""
    own = {"fastsam2_ros"} | {f.stem for f in (PACKAGE / "test").glob("*.py")}
    keys = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for top in (m.split(".")[0] for m in modules):
                if top not in sys.stdlib_module_names and top not in PIP_ONLY | own:
                    where = f"{f.relative_to(PACKAGE)}:{node.lineno}"
                    keys.setdefault(ROSDEP_KEYS.get(top, top), where)
    return keys


def runtime_files():
    return (sorted((PACKAGE / "fastsam2_ros").rglob("*.py"))
            + sorted((PACKAGE / "launch").glob("*.py")))


def test_file_scan_finds_the_known_imports():
    keys = imported_keys(runtime_files())
    assert {"rclpy", "rcl_interfaces", "python3-opencv", "tf2_ros_py", "vision_msgs"} <= set(keys)


def test_every_runtime_import_is_an_exec_depend():
    missing = {k: where for k, where in imported_keys(runtime_files()).items()
               if k not in declared("exec_depend", "depend")}
    assert not missing, f"add <exec_depend> to package.xml for: {missing}"


def test_every_test_import_is_declared_and_every_test_depend_used():
    tests = imported_keys(sorted((PACKAGE / "test").glob("*.py")))
    missing = {k: where for k, where in tests.items()
               if k not in declared("test_depend", "exec_depend", "depend")}
    assert not missing, f"add <test_depend> to package.xml for: {missing}"
    unused = declared("test_depend") - set(tests)
    assert not unused, f"test_depend(s) no test imports: {sorted(unused)}"
