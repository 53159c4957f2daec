"""The policy node as a separate process, driven over real DDS by a client in this process.

One node serves the whole module (loading it takes ~10 s): draft swaps during a run, rejected
parameter changes, robot commands and dry run, bad inputs, camera layouts and compressed frames,
frame sizes at 15 Hz, the no-frame warning, and a camera flood. Configuration errors at start are
checked on nodes of their own, which end before any model loads."""
import os
import subprocess
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")

from geometry_msgs.msg import TwistStamped  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Float64, Float64MultiArray, String  # noqa: E402

from ros_helpers import Client, NodeProcess, ros_environment  # noqa: E402
from test_camera_messages import equivalents, expected_rgb, raw_msg  # noqa: E402
from spec_vla_ros.ros import topics  # noqa: E402
from spec_vla_ros.ros.control import action_to_velocity
from spec_vla_ros.vla.gripper import gripper_opening
from spec_vla_ros.ros.launch_config import ResolvedNode, config_dir  # noqa: E402
from spec_vla_ros.ros.launcher import node_command  # noqa: E402
from spec_vla_ros.ros.decode_report import DecodeReport  # noqa: E402
from spec_vla_ros.drafts.kinds import AR
from spec_vla_ros.ros.policy_node import NODE_NAME  # noqa: E402
from spec_vla_ros.ros.policy_parameters import POLICY_PARAMETERS  # noqa: E402
from spec_vla_ros.ros.conversions import (SUPPORTED_ENCODINGS, image_to_compressed_msg, image_to_msg,  # noqa: E402
                                          msg_to_image)
from spec_vla_ros.vla.constants import ACTION_DIM, MAX_INSTRUCTION_CHARS  # noqa: E402

pytestmark = pytest.mark.ros

INSTRUCTION = "put the bowl on the plate"
ACTION_TIMEOUT_S = 30          # one action on a busy 2-core machine, with margin
STALE_TIMEOUT_S = 5.0       # generous: a busy machine must not make fresh frames stale
SWAP_SEQUENCE = ("llama", "history", "mamba")
RESEND_AFTER_S = 5.0        # a frame sent right after a new subscription matched may be lost once
SEED = int.from_bytes(os.urandom(4), "little")


