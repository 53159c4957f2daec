"""The interface definitions (topics, parameter tables, decode report) and the bag readers load no
ROS, so analysis tools run where ROS is not installed; the launch configuration loads no model
stack. Each check imports in a fresh interpreter (test_import_rules.loaded_after_importing)."""
from test_import_rules import MODEL_STACK, ROS, loaded_after_importing

from spec_vla_ros.ros import topics
from spec_vla_ros.ros.node_parameters import Parameter, defaults, parameter_table


def test_the_interface_modules_and_the_bag_readers_load_no_ros():
    modules = ["spec_vla_ros.ros.topics", "spec_vla_ros.ros.decode_report", "spec_vla_ros.ros.node_parameters",
               "spec_vla_ros.ros.policy_parameters", "sim_bridge.bridge_parameters", "spec_vla_ros.analysis.bags",
               "spec_vla_ros.analysis.bag_analysis", "spec_vla_ros.commands.bag_reindex"]
    assert loaded_after_importing(modules, ROS) == []


def test_the_policy_node_checks_its_settings_before_the_model_stack_loads():
    """The node module, its parameter table and PolicyConfig load neither torch nor transformers'
    models, so a bad parameter is refused in about a second (test_policy_node_configuration)."""
    modules = ["spec_vla_ros.ros.policy_node", "spec_vla_ros.ros.policy_parameters", "spec_vla_ros.policy_config"]
    assert loaded_after_importing(modules, ("torch", "timm", "transformers.models.llama")) == []


def test_the_launch_configuration_loads_no_model_stack():
    """`ros2 launch` imports launch_config (with the topics and the bridge's and recorder's tables)."""
    modules = ["spec_vla_ros.ros.launch_config", "spec_vla_ros.ros.node_parameters", "sim_bridge.bridge_parameters"]
    assert loaded_after_importing(modules, MODEL_STACK) == []


def test_topic_names_are_unique_and_typed():
    names = [topic.name for topic in topics.ALL]
    assert len(names) == len(set(names))
    assert all(topic.msgtype.count("/msg/") == 1 for topic in topics.ALL)
    assert set(topics.RECORDED) <= set(topics.ALL)
    assert topics.EPISODE.qos.transient_local and not topics.CAMERA.qos.reliable and topics.CAMERA.qos.depth == 1


def test_topic_qos_profiles_match_what_the_nodes_used_before():
    """The rclpy profiles are those the nodes were written with (sensor data for the camera)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    assert topics.CAMERA.qos_profile() == QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability,
                                                     durability=qos_profile_sensor_data.durability)
    assert topics.INSTRUCTION.qos_profile() == QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                                          durability=DurabilityPolicy.VOLATILE)
    assert topics.EPISODE.qos_profile() == QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
    assert topics.ACTION.qos_profile() == QoSProfile(depth=10)
    assert topics.DECODE_STATS.message_class().__name__ == "DiagnosticArray"


def test_a_parameter_table_refuses_a_name_twice_and_gives_types_and_defaults():
    table = parameter_table(Parameter("rate", 20.0, "Hz"), Parameter("names", ["a"], "list", read_only=True))
    assert table["rate"].type is float and table["names"].type is list
    assert defaults(table) == {"rate": 20.0, "names": ["a"]}
    try:
        parameter_table(Parameter("rate", 1.0, ""), Parameter("rate", 2.0, ""))
    except ValueError as error:
        assert "'rate' is defined twice" in str(error)
    else:
        raise AssertionError("a name given twice was accepted")


def test_benchmarks_that_start_their_own_processes_name_a_module_that_exists():
    """`spec-vla-bench dds` runs its publisher and subscriber as `python -m MODULE`."""
    import importlib.util

    from spec_vla_ros.benchmarks import dds
    assert dds.MODULE == dds.__name__ and importlib.util.find_spec(dds.MODULE) is not None
