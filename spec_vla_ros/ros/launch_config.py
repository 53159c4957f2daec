"""The package's node graphs, defined once: `ros2 launch` files and the pip-only runner
(`spec-vla-launch`) both read them, so the two cannot drift apart.

A configuration names its launch arguments and its nodes (executable, node name, remappings,
which launch argument sets which parameter). `resolve()` turns argument values into the list
of nodes to start; `generate_launch_description()` wraps the same list in launch_ros actions.

Every launch argument except `record` defaults to '' = "keep the parameters file's value", so
the parameters file (config/<configuration>.yaml, or `params_file:=`) is the one place where
defaults for a configuration live. The run ends when a node marked `ends_run` exits (the
LIBERO bridge, after its episodes) or when any node fails.

`node_environment()` is what both add to the nodes' environment: the DDS settings for camera
frames of robot size (spec_vla_ros.ros.dds), unless the user set their own. With `keystore:=DIR`
every node also runs under ROS 2 security (spec_vla_ros.ros.security): the ROS_SECURITY_*
variables and `--enclave /spec_vla_ros/<node name>`, in the resolved node's `environment` and
`enclave`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from sim_bridge.bridge_parameters import BRIDGE_PARAMETERS

from . import topics
from .dds import dds_environment
from .node_parameters import RECORDER_PARAMETERS
from .security import check_keystore, node_enclave, security_environment

PACKAGE = "spec_vla_ros"


@dataclass(frozen=True)
class Argument:
    name: str
    description: str
    default: str = ""


@dataclass(frozen=True)
class NodeSpec:
    executable: str                        # console script of this package
    name: str                              # node name
    arguments: dict = field(default_factory=dict)            # launch argument -> parameter
    remappings: tuple = ()                 # (from, to) pairs
    remapping_arguments: dict = field(default_factory=dict)  # topic -> launch argument naming its target
    condition: str = ""                    # launch argument that must be true for the node to start
    ends_run: bool = False                 # its exit ends the whole run


@dataclass(frozen=True)
class Configuration:
    description: str
    params_file: str                       # file name under config/
    arguments: tuple
    nodes: tuple


@dataclass(frozen=True)
class ResolvedNode:
    """One node to start: what both the launch file and the runner pass to it."""
    executable: str
    name: str
    params_file: str
    remappings: tuple
    parameters: dict                       # typed values, overriding the parameters file
    ends_run: bool = False
    enclave: str = ""                      # ROS 2 security enclave ('' = security off)
    environment: dict = field(default_factory=dict)   # variables this node gets on top of node_environment()


# Launch arguments named after the policy parameter they set (spec_vla_ros.ros.policy_parameters, which
# loads the model stack, so it is not imported here; test_launch_static checks the names against it).
POLICY_ARGUMENTS = (
    Argument("verifier", "'miniature' or an OpenVLA HF directory"),
    Argument("draft", "draft model: ar (autoregressive, no draft) | mamba | llama | history"),
    Argument("draft_checkpoint", "draft checkpoint directory (or one with mamba/ and llama/); '' = packaged"),
    Argument("device", "torch device: cpu | cuda | cuda:N"),
    Argument("dtype", "auto (the checkpoint's own dtype) | float32 | bfloat16 | float16"),
    Argument("compile", "auto (verifier passes as CUDA graphs on CUDA, eager on the CPU) | always | never"),
    Argument("unnorm_key", "dataset statistics key for de-normalizing actions, e.g. libero_goal"),
    Argument("num_draft_tokens", "tokens the draft proposes per verifier pass (1-7)"),
    Argument("draft_tree", "'' = chains of num_draft_tokens | tree:NODES[:DEPTH[:TOP_K]] | hybrid:NODES[...], "
                           "e.g. hybrid:50"),
    Argument("acceptance", "strict | relaxed (Spec-VLA's rule) | relaxed-guarded"),
    Argument("relaxed_threshold", "relaxed acceptance: largest accepted token distance"),
    Argument("center_crop", "take the centered 0.9-area crop OpenVLA's LIBERO models were trained with"),
    Argument("threads", "torch CPU threads for the model; 0 = torch's default (one per core), 1 = fastest on a "
                        "2-core machine shared with the simulator"),
)
POLICY_ARGUMENT_PARAMETERS = {argument.name: argument.name for argument in POLICY_ARGUMENTS}
# Bridge parameters settable by a launch argument of the same name, described as the parameter is.
BRIDGE_ARGUMENTS = tuple(Argument(name, BRIDGE_PARAMETERS[name].description)
                         for name in ("task_ids", "episodes_per_task", "max_steps", "seeding"))
PARAMS_FILE_ARGUMENT = Argument("params_file", "parameters file for all nodes ('' = the configuration's own)")
KEYSTORE_ARGUMENT = Argument("keystore", "SROS2 keystore (spec-vla-keystore DIR): every node runs under ROS 2 "
                                         "security (Enforce) in enclave /spec_vla_ros/<node name>; '' = off")

CONFIGURATIONS = {
    "libero_goal": Configuration(
        description="policy + LIBERO-GOAL bridge (+ bag recorder with record:=true); ends after the episodes",
        params_file="libero_goal.yaml",
        arguments=POLICY_ARGUMENTS + (
            PARAMS_FILE_ARGUMENT,
            KEYSTORE_ARGUMENT,
            Argument("record", "record a rosbag2 (MCAP) bag of the run", "false"),
            Argument("bag", RECORDER_PARAMETERS["output"].description),
        ) + BRIDGE_ARGUMENTS,
        nodes=(
            NodeSpec("bag_recorder", "bag_recorder", arguments={"bag": "output"}, condition="record"),
            NodeSpec("policy_node", "spec_vla_policy", arguments=POLICY_ARGUMENT_PARAMETERS),
            NodeSpec("libero_bridge_node", "libero_goal_bridge", ends_run=True,
                     arguments={argument.name: argument.name for argument in BRIDGE_ARGUMENTS}),
        ),
    ),
    "hardware": Configuration(
        description="policy only, on a real robot's camera and command topics; dry_run by default",
        params_file="hardware.yaml",
        arguments=POLICY_ARGUMENTS + (
            PARAMS_FILE_ARGUMENT,
            KEYSTORE_ARGUMENT,
            Argument("dry_run", "compute and log actions without publishing motion"),
            Argument("camera_topic", "the robot's RGB camera", "/camera/camera/color/image_raw"),
            Argument("image_transport", "raw (sensor_msgs/Image) | compressed (<camera_topic>/compressed, jpeg/png)"),
            Argument("twist_topic", "MoveIt Servo's twist command input", "/servo_node/delta_twist_cmds"),
            Argument("gripper_topic", "gripper opening command in [0, 1], 1 = open", "/gripper/opening"),
        ),
        nodes=(
            NodeSpec("policy_node", "spec_vla_policy",
                     arguments={**POLICY_ARGUMENT_PARAMETERS, "dry_run": "dry_run",
                                "image_transport": "image_transport"},
                     remapping_arguments={topics.CAMERA.name: "camera_topic",
                                          topics.TWIST.name: "twist_topic",
                                          topics.GRIPPER.name: "gripper_topic"}),
        ),
    ),
}


def config_dir() -> Path:
    """config/ of a source checkout, else of the installed package (colcon or pip)."""
    checkout = Path(__file__).resolve().parents[2] / "config"
    if checkout.is_dir():
        return checkout
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            return Path(get_package_share_directory(PACKAGE)) / "config"
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return Path(sys.prefix) / "share" / PACKAGE / "config"


def node_environment(environ=None) -> dict[str, str]:
    """Variables the launch files and the runner add to every node's environment (on top of the
    user's): FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA unless Fast DDS's transports are set already."""
    return dds_environment(environ)


def truthy(value: str) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def resolve(configuration_name: str, argument_values: dict | None = None) -> list[ResolvedNode]:
    """The nodes to start for `name:=value` launch arguments; ValueError for unknown names, and for
    a keystore without an enclave for every node to start."""
    if configuration_name not in CONFIGURATIONS:
        raise ValueError(f"unknown configuration '{configuration_name}'; expected one of {sorted(CONFIGURATIONS)}")
    configuration = CONFIGURATIONS[configuration_name]
    values = {argument.name: argument.default for argument in configuration.arguments}
    unknown = sorted(set(argument_values or {}) - set(values))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {unknown} for '{configuration_name}'; "
                         f"expected some of {sorted(values)}")
    values.update({name: str(value) for name, value in (argument_values or {}).items()})
    params_file = values["params_file"] or str(config_dir() / configuration.params_file)
    nodes = []
    for spec in configuration.nodes:
        if spec.condition and not truthy(values[spec.condition]):
            continue
        parameters = {parameter: yaml.safe_load(values[argument])
                      for argument, parameter in spec.arguments.items() if values[argument] != ""}
        remappings = tuple(spec.remappings) + tuple(
            (topic, values[argument]) for topic, argument in spec.remapping_arguments.items() if values[argument])
        nodes.append(ResolvedNode(spec.executable, spec.name, params_file, remappings, parameters, spec.ends_run))
    if values["keystore"]:
        enclaves = [node_enclave(node.name) for node in nodes]
        check_keystore(values["keystore"], enclaves)
        environment = security_environment(values["keystore"])
        nodes = [replace(node, enclave=enclave, environment=environment) for node, enclave in zip(nodes, enclaves)]
    return nodes


def generate_launch_description(configuration_name: str):
    """launch_ros description of a configuration (needs ROS 2's `launch` and `launch_ros`)."""
    from launch import LaunchDescription
    from launch.actions import (DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler,
                                SetEnvironmentVariable)
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch_ros.actions import Node

    configuration = CONFIGURATIONS[configuration_name]

    def end_run_if(ends_run: bool):
        def on_exit(event, _context):
            if ends_run or event.returncode != 0:
                return [EmitEvent(event=Shutdown(reason=f"{event.action.name} exited with {event.returncode}"))]
            return None
        return on_exit

    def nodes(context):
        values = {argument.name: context.launch_configurations[argument.name] for argument in configuration.arguments}
        actions = []
        for node in resolve(configuration_name, values):
            action = Node(package=PACKAGE, executable=node.executable, name=node.name, output="screen",
                          parameters=[node.params_file, node.parameters], remappings=list(node.remappings),
                          ros_arguments=["--enclave", node.enclave] if node.enclave else None,
                          additional_env=node.environment or None)
            actions += [action, RegisterEventHandler(OnProcessExit(target_action=action,
                                                                   on_exit=end_run_if(node.ends_run)))]
        return actions

    # Decided here, in the environment `ros2 launch` was started from: a user's own setting wins.
    environment = [SetEnvironmentVariable(name, value) for name, value in node_environment().items()]
    return LaunchDescription(
        [DeclareLaunchArgument(argument.name, default_value=argument.default, description=argument.description)
         for argument in configuration.arguments] + environment + [OpaqueFunction(function=nodes)])