class PolicyClient(Client):
    """Plays the bridge's part: instruction and camera publisher, collects everything published."""

    def __init__(self):
        super().__init__("policy_test_client")
        self.actions = self.collect(Float64MultiArray, topics.ACTION.name, convert=lambda m: list(m.data))
        self.twists = self.collect(TwistStamped, topics.TWIST.name)
        self.grippers = self.collect(Float64, topics.GRIPPER.name, convert=lambda m: m.data)
        self.stats = self.collect_stats()        # ros_helpers.Answer: (report, answered frame's stamp)
        self.logs = self.collect_logs(NODE_NAME)
        self.camera = self.node.create_publisher(Image, topics.CAMERA.name, 10)
        self.compressed = self.node.create_publisher(CompressedImage, f"{topics.CAMERA.name}/compressed",
                                                     topics.CAMERA.qos_profile())
        self.instruction = self.node.create_publisher(String, topics.INSTRUCTION.name, 10)
        self.image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)

    def act_on(self, msg, publisher=None) -> DecodeReport:
        """The decode statistics answering exactly this frame (matched by its fresh stamp)."""
        msg.header.stamp = self.node.get_clock().now().to_msg()
        stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        publisher = publisher or self.camera

        def answered():
            return next((answer.report for answer in reversed(self.stats) if answer.stamp_s == stamp_s), None)

        publisher.publish(msg)
        deadline = time.monotonic() + RESEND_AFTER_S
        while answered() is None and time.monotonic() < deadline:
            self.spin_for(0.05)
        if answered() is None:
            publisher.publish(msg)
            self.spin_until(lambda: answered() is not None, ACTION_TIMEOUT_S, "decode_stats for a frame")
        return answered()

    def send_frame(self, msg: Image | None = None, age_s: float = 0.0) -> None:
        if msg is None:
            msg = image_to_msg(self.image)
        msg.header.stamp = (self.node.get_clock().now() - Duration(seconds=age_s)).to_msg()
        self.camera.publish(msg)

    def step(self) -> DecodeReport:
        """One lockstep action: send a frame, wait for its decode statistics."""
        count = len(self.stats)
        self.send_frame()
        self.spin_until(lambda: len(self.stats) > count, ACTION_TIMEOUT_S, "decode_stats for a frame")
        return self.stats[-1].report

    def first_step(self) -> DecodeReport:
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
            self.spin_for(1.0 + 2e-3 * self.stats[-1].report.policy_ms)
        return self.stats[-1].report

    def arm(self, data: bool):
        """Call the node's arming service (std_srvs/SetBool) as `ros2 service call` would."""
        from std_srvs.srv import SetBool
        return self._call(SetBool, f"/{NODE_NAME}/arm", SetBool.Request(data=data))

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
    drafts = [policy.step().stats.draft]
    for draft in SWAP_SEQUENCE[1:]:
        [result] = policy.set_parameters(NODE_NAME, draft=draft)
        assert result.successful, result.reason
        for _ in range(200):                     # the old draft serves while the new one loads
            drafts.append(policy.step().stats.draft)
            if drafts[-1] == draft:
                break
        drafts += [policy.step().stats.draft for _ in range(2)]
    # Contiguous runs in the order set: each switch happened between two actions.
    runs = [d for i, d in enumerate(drafts) if i == 0 or d != drafts[i - 1]]
    assert tuple(runs) == SWAP_SEQUENCE, drafts
    counters = [answer.report.actions for answer in policy.stats]
    assert counters == list(range(1, len(counters) + 1))           # no action skipped
    assert len(policy.actions) == len(policy.stats)


def test_draft_tree_switches_between_chain_and_trees_at_run_time(policy):
    """draft_tree '' -> hybrid:50 -> tree:16 -> '' while actions keep coming: every action's
    statistics name the shape it was decoded in, each switch falls between two actions, and a tree
    pass verifies more proposals than a chain can: a chain's first pass (the early guess, verified
    with the prefill) holds at most the 7 tokens of an action and each later pass at most
    num_draft_tokens. A chain length given as a tree, or a shape out of range, is refused and
    changes nothing."""
    chain_limit = POLICY_PARAMETERS["num_draft_tokens"].default
    chain = f"chain:{chain_limit}"

    def fits_a_chain(stats) -> bool:
        first, *later = stats.proposed_per_pass
        return first <= ACTION_DIM and all(proposed <= chain_limit for proposed in later)

    sequence = (("hybrid:50", "hybrid:50:6:8"), ("tree:16", "tree:16:6:8"), ("", chain))
    reports = [policy.step()]
    for text, name in sequence:
        [result] = policy.set_parameters(NODE_NAME, draft_tree=text)
        assert result.successful, result.reason
        for _ in range(200):     # the old decoder serves while the new one is built; then a tree's wide pass
            reports.append(policy.step())
            stats = reports[-1].stats
            if stats.tree_shape == name and (name == chain or not fits_a_chain(stats)):
                break
        reports.append(policy.step())
    shapes = [report.stats.tree_shape for report in reports]
    runs = [shape for i, shape in enumerate(shapes) if i == 0 or shape != shapes[i - 1]]
    assert runs == [chain] + [name for _, name in sequence], shapes
    for report in reports:
        if report.stats.tree_shape == chain:
            assert fits_a_chain(report.stats), report.stats
    for _, name in sequence[:2]:
        assert any(not fits_a_chain(report.stats) for report in reports if report.stats.tree_shape == name), name
    assert [report.actions for report in reports] == list(range(reports[0].actions, reports[0].actions + len(reports)))
    for text, reason in (("chain:3", "num_draft_tokens"), ("tree:0", "nodes"), ("bush:5", "expected")):
        [refused] = policy.set_parameters(NODE_NAME, draft_tree=text)
        assert not refused.successful and reason in refused.reason, (text, refused.reason)
    assert policy.step().stats.tree_shape == chain


