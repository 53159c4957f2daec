"""`spec-vla-bench dds`: how many camera frames of each size arrive over DDS, default Fast DDS
transports vs what the launch files and spec-vla-launch set (spec_vla_ros.ros.dds).

For each transport setting and frame size, a subscriber and a publisher run as two processes (a
ROS domain of their own): the publisher sends `--frames` rgb8 frames at `--hz` with the camera
QoS of the policy node (sensor data, best effort, depth 1) once it has matched the subscriber,
then says how many it sent on a reliable topic; the subscriber counts the frames that arrived
whole and the UDP receive-buffer errors of its network namespace (/proc/net/snmp) meanwhile.

`--publisher-prefix` / `--subscriber-prefix` run a role under a command prefix, e.g. in a network
namespace: scripts/dds_two_hosts.sh measures two "hosts" joined by a veth that way.

The command line: commands/benchmarks/dds.py. The two roles run this module (`main`).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

from ..ros.dds import BUILTIN_TRANSPORTS, PROFILES_FILE_VARIABLES, dds_environment

MODULE = "spec_vla_ros.benchmarks.dds"      # the publisher and subscriber processes run this module
IMAGE_TOPIC = "dds_benchmark/image"
DONE_TOPIC = "dds_benchmark/done"
DEFAULT_SIZES = ("256x256", "640x480", "1280x720")
MATCH_TIMEOUT_S = 30.0
SETTLE_S = 2.0              # after matching: discovery completes both ways before the first frame
LINGER_S = 3.0              # after the last frame: late fragments and the 'done' message arrive


def benchmark(sizes: list[str], frames: int, hz: float, transports: list[str], publisher_prefix: str = "",
              subscriber_prefix: str = "", discovery_range: str = "", json_path: str | None = None) -> list[dict]:
    """`measure` for each transport setting and frame size; prints the table row by row and returns
    the rows (also written to `json_path` if given)."""
    rows = []
    print(f"{frames} frames per size at {hz:g} Hz, rgb8, sensor-data QoS (best effort, depth 1)")
    print("| transports | frame | received / sent | UDP receive-buffer errors |\n|---|---|---|---|")
    for transport in transports:
        for size in sizes:
            result = measure(size, frames, hz, transport, publisher_prefix, subscriber_prefix, discovery_range)
            rows.append(result)
            print(f"| {result['transports']} | {size} | {result['received']} / {result['sent']} | "
                  f"{result['udp_rcvbuf_errors']} |", flush=True)
    if json_path:
        with open(json_path, "w") as file:
            json.dump(rows, file, indent=1)
    return rows


def transport_environment(transports: str, discovery_range: str, domain_id: int) -> dict:
    environment = {name: value for name, value in os.environ.items()
                   if name not in (BUILTIN_TRANSPORTS, *PROFILES_FILE_VARIABLES)}
    if transports == "package":
        environment.update(dds_environment(environment))
    environment.update(ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
    if discovery_range:
        environment["ROS_AUTOMATIC_DISCOVERY_RANGE"] = discovery_range
    return environment


def measure(size: str, frames: int, hz: float, transports: str, publisher_prefix: str = "",
            subscriber_prefix: str = "", discovery_range: str = "") -> dict:
    """One publisher -> subscriber run; the subscriber's result dict."""
    domain_id = 100 + (os.getpid() + int(time.monotonic())) % 100
    environment = transport_environment(transports, discovery_range, domain_id)
    role = [sys.executable, "-m", MODULE]
    timeout_s = MATCH_TIMEOUT_S + SETTLE_S + frames / hz + LINGER_S + 30
    subscriber = subprocess.Popen(shlex.split(subscriber_prefix) + role + ["subscribe", size, str(timeout_s)],
                                  env=environment, stdout=subprocess.PIPE, text=True)
    publisher = subprocess.Popen(shlex.split(publisher_prefix) + role + ["publish", size, str(frames), str(hz)],
                                 env=environment, stdout=subprocess.PIPE, text=True)
    try:
        output, _ = subscriber.communicate(timeout=timeout_s + 30)
        publisher_output, _ = publisher.communicate(timeout=60)
    finally:
        for process in (publisher, subscriber):
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if subscriber.returncode != 0 or not lines:
        raise RuntimeError(f"the subscriber failed (exit {subscriber.returncode}): {output[-2000:]}")
    label = "default" if transports == "default" else \
        f"{BUILTIN_TRANSPORTS}={environment.get(BUILTIN_TRANSPORTS, 'yours')}"
    result = dict(json.loads(lines[-1]), transports=label, size=size, publisher=publisher_output.strip())
    if result["sent"] is None:          # the publisher never matched the subscriber: nothing was sent
        result["sent"] = f"0 ({result['publisher'] or 'publisher exit ' + str(publisher.returncode)})"
    return result


