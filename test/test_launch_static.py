"""Static checks of the launch configurations (no nodes started; runs without ROS 2 installed,
except the one test that needs ROS 2's `launch_ros`)."""
import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

from sim_bridge.bridge_parameters import BRIDGE_PARAMETERS
from spec_vla_ros.ros import topics
from spec_vla_ros.ros.node_parameters import RECORDER_PARAMETERS
from spec_vla_ros.ros.policy_parameters import POLICY_PARAMETERS
from spec_vla_ros.ros.dds import BUILTIN_TRANSPORTS, LARGE_DATA, PROFILES_FILE_VARIABLES, describe
from spec_vla_ros.ros.launch_config import CONFIGURATIONS, config_dir, node_environment, resolve
from spec_vla_ros.ros.launcher import Launcher, node_command

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO_ROOT / "launch").glob("*.launch.py"))
SAMPLE_ARGUMENTS = {   # a few argument sets per configuration
    "libero_goal": [{}, {"record": "true", "bag": "/tmp/bag", "draft": "llama", "task_ids": "[0, 3]",
                         "episodes_per_task": "2", "num_draft_tokens": "3", "acceptance": "relaxed",
                         "relaxed_threshold": "5", "max_steps": "20"}],
    "hardware": [{}, {"dry_run": "false", "camera_topic": "/wrist/image", "verifier": "/models/openvla"}],
}


