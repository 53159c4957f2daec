"""Helpers for the multi-process ROS tests: node processes and a client node, both on the ROS
domain of the running test module (conftest's `ros_domain_of_its_own`), with
the DDS settings the launch files and the runner give their nodes (in this process too, so the
clients use the same transports as the nodes)."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

import rclpy
from rcl_interfaces.msg import Log
from rcl_interfaces.srv import DescribeParameters, ListParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from spec_vla_ros.ros import topics
from spec_vla_ros.ros.decode_report import DecodeReport
from spec_vla_ros.ros.launch_config import ResolvedNode, config_dir, node_environment
from spec_vla_ros.ros.launcher import Launcher, node_command

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIENT_TEARDOWN_S = 10.0
os.environ.update(node_environment())


def domain_id() -> int:
    """The running test module's ROS domain (conftest sets ROS_DOMAIN_ID per module)."""
    return int(os.environ["ROS_DOMAIN_ID"])


def ros_environment(**extra) -> dict:
    return dict(Launcher.environment(), ROS_DOMAIN_ID=str(domain_id()), PYTHONPATH=str(REPO_ROOT), **extra)


class Answer(NamedTuple):
    """One decode_stats message: the report, and the stamp of the frame it answers, in seconds."""
    report: DecodeReport
    stamp_s: float


class NodeProcess:
    """One node as a subprocess (the command the launcher would run), its output in a log file."""

    def __init__(self, executable: str, name: str, parameters: dict, log_path: Path, cwd: Path,
                 params_file: str = str(config_dir() / "libero_goal.yaml")):
        self.log_path = log_path
        command = node_command(ResolvedNode(executable, name, params_file, (), parameters))
        with log_path.open("w") as log:
            self.process = subprocess.Popen(command, cwd=cwd, env=ros_environment(), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)

    def stop(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    @property
    def log(self) -> str:
        return self.log_path.read_text()


class Client:
    """A node in this process: collects messages, publishes, spins until a condition holds."""

    def __init__(self, name: str = "test_client"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id())
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.watched: list[NodeProcess] = []

    def collect(self, msg_type, topic: str, qos=10, convert=lambda msg: msg) -> list:
        received = []
        self.node.create_subscription(msg_type, topic, lambda msg: received.append(convert(msg)), qos)
        return received

    def collect_stats(self) -> list[Answer]:
        from diagnostic_msgs.msg import DiagnosticArray

        def convert(msg) -> Answer:
            return Answer(DecodeReport.from_pairs((kv.key, kv.value) for kv in msg.status[0].values),
                          msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        return self.collect(DiagnosticArray, topics.DECODE_STATS.name, convert=convert)

    def collect_logs(self, node_name: str) -> list:
        """The node's log messages (via /rosout)."""
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        logs = []
        self.node.create_subscription(Log, "/rosout", lambda m: logs.append(m) if m.name == node_name else None, qos)
        return logs

    def spin_until(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            for process in self.watched:
                assert process.process.poll() is None, f"{process.log_path.name} exited while waiting for {what}:\n" \
                                                       f"{process.log[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} after {timeout_s} s\n" + "\n".join(
                f"{process.log_path.name}:\n{process.log[-3000:]}" for process in self.watched)
            self.executor.spin_once(timeout_sec=0.05)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for_subscribers(self, publisher, timeout_s: float = 90) -> None:
        self.spin_until(lambda: publisher.get_subscription_count() > 0, timeout_s,
                        f"subscriber on {publisher.topic_name}")

    def set_parameters(self, node_name: str, **values):
        """Set parameters through the node's service (as `ros2 param set`); one result per parameter."""
        client = self.node.create_client(SetParameters, f"/{node_name}/set_parameters")
        self.spin_until(client.service_is_ready, 30, f"the {node_name} parameter service")
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()
                                                    for name, value in values.items()])
        future = client.call_async(request)
        self.spin_until(future.done, 30, "the set_parameters response")
        self.node.destroy_client(client)
        return future.result().results

    def describe_parameters(self, node_name: str) -> dict:
        """name -> ParameterDescriptor of every parameter the node declares (as `ros2 param describe`)."""
        names = self._call(ListParameters, f"/{node_name}/list_parameters", ListParameters.Request()).result.names
        descriptors = self._call(DescribeParameters, f"/{node_name}/describe_parameters",
                                 DescribeParameters.Request(names=names)).descriptors
        return {descriptor.name: descriptor for descriptor in descriptors}

    def _call(self, service_type, service: str, request):
        client = self.node.create_client(service_type, service)
        self.spin_until(client.service_is_ready, 30, f"the {service} service")
        future = client.call_async(request)
        self.spin_until(future.done, 30, f"the {service} response")
        self.node.destroy_client(client)
        return future.result()

    def close(self) -> None:
        """Shut down and destroy the participant now (not at the interpreter's exit), in a thread of
        its own: Fast DDS's TCP teardown can block for good (README, 'Stopping'); the test goes on."""
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        teardown = threading.Thread(target=self.context.destroy, name="client_dds_teardown", daemon=True)
        teardown.start()
        teardown.join(CLIENT_TEARDOWN_S)

