"""ament_python package: `colcon build` on a ROS 2 machine, `pip install -e .` elsewhere."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "spec_vla_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "sim_bridge", "sim_bridge.*"]),
    package_data={PACKAGE: ["drafts/checkpoints/*/*", "drafts/checkpoints/*.safetensors"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    zip_safe=False,
    maintainer="spec_vla_ros developers",
    description="OpenVLA with speculative decoding (Mamba/Llama/history drafts) as ROS 2 nodes, with a LIBERO-GOAL bridge.",
    license="Apache-2.0",
    tests_require=["pytest"],
    # mamba-ssm's CUDA kernels for the Mamba draft (builds against the installed torch; CUDA machines only)
    extras_require={"cuda": ["mamba-ssm"]},
    entry_points={
        "console_scripts": [
            # ROS 2 executables (`ros2 run spec_vla_ros <name>`)
            "policy_node = spec_vla_ros.ros.policy_node:run",
            "libero_bridge_node = sim_bridge.bridge_node:run",
            "bag_recorder = spec_vla_ros.ros.recorder_node:run",
            # commands
            "spec-vla-launch = spec_vla_ros.commands.launch:main",
            "spec-vla-demo = spec_vla_ros.commands.demo:main",
            "spec-vla-write-miniature = spec_vla_ros.commands.write_miniature:main",
            "spec-vla-bench = spec_vla_ros.commands.bench:main",
            "spec-vla-collect = spec_vla_ros.commands.collect:main",
            "spec-vla-train-draft = spec_vla_ros.commands.train_draft:main",
            "spec-vla-finetune = spec_vla_ros.commands.finetune:main",
            "spec-vla-record-demos = spec_vla_ros.commands.record_demos:main",
            "spec-vla-eval = spec_vla_ros.commands.eval:main",
            "spec-vla-harness = spec_vla_ros.commands.harness:main",
            "spec-vla-analyze = spec_vla_ros.commands.analyze:main",
            "spec-vla-bag-reindex = spec_vla_ros.commands.bag_reindex:main",
            "spec-vla-keystore = spec_vla_ros.commands.keystore:main",
        ],
    },
)