def console_scripts() -> dict[str, str]:
    """setup.py's console scripts, name -> module (read from the file: it cannot be imported)."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = [ast.literal_eval(item) for item in value.elts]
                    return {name.strip(): target.split(":")[0].strip()
                            for name, target in (entry.split("=") for entry in entries)}
    raise AssertionError("setup.py declares no console_scripts")


# The parameter table each executable declares its parameters from.
PARAMETER_TABLES = {"policy_node": POLICY_PARAMETERS, "libero_bridge_node": BRIDGE_PARAMETERS,
                    "bag_recorder": RECORDER_PARAMETERS}
# The module of each executable's node, and the name under which it imports its table.
TABLE_NAMES = {"policy_node": "POLICY_PARAMETERS", "libero_bridge_node": "BRIDGE_PARAMETERS",
               "bag_recorder": "RECORDER_PARAMETERS"}


def every_node_spec():
    return [(name, spec) for name, configuration in CONFIGURATIONS.items() for spec in configuration.nodes]


def test_each_launch_file_parses_and_names_its_configuration():
    assert {path.name for path in LAUNCH_FILES} == {f"{name}.launch.py" for name in CONFIGURATIONS}
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert "generate_launch_description" in functions, path
        [configuration] = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                           and any(getattr(t, "id", "") == "CONFIGURATION" for t in node.targets)]
        assert path.name == f"{configuration}.launch.py"
        assert "spec_vla_ros.ros.launch_config" in path.read_text()        # the node list is not redefined here


def test_each_node_declares_the_parameters_of_its_table():
    """The node modules read the tables (read from the source: no ROS import needed)."""
    scripts = console_scripts()
    assert {spec.executable for _, spec in every_node_spec()} == set(PARAMETER_TABLES)
    for executable, table_name in TABLE_NAMES.items():
        source = (REPO_ROOT / Path(*scripts[executable].split(".")).with_suffix(".py")).read_text()
        assert f"for parameter in {table_name}.values():" in source, executable
        assert "PARAMETERS = {" not in source, f"{executable} defines a parameter table of its own"


def test_the_policy_launch_arguments_name_policy_parameters():
    """launch_config lists them without importing the table (it would load the model stack)."""
    from spec_vla_ros.ros.launch_config import POLICY_ARGUMENTS
    assert {argument.name for argument in POLICY_ARGUMENTS} <= set(POLICY_PARAMETERS)
    read_only = {name for name, parameter in POLICY_PARAMETERS.items() if parameter.read_only}
    assert read_only <= {argument.name for argument in POLICY_ARGUMENTS}     # settable at start, so an argument


def test_remapped_topics_are_the_package_topics():
    names = {topic.name for topic in topics.ALL}
    for _, spec in every_node_spec():
        assert set(spec.remapping_arguments) <= names, spec.name


def test_every_executable_is_a_console_script():
    scripts = console_scripts()
    for _, spec in every_node_spec():
        assert spec.executable in scripts, f"{spec.executable} is not a console script in setup.py"
    assert {"spec-vla-launch", "spec-vla-demo"} <= set(scripts)


def test_every_params_file_exists_and_declares_known_parameters():
    for name, configuration in CONFIGURATIONS.items():
        params_file = config_dir() / configuration.params_file
        assert params_file.is_file(), params_file
        sections = yaml.safe_load(params_file.read_text())
        specs = {spec.name: spec for spec in configuration.nodes}
        assert set(sections) == set(specs), f"{params_file.name}: sections for nodes not in '{name}'"
        for node_name, section in sections.items():
            declared = set(PARAMETER_TABLES[specs[node_name].executable])
            assert set(section) == {"ros__parameters"}
            unknown = set(section["ros__parameters"]) - declared
            assert not unknown, f"{params_file.name}: {node_name} does not declare {sorted(unknown)}"


def test_launch_arguments_set_declared_parameters():
    for name, spec in every_node_spec():
        declared = set(PARAMETER_TABLES[spec.executable])
        arguments = {argument.name for argument in CONFIGURATIONS[name].arguments}
        assert set(spec.arguments.values()) <= declared, spec.name
        assert set(spec.arguments) | set(spec.remapping_arguments.values()) <= arguments, spec.name
        if spec.condition:
            assert spec.condition in arguments


def test_params_file_values_have_the_declared_types():
    """rclpy refuses e.g. an integer for a double parameter; catch it here, not at launch."""
    for _, configuration in CONFIGURATIONS.items():
        sections = yaml.safe_load((config_dir() / configuration.params_file).read_text())
        for spec in configuration.nodes:
            table = PARAMETER_TABLES[spec.executable]
            for parameter, value in sections[spec.name]["ros__parameters"].items():
                expected = table[parameter].type
                assert type(value) is expected, f"{spec.name}.{parameter}: {value!r} is not {expected.__name__}"


def test_resolve_arguments():
    assert [node.name for node in resolve("libero_goal")] == ["spec_vla_policy", "libero_goal_bridge"]
    nodes = resolve("libero_goal", SAMPLE_ARGUMENTS["libero_goal"][1])
    assert [node.name for node in nodes] == ["bag_recorder", "spec_vla_policy", "libero_goal_bridge"]
    recorder, policy, bridge = nodes
    assert recorder.parameters == {"output": "/tmp/bag"}
    assert policy.parameters == {"draft": "llama", "num_draft_tokens": 3, "acceptance": "relaxed",
                                 "relaxed_threshold": 5}
    assert bridge.parameters == {"task_ids": [0, 3], "episodes_per_task": 2, "max_steps": 20}
    assert bridge.ends_run and not policy.ends_run
    [hardware] = resolve("hardware", {"camera_topic": "/wrist/image"})
    assert ("camera/image_raw", "/wrist/image") in hardware.remappings and hardware.parameters == {}
    assert yaml.safe_load((config_dir() / "hardware.yaml").read_text())["spec_vla_policy"]["ros__parameters"][
        "dry_run"] is True
    with pytest.raises(ValueError, match="unknown launch argument"):
        resolve("hardware", {"record": "true"})


@pytest.mark.parametrize("configuration", sorted(CONFIGURATIONS))
def test_runner_commands_carry_the_resolved_nodes(configuration):
    for arguments in SAMPLE_ARGUMENTS[configuration]:
        for node in resolve(configuration, arguments):
            command = node_command(node)
            assert Path(command[0]).name == node.executable and command[1] == "--ros-args"
            pairs = list(zip(command[2::2], command[3::2]))
            assert ("-r", f"__node:={node.name}") in pairs and ("--params-file", node.params_file) in pairs
            assert {value for flag, value in pairs if flag == "-r"} == \
                {f"__node:={node.name}"} | {f"{source}:={target}" for source, target in node.remappings}
            overrides = {value.split(":=")[0]: yaml.safe_load(value.split(":=", 1)[1])
                         for flag, value in pairs if flag == "-p"}
            assert overrides == node.parameters


def test_nodes_get_large_data_transports_unless_the_user_chose(monkeypatch):
    """The launch files and the runner add FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, never over the
    user's own transports setting or Fast DDS profiles file."""
    for name in (BUILTIN_TRANSPORTS, *PROFILES_FILE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    assert node_environment() == {BUILTIN_TRANSPORTS: LARGE_DATA}
    assert Launcher.environment()[BUILTIN_TRANSPORTS] == LARGE_DATA
    monkeypatch.setenv(BUILTIN_TRANSPORTS, "DEFAULT")
    assert node_environment() == {} and Launcher.environment()[BUILTIN_TRANSPORTS] == "DEFAULT"
    monkeypatch.delenv(BUILTIN_TRANSPORTS)
    for name in PROFILES_FILE_VARIABLES:
        monkeypatch.setenv(name, "/etc/my_fastdds.xml")
        assert node_environment() == {} and BUILTIN_TRANSPORTS not in Launcher.environment()
        assert "/etc/my_fastdds.xml" in describe()
        monkeypatch.delenv(name)
    # LOCALHOST discovery makes rmw_fastrtps replace the builtin transports: the runner says so.
    assert "LOCALHOST" not in describe({})
    assert "LOCALHOST" in describe({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda path: path.name)
def test_launch_file_builds_the_same_nodes_as_the_runner(path):
    pytest.importorskip("launch_ros", reason="ROS 2's launch_ros is not installed (it is not on PyPI); "
                                             "the launch files are checked statically above")
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = LaunchContext()
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            context.launch_configurations[entity.name] = entity.default_value[0].perform(context) \
                if entity.default_value else ""
    [opaque] = [entity for entity in description.entities if isinstance(entity, OpaqueFunction)]
    launched = [action for action in opaque.execute(context) if isinstance(action, Node)]
    expected = resolve(module.CONFIGURATION)
    assert [(node.node_package, node.node_executable) for node in launched] == \
        [("spec_vla_ros", node.executable) for node in expected]
    environment = {entity.name[0].perform(context): entity.value[0].perform(context)
                   for entity in description.entities if isinstance(entity, SetEnvironmentVariable)}
    assert environment == node_environment()


START_UP_SETTINGS = ("verifier", "draft", "draft_checkpoint", "device", "dtype", "compile", "unnorm_key",
                     "num_draft_tokens", "acceptance", "relaxed_threshold", "center_crop")


@pytest.mark.parametrize("configuration", sorted(CONFIGURATIONS))
def test_every_start_up_setting_is_a_launch_argument_reaching_the_policy(configuration):
    values = {"verifier": "/models/openvla", "draft": "llama", "draft_checkpoint": "/drafts", "device": "cuda:1",
              "dtype": "bfloat16", "compile": "never", "unnorm_key": "libero_goal_no_noops", "num_draft_tokens": "3",
              "acceptance": "relaxed-guarded", "relaxed_threshold": "5", "center_crop": "false"}
    [policy] = [node for node in resolve(configuration, values) if node.name == "spec_vla_policy"]
    assert policy.parameters == {**values, "num_draft_tokens": 3, "relaxed_threshold": 5, "center_crop": False}
    assert set(START_UP_SETTINGS) <= {argument.name for argument in CONFIGURATIONS[configuration].arguments}


def test_the_documented_hardware_example_starts_with_a_real_format_checkpoint(tmp_path):
    """`ros2 launch spec_vla_ros hardware.launch.py verifier:=DIR dry_run:=false`, as the launch file
    and the README write it, with a checkpoint that does not identify itself as the miniature: the
    policy's configuration (params file + arguments) passes every check the node makes at start."""
    from dataclasses import fields

    from spec_vla_ros.policy import PolicyConfig, VLAPolicy
    from spec_vla_ros.commands.write_miniature import main as write_miniature

    example = (REPO_ROOT / "launch" / "hardware.launch.py").read_text()
    assert "hardware.launch.py verifier:=/models/openvla-7b-finetuned-libero-goal dry_run:=false" in example
    checkpoint = tmp_path / "openvla-7b-finetuned-libero-goal"
    write_miniature([str(checkpoint), "--as-openvla"])
    [policy] = resolve("hardware", {"verifier": str(checkpoint), "dry_run": "false"})
    values = {**yaml.safe_load(Path(policy.params_file).read_text())["spec_vla_policy"]["ros__parameters"],
              **policy.parameters}
    assert values["dry_run"] is False and values["verifier"] == str(checkpoint)
    VLAPolicy.validate(PolicyConfig(**{field.name: values[field.name] for field in fields(PolicyConfig)}))