def parse_size(size: str) -> tuple[int, int]:
    width, _, height = size.lower().partition("x")
    return int(width), int(height)


class _Role:
    def __init__(self, name: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        rclpy.init()
        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=min(left, 0.05))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def _done_qos():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def udp_receive_buffer_errors() -> int:
    """RcvbufErrors of this network namespace's UDP counters (Linux), -1 where unknown."""
    try:
        with open("/proc/net/snmp") as file:
            udp = [line.split() for line in file if line.startswith("Udp:")]
        return int(udp[1][udp[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return -1


def subscribe(size: str, timeout_s: float) -> dict:
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from ..ros.topics import CAMERA

    width, height = parse_size(size)
    role = _Role("dds_benchmark_subscriber")
    received, sent = set(), []
    role.node.create_subscription(Image, IMAGE_TOPIC, lambda msg: received.add(msg.header.frame_id) if (
        msg.width, msg.height, len(msg.data)) == (width, height, width * height * 3) else None, CAMERA.qos_profile())
    role.node.create_subscription(String, DONE_TOPIC, lambda msg: sent.append(int(msg.data)), _done_qos())
    errors_before = udp_receive_buffer_errors()
    deadline = time.monotonic() + timeout_s
    while not sent and time.monotonic() < deadline:
        role.spin_for(0.1)
    role.spin_for(0.5)
    errors = udp_receive_buffer_errors()
    role.close()
    return {"received": len(received), "sent": sent[0] if sent else None,
            "udp_rcvbuf_errors": errors - errors_before if min(errors, errors_before) >= 0 else None}


def publish(size: str, frames: int, hz: float) -> int:
    import numpy as np
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from ..ros.conversions import image_to_msg
    from ..ros.topics import CAMERA

    width, height = parse_size(size)
    role = _Role("dds_benchmark_publisher")
    images = role.node.create_publisher(Image, IMAGE_TOPIC, CAMERA.qos_profile())
    done = role.node.create_publisher(String, DONE_TOPIC, _done_qos())
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while images.get_subscription_count() == 0 or done.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            print(f"no subscriber matched within {MATCH_TIMEOUT_S:.0f} s", flush=True)
            role.close()
            return 1
        role.spin_for(0.1)
    role.spin_for(SETTLE_S)
    msg = image_to_msg(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    start = time.monotonic()
    for index in range(frames):
        msg.header.frame_id = str(index)
        msg.header.stamp = role.node.get_clock().now().to_msg()
        images.publish(msg)
        role.spin_for(max(0.0, start + (index + 1) / hz - time.monotonic()))
    role.spin_for(LINGER_S)
    done.publish(String(data=str(frames)))
    role.spin_for(LINGER_S)
    role.close()
    return 0


ROLES_USAGE = (f"usage: python -m {MODULE} subscribe SIZE TIMEOUT_S | publish SIZE FRAMES HZ "
               "(the roles `measure` starts; the benchmark itself is spec-vla-bench dds)")


def main(argv=None) -> int:
    """One role's process, as `measure` starts it: `subscribe SIZE TIMEOUT_S` (prints its result as
    a JSON line) or `publish SIZE FRAMES HZ`."""
    role, *values = list(sys.argv[1:] if argv is None else argv) or [""]
    if role == "subscribe" and len(values) == 2:
        print(json.dumps(subscribe(values[0], float(values[1]))), flush=True)
        return 0
    if role == "publish" and len(values) == 3:
        return publish(values[0], int(values[1]), float(values[2]))
    print(ROLES_USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