def test_the_node_declares_its_parameter_table(policy):
    """Every parameter of policy_parameters, with its description, type and read-only flag; no other
    but rclpy's own."""
    from rclpy.parameter import Parameter
    described = policy.describe_parameters(NODE_NAME)
    assert set(described) - set(POLICY_PARAMETERS) <= {"use_sim_time", "start_type_description_service"}
    for name, parameter in POLICY_PARAMETERS.items():
        descriptor = described[name]
        assert (descriptor.description, descriptor.read_only) == (parameter.description, parameter.read_only), name
        assert descriptor.type == Parameter.Type.from_parameter_value(parameter.default).value, name
    assert {name for name, p in POLICY_PARAMETERS.items() if p.read_only} == {
        "verifier", "unnorm_key", "device", "dtype", "compile", "threads"}


def test_invalid_parameter_changes_are_rejected(policy):
    before = policy.step()
    [result] = policy.set_parameters(NODE_NAME, acceptance="relaxed")
    assert result.successful
    for name, value, reason in (("draft", "nope", "nope"),
                                ("draft_checkpoint", "/nonexistent/draft.safetensors", "/nonexistent"),
                                ("relaxed_threshold", -1, "threshold"),
                                ("num_draft_tokens", 0, "num_draft_tokens"),
                                ("control_hz", 0.0, "control_hz"),
                                ("verifier", "/elsewhere", "read-only"),
                                ("compile", "never", "read-only")):
        [result] = policy.set_parameters(NODE_NAME, **{name: value})
        assert not result.successful, name
        assert reason in result.reason, result.reason
    [result] = policy.set_parameters(NODE_NAME, acceptance="strict")
    assert result.successful
    after = policy.step()                        # still serving, with the same draft
    assert after.stats.draft == before.stats.draft and after.actions == before.actions + 1


def test_robot_commands_and_dry_run(policy):
    assert all(result.successful for result in policy.set_parameters(NODE_NAME, control_hz=10.0, frame_id="tool0"))
    policy.spin_for(0.2)
    policy.spin_until(lambda: len(policy.twists) == len(policy.actions) == len(policy.grippers), 5, "commands")
    count = len(policy.actions)
    report = policy.step()
    policy.spin_until(lambda: len(policy.twists) > count and len(policy.grippers) > count, 5, "twist and gripper")
    action, twist = policy.actions[-1], policy.twists[-1]
    assert action == report.action
    linear, angular = action_to_velocity(action, 10.0)
    assert [twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z] == pytest.approx(linear)
    assert [twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z] == pytest.approx(angular)
    assert twist.header.frame_id == "tool0" and twist.header.stamp.sec > 0
    assert policy.grippers[-1] == gripper_opening(action)

    [result] = policy.set_parameters(NODE_NAME, dry_run=True)
    assert result.successful
    report = policy.step()
    assert report.dry_run is True
    policy.spin_for(0.3)
    assert len(policy.actions) == len(policy.twists) == len(policy.grippers) == count + 1
    assert all(result.successful for result in policy.set_parameters(
        NODE_NAME, control_hz=POLICY_PARAMETERS["control_hz"].default, frame_id=POLICY_PARAMETERS["frame_id"].default))


def test_motion_is_turned_on_only_by_the_arming_service(policy):
    """dry_run on: always allowed; off by a parameter set: refused with the reason, nothing moves;
    off through ~/arm (std_srvs/SetBool): allowed and logged, actions published again."""
    assert policy.arm(False).success                                  # disarm (as a parameter set could)
    count = len(policy.actions)
    [refused] = policy.set_parameters(NODE_NAME, dry_run=False)
    assert not refused.successful and "arming service" in refused.reason and "/arm" in refused.reason
    assert policy.step().dry_run is True
    policy.spin_for(0.3)
    assert len(policy.actions) == count                               # still nothing published
    armed = policy.arm(True)
    assert armed.success and "ARMED" in armed.message
    policy.spin_until(lambda: any("ARMED" in log.msg for log in policy.logs), 5, "the arming log line")
    report = policy.step()
    policy.spin_until(lambda: len(policy.actions) > count, 5, "an action after arming")
    assert report.dry_run is False and policy.actions[-1] == report.action


