"""The policy node as a separate process, driven over real DDS by a client in this process.

One node serves the whole module (loading it takes ~10 s): draft swaps during a run, rejected
parameter changes, robot commands and dry run, bad inputs, and a camera flood."""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")

from geometry_msgs.msg import TwistStamped  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float64, Float64MultiArray, String  # noqa: E402

from ros_helpers import Client, NodeProcess  # noqa: E402
from spec_vla_ros.control import action_to_velocity, gripper_opening  # noqa: E402
from spec_vla_ros.policy_node import NODE_NAME, PARAMETERS  # noqa: E402
from spec_vla_ros.ros_conversions import image_to_msg  # noqa: E402
from spec_vla_ros.vla.constants import MAX_INSTRUCTION_CHARS  # noqa: E402

pytestmark = pytest.mark.ros

INSTRUCTION = "put the bowl on the plate"
ACTION_TIMEOUT_S = 30          # one action on a busy 2-core machine, with margin
STALE_TIMEOUT_S = 5.0       # generous: a busy machine must not make fresh frames stale
SWAP_SEQUENCE = ("llama", "history", "mamba")


class PolicyClient(Client):
    """Plays the bridge's part: instruction and camera publisher, collects everything published."""

    def __init__(self):
        super().__init__("policy_test_client")
        self.actions = self.collect(Float64MultiArray, "action", convert=lambda m: list(m.data))
        self.twists = self.collect(TwistStamped, "servo/delta_twist_cmds")
        self.grippers = self.collect(Float64, "gripper", convert=lambda m: m.data)
        self.stats = self.collect_stats()
        self.logs = self.collect_logs(NODE_NAME)
        self.camera = self.node.create_publisher(Image, "camera/image_raw", 10)
        self.instruction = self.node.create_publisher(String, "instruction", 10)
        self.image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)

    def send_frame(self, msg: Image | None = None, age_s: float = 0.0) -> None:
        if msg is None:
            msg = image_to_msg(self.image)
        msg.header.stamp = (self.node.get_clock().now() - Duration(seconds=age_s)).to_msg()
        self.camera.publish(msg)

    def step(self) -> dict:
        """One lockstep action: send a frame, wait for its decode statistics."""
        count = len(self.stats)
        self.send_frame()
        self.spin_until(lambda: len(self.stats) > count, ACTION_TIMEOUT_S, "decode_stats for a frame")
        return self.stats[-1]

    def first_step(self) -> dict:
        """The first action, once discovery has completed both ways.

        We see the node's subscriptions before it sees our publishers (and its publishers may not
        see our subscriptions yet): a message sent in between is lost. So instruction and frame are
        resent until decode statistics come back; then the frames still queued are let through, so
        the tests start from a quiet node."""
        deadline = time.monotonic() + ACTION_TIMEOUT_S
        while not self.stats:
            assert time.monotonic() < deadline, f"no decode_stats after {ACTION_TIMEOUT_S} s of resending"
            self.instruction.publish(String(data=INSTRUCTION))
            self.send_frame()
            self.spin_for(1.0)
        count = 0
        while count < len(self.stats):           # quiet for two actions' time: nothing left queued
            count = len(self.stats)
            self.spin_for(1.0 + 2e-3 * self.stats[-1]["policy_ms"])
        return self.stats[-1]

    def expect_warning(self, text: str, publish) -> None:
        """`publish()` makes the node log a warning containing `text` and publish nothing."""
        actions, stats, logs = len(self.actions), len(self.stats), len(self.logs)
        publish()
        self.spin_until(lambda: any(text in log.msg for log in self.logs[logs:] if log.level == Log.WARN),
                        ACTION_TIMEOUT_S, f"a warning containing '{text}'")
        self.spin_for(0.3)
        assert (len(self.actions), len(self.stats)) == (actions, stats), f"published after '{text}'"


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("policy_node")
    parameters = {"draft": SWAP_SEQUENCE[0], "stale_image_timeout_sec": STALE_TIMEOUT_S}
    process = NodeProcess("policy_node", NODE_NAME, parameters, tmp_path / "policy.log", tmp_path)
    client = PolicyClient()
    client.watched.append(process)
    try:
        client.wait_for_subscribers(client.camera)
        client.wait_for_subscribers(client.instruction)
        client.first_step()
        yield client
    finally:
        client.close()
        assert process.stop() == 0, process.log[-3000:]


def test_draft_swap_takes_effect_at_an_action_boundary(policy):
    """llama -> history -> mamba while actions keep coming; one action per frame, none skipped."""
    drafts = [policy.step()["draft"]]
    for draft in SWAP_SEQUENCE[1:]:
        [result] = policy.set_parameters(NODE_NAME, draft=draft)
        assert result.successful, result.reason
        for _ in range(200):                     # the old draft serves while the new one loads
            drafts.append(policy.step()["draft"])
            if drafts[-1] == draft:
                break
        drafts += [policy.step()["draft"] for _ in range(2)]
    # Contiguous runs in the order set: each switch happened between two actions.
    runs = [d for i, d in enumerate(drafts) if i == 0 or d != drafts[i - 1]]
    assert tuple(runs) == SWAP_SEQUENCE, drafts
    counters = [stats["actions"] for stats in policy.stats]
    assert counters == list(range(1, len(counters) + 1))           # no action skipped
    assert len(policy.actions) == len(policy.stats)


