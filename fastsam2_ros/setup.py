"""ament_python setup for fastsam2_ros; also a plain pip-installable package (pip install -e .)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "fastsam2_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools", "numpy", "scipy", "pillow", "pyyaml"],
    # colcon test runs pytest for a package that names it here (else unittest, which finds none)
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="fastsam2_ros developers",
    maintainer_email="fastsam2-ros@users.noreply.github.com",
    description="Streaming SAM 2 tracking with text-guided token pruning for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "tracker_node = fastsam2_ros.ros.tracker_node:run",
            "fastsam2-demo = fastsam2_ros.ros.demo:main",
            "fastsam2-bench = fastsam2_ros.bench:main",
            "fastsam2-eval = fastsam2_ros.eval.cli:main",
            "fastsam2-train-router = fastsam2_ros.router_training:main",
        ],
    },
)