def test_malformed_requests_do_not_end_the_node(policy):
    """rclpy raises inside the executor for a SetParameters request whose ParameterValue has type 99
    (it aborted the node); such requests are counted in inputs_rejected and the node serves on."""
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterValue
    from rcl_interfaces.srv import SetParameters, SetParametersAtomically

    before = policy.step()
    malformed = [(SetParameters, "set_parameters", ParameterValue(type=99, string_value="mamba")),
                 (SetParametersAtomically, "set_parameters_atomically", ParameterValue(type=99)),
                 (SetParameters, "set_parameters", ParameterValue(type=200, integer_value=3))]
    for service_type, service, value in malformed:
        client = policy.node.create_client(service_type, f"/{NODE_NAME}/{service}")
        policy.spin_until(client.service_is_ready, 30, f"the {service} service")
        client.call_async(service_type.Request(parameters=[ParameterMsg(name="draft", value=value)]))
        policy.spin_for(0.5)
    after = policy.step()                        # the process is alive (watched) and still acting
    assert after.actions == before.actions + 1 and after.stats.draft == before.stats.draft
    assert after.inputs_rejected >= before.inputs_rejected + 1
    policy.spin_until(lambda: any("ignored an exception" in log.msg for log in policy.logs), 10,
                      "the log line of an ignored request")


def test_bad_inputs_are_ignored_with_a_warning(policy):
    def frame(**changes):
        msg = image_to_msg(policy.image)
        for name, value in changes.items():
            setattr(msg, name, value)
        return lambda: policy.send_frame(msg)

    before = policy.step()
    policy.expect_warning("encoding '16UC1' is not supported", frame(encoding="16UC1"))
    policy.expect_warning("expected step x height", frame(data=bytes(100)))     # shorter than 256 x 256 x 3
    policy.expect_warning("empty", frame(height=0, width=0, step=0, data=b""))
    policy.expect_warning("at least 16 x 16", frame(height=8, width=8, step=24, data=bytes(8 * 8 * 3)))
    huge = String(data="x" * (MAX_INSTRUCTION_CHARS + 1))
    policy.expect_warning("characters", lambda: policy.instruction.publish(huge))
    policy.expect_warning("no valid instruction", lambda: policy.send_frame())
    policy.expect_warning("instruction is empty", lambda: policy.instruction.publish(String(data="")))
    policy.instruction.publish(String(data=INSTRUCTION))
    policy.expect_warning("stale_image_timeout_sec", lambda: policy.send_frame(age_s=STALE_TIMEOUT_S + 1))

    report = policy.step()                       # valid input is served again
    assert report.actions == before.actions + 1
    assert report.inputs_rejected == before.inputs_rejected + 6    # a frame without instruction is not bad
    assert report.frames_stale == before.frames_stale + 1


@pytest.fixture
def autoregressive(policy):
    """No draft (AR) while the test runs: identical inputs then give identical actions (speculative
    decoding's verification passes of varying shape may flip near-tied tokens)."""
    previous = policy.step().stats.draft
    [result] = policy.set_parameters(NODE_NAME, draft=AR)
    assert result.successful, result.reason
    for _ in range(200):
        if policy.step().stats.draft == AR:
            break
    assert policy.stats[-1].report.stats.draft == AR
    yield policy
    [result] = policy.set_parameters(NODE_NAME, draft=previous)
    assert result.successful, result.reason