def test_invalid_parameter_changes_are_rejected(policy):
    before = policy.step()
    [result] = policy.set_parameters(NODE_NAME, acceptance="relaxed")
    assert result.successful
    for name, value, reason in (("draft", "nope", "nope"),
                                ("draft_checkpoint", "/nonexistent/draft.safetensors", "/nonexistent"),
                                ("relaxed_threshold", -1, "threshold"),
                                ("num_draft_tokens", 0, "num_draft_tokens"),
                                ("control_hz", 0.0, "control_hz"),
                                ("verifier", "/elsewhere", "read-only")):
        [result] = policy.set_parameters(NODE_NAME, **{name: value})
        assert not result.successful, name
        assert reason in result.reason, result.reason
    [result] = policy.set_parameters(NODE_NAME, acceptance="strict")
    assert result.successful
    after = policy.step()                        # still serving, with the same draft
    assert after["draft"] == before["draft"] and after["actions"] == before["actions"] + 1


def test_robot_commands_and_dry_run(policy):
    assert all(result.successful for result in policy.set_parameters(NODE_NAME, control_hz=10.0, frame_id="tool0"))
    policy.spin_for(0.2)
    policy.spin_until(lambda: len(policy.twists) == len(policy.actions) == len(policy.grippers), 5, "commands")
    count = len(policy.actions)
    stats = policy.step()
    policy.spin_until(lambda: len(policy.twists) > count and len(policy.grippers) > count, 5, "twist and gripper")
    action, twist = policy.actions[-1], policy.twists[-1]
    assert action == stats["action"]
    linear, angular = action_to_velocity(action, 10.0)
    assert [twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z] == pytest.approx(linear)
    assert [twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z] == pytest.approx(angular)
    assert twist.header.frame_id == "tool0" and twist.header.stamp.sec > 0
    assert policy.grippers[-1] == gripper_opening(action)

    [result] = policy.set_parameters(NODE_NAME, dry_run=True)
    assert result.successful
    stats = policy.step()
    assert stats["dry_run"] is True
    policy.spin_for(0.3)
    assert len(policy.actions) == len(policy.twists) == len(policy.grippers) == count + 1
    assert all(result.successful for result in policy.set_parameters(
        NODE_NAME, dry_run=False, control_hz=PARAMETERS["control_hz"][0], frame_id=PARAMETERS["frame_id"][0]))


def test_bad_inputs_are_ignored_with_a_warning(policy):
    def frame(**changes):
        msg = image_to_msg(policy.image)
        for name, value in changes.items():
            setattr(msg, name, value)
        return lambda: policy.send_frame(msg)

    before = policy.step()
    policy.expect_warning("encoding 'mono8'", frame(encoding="mono8"))
    policy.expect_warning("bytes with step", frame(data=bytes(100)))            # shorter than 256 x 256 x 3
    policy.expect_warning("empty", frame(height=0, width=0, step=0, data=b""))
    policy.expect_warning("at least 16 x 16", frame(height=8, width=8, step=24, data=bytes(8 * 8 * 3)))
    huge = String(data="x" * (MAX_INSTRUCTION_CHARS + 1))
    policy.expect_warning("characters", lambda: policy.instruction.publish(huge))
    policy.expect_warning("no valid instruction", lambda: policy.send_frame())
    policy.expect_warning("instruction is empty", lambda: policy.instruction.publish(String(data="")))
    policy.instruction.publish(String(data=INSTRUCTION))
    policy.expect_warning("stale_image_timeout_sec", lambda: policy.send_frame(age_s=STALE_TIMEOUT_S + 1))

    stats = policy.step()                        # valid input is served again
    assert stats["actions"] == before["actions"] + 1
    assert stats["inputs_rejected"] == before["inputs_rejected"] + 6    # a frame without instruction is not bad
    assert stats["frames_stale"] == before["frames_stale"] + 1


def test_camera_flood_keeps_only_the_newest_frame(policy):
    """30 Hz for 3 s against a policy slower than that: frames are dropped and counted, the
    latency stays bounded, and no backlog is worked off after the flood. (The depth-1 best-effort
    subscription also lets DDS drop frames the node never sees.)"""
    before = policy.step()
    actions = len(policy.stats)
    period, frames = 1 / 30, 90
    start = time.monotonic()
    for index in range(frames):
        policy.send_frame()
        policy.spin_for(max(0.0, start + (index + 1) * period - time.monotonic()))
    flood_end_s = policy.node.get_clock().now().nanoseconds * 1e-9
    policy.spin_for(2.0)
    # When the node published each action (frame stamp + its latency), not when we processed it.
    published_s = [stats["stamp_s"] + stats["image_to_action_ms"] * 1e-3 for stats in policy.stats[actions:]]
    after_flood = sum(time_s > flood_end_s for time_s in published_s)
    assert after_flood <= 2, f"a backlog of frames was still being worked off: {after_flood} actions after the flood"
    last = policy.stats[-1]
    received = last["frames_received"] - before["frames_received"]
    acted = last["actions"] - before["actions"]
    dropped = last["frames_dropped"] - before["frames_dropped"]
    assert frames / 2 < received <= frames and acted < received
    assert dropped > 0 and acted + dropped + last["frames_stale"] - before["frames_stale"] == received
    latencies = [stats["image_to_action_ms"] - stats["policy_ms"] for stats in policy.stats[actions:]]
    assert max(latencies) < 1000, latencies       # waiting at most for the action in flight