def fresh_rgb(test_name: str, height: int = 200, width: int = 240) -> np.ndarray:
    print(f"seed {SEED}")
    return np.random.default_rng([SEED, len(test_name)]).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_every_camera_layout_gives_the_rgb8_action(autoregressive, request):
    """Each supported encoding, big-endian flag and padded rows: the action of the equivalent
    rgb8 frame, from the same node; the node keeps serving throughout."""
    policy = autoregressive
    rgb = fresh_rgb(request.node.name)
    rng = np.random.default_rng([SEED, 1])
    reference = {name: policy.act_on(image_to_msg(pixels)).action
                 for name, pixels in (("colour", rgb), ("grey", expected_rgb(rgb, "mono8")))}
    before = policy.stats[-1].report
    layouts = equivalents(rgb, rng)
    cases = [(encoding, big_endian, padding) for encoding in SUPPORTED_ENCODINGS
             for big_endian, padding in ((False, 0), (True, int(rng.integers(1, 40))))]
    for encoding, big_endian, padding in cases:
        report = policy.act_on(raw_msg(layouts[encoding], encoding, big_endian, padding, rng))
        expected = reference["grey" if encoding.startswith("mono") else "colour"]
        assert report.action == expected, f"{encoding} big-endian {big_endian} padding {padding}"
    assert policy.stats[-1].report.inputs_rejected == before.inputs_rejected


def test_compressed_frames_give_the_action_of_their_pixels(autoregressive, request):
    """image_transport compressed: PNG (lossless) and JPEG frames give the action of the rgb8 frame
    of their decoded pixels; an unknown format is refused; back to raw afterwards."""
    policy = autoregressive
    rgb = fresh_rgb(request.node.name)
    png, jpeg = image_to_compressed_msg(rgb, "png"), image_to_compressed_msg(rgb, "jpeg")
    jpeg_pixels = msg_to_image(jpeg)
    assert not np.array_equal(jpeg_pixels, rgb)                     # JPEG is lossy: a different frame
    expected = {"png": policy.act_on(image_to_msg(rgb)).action,
                "jpeg": policy.act_on(image_to_msg(jpeg_pixels)).action}
    [result] = policy.set_parameters(NODE_NAME, image_transport="compressed")
    assert result.successful, result.reason
    try:
        policy.wait_for_subscribers(policy.compressed)
        for name, msg in (("png", png), ("jpeg", jpeg)):
            for format_string in (msg.format, name):                   # as image_transport writes it, and bare
                msg.format = format_string
                assert policy.act_on(msg, policy.compressed).action == expected[name], format_string
        theora = CompressedImage(format="theora")
        theora.data = bytes(jpeg.data)
        policy.expect_warning("names no codec", lambda: policy.compressed.publish(theora))
        garbage = CompressedImage(format="jpeg")
        garbage.data = os.urandom(1000)
        policy.expect_warning("could not decode", lambda: policy.compressed.publish(garbage))
    finally:
        [result] = policy.set_parameters(NODE_NAME, image_transport="raw")
        assert result.successful, result.reason
    assert policy.act_on(image_to_msg(rgb)).action == expected["png"]    # raw again


def test_large_frames_arrive_like_small_ones(policy):
    """640x480 and 1280x720 rgb8 frames at 15 Hz reach the node (started as the runner starts it,
    with the package's DDS settings) with no more loss than 256x256 frames. Counted by the node
    (frames_received, whether or not it had time to act on them), read from the answers to a
    small frame before and after each burst."""
    frames, period = 30, 1 / 15
    rng = np.random.default_rng(SEED)
    marker = image_to_msg(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    arrived = {}
    for width, height in ((256, 256), (640, 480), (1280, 720)):
        msg = image_to_msg(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        before = policy.act_on(marker).frames_received
        start = time.monotonic()
        for index in range(frames):
            policy.send_frame(msg)
            policy.spin_for(max(0.0, start + (index + 1) * period - time.monotonic()))
        policy.spin_for(1.0)
        arrived[f"{width}x{height}"] = policy.act_on(marker).frames_received - before - 1
    print(f"received / sent at 15 Hz: {arrived} / {frames}")
    small = arrived["256x256"]
    assert small >= frames * 0.8, arrived
    assert arrived["640x480"] >= small - 3 and arrived["1280x720"] >= small - 3, arrived


def test_warns_when_the_camera_sends_nothing(policy):
    """A publisher but no frame: the warning names large frames over default DDS transports and the
    fix. No publisher at all for longer: the warning names the domain and the transports."""
    def warned(text: str, since: int) -> bool:
        return any(text in log.msg and "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA" in log.msg
                   for log in policy.logs[since:] if log.level == Log.WARN)

    [result] = policy.set_parameters(NODE_NAME, no_frame_warning_sec=1.0)
    assert result.successful
    try:
        policy.step()
        logs = len(policy.logs)
        assert policy.camera.get_subscription_count() > 0
        policy.spin_until(lambda: warned("no frame arrived", logs), 30, "the no-frame warning")
        policy.node.destroy_publisher(policy.camera)
        logs = len(policy.logs)
        policy.spin_until(lambda: warned("no publisher on camera topic", logs), 30, "the no-publisher warning")
    finally:
        policy.camera = policy.node.create_publisher(Image, topics.CAMERA.name, 10)
        [result] = policy.set_parameters(NODE_NAME,
                                         no_frame_warning_sec=POLICY_PARAMETERS["no_frame_warning_sec"].default)
        assert result.successful
    policy.wait_for_subscribers(policy.camera)
    assert policy.act_on(image_to_msg(policy.image)).actions > 0          # still serving


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
    published_s = [answer.stamp_s + answer.report.image_to_action_ms * 1e-3 for answer in policy.stats[actions:]]
    after_flood = sum(time_s > flood_end_s for time_s in published_s)
    assert after_flood <= 2, f"a backlog of frames was still being worked off: {after_flood} actions after the flood"
    last = policy.stats[-1].report
    received = last.frames_received - before.frames_received
    acted = last.actions - before.actions
    dropped = last.frames_dropped - before.frames_dropped
    assert frames / 2 < received <= frames and acted < received
    assert dropped > 0 and acted + dropped + last.frames_stale - before.frames_stale == received
    latencies = [answer.report.image_to_action_ms - answer.report.policy_ms for answer in policy.stats[actions:]]
    assert max(latencies) < 1000, latencies       # waiting at most for the action in flight


@pytest.mark.parametrize("overrides, reason", [
    ({"unnorm_key": "no_such_dataset"}, "unnorm_key 'no_such_dataset'"),
    ({"draft": AR, "num_draft_tokens": 0}, "num_draft_tokens"),
    ({"verifier": "/nonexistent/openvla"}, "/nonexistent/openvla"),
    ({"image_transport": "theora"}, "image_transport 'theora'"),
], ids=["unnorm_key", "num_draft_tokens_without_draft", "verifier", "image_transport"])
def test_configuration_errors_end_the_node_before_any_model_loads(tmp_path, overrides, reason):
    """Exit 2 with the one line 'invalid configuration: ...', no traceback, nothing loaded."""
    command = node_command(ResolvedNode("policy_node", NODE_NAME, str(config_dir() / "libero_goal.yaml"), (),
                                        overrides))
    result = subprocess.run(command, env=ros_environment(), cwd=tmp_path, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    [line] = [line for line in output.splitlines() if "invalid configuration" in line]
    assert reason in line and line.split("]: ", 1)[1].startswith("invalid configuration: "), line
    assert "Traceback" not in output and "loading verifier" not in output, output


def test_a_parameter_of_the_wrong_type_is_a_configuration_error(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"{NODE_NAME}:\n  ros__parameters:\n    control_hz: fast\n")
    command = node_command(ResolvedNode("policy_node", NODE_NAME, str(params_file), (), {}))
    result = subprocess.run(command, env=ros_environment(), cwd=tmp_path, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    [line] = [line for line in output.splitlines() if "invalid configuration" in line]
    assert "control_hz" in line and "Traceback" not in output and "loading verifier" not in output, output
