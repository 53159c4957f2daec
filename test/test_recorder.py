"""The bag recorder as a separate process: messages published here over real DDS are in the
bag after SIGINT, and the bag reads back with rosbags and with mcap-ros2-support; after SIGKILL,
what it received reaches the disk without a close, is recovered, analysed and reindexed."""
import json
import signal
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")

from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402

from ros_helpers import Client, NodeProcess  # noqa: E402
from spec_vla_ros.ros import topics  # noqa: E402
from spec_vla_ros.ros.dds import BUILTIN_TRANSPORTS  # noqa: E402
from spec_vla_ros.ros.node_parameters import RECORDER_PARAMETERS  # noqa: E402
from spec_vla_ros.ros.recorder_node import NODE_NAME  # noqa: E402
from spec_vla_ros.ros.conversions import action_to_msg, image_to_msg  # noqa: E402

pytestmark = pytest.mark.ros

DEFAULT_TOPICS = RECORDER_PARAMETERS["topics"].default
COUNTS = {"/camera/image_raw": 5, "/instruction": 2, "/action": 4, "/episode": 1, "/extra/chatter": 3}


@pytest.fixture
def recorded_bag(tmp_path):
    """Publish COUNTS messages (the camera best effort, like a camera driver; `extra/chatter`, a
    type the recorder learns from the graph), then SIGINT the recorder right after the last one."""
    bag = tmp_path / "bag"
    parameters = {"output": str(bag), "topics": DEFAULT_TOPICS + ["extra/chatter"]}
    recorder = NodeProcess("bag_recorder", NODE_NAME, parameters, tmp_path / "recorder.log", tmp_path)
    client = Client()
    client.watched.append(recorder)
    publishers = {"/camera/image_raw": client.node.create_publisher(Image, topics.CAMERA.name,
                                                                    qos_profile_sensor_data),
                  "/instruction": client.node.create_publisher(String, topics.INSTRUCTION.name, 10),
                  "/action": client.node.create_publisher(Float64MultiArray, topics.ACTION.name, 10),
                  "/episode": client.node.create_publisher(String, topics.EPISODE.name, topics.EPISODE.qos_profile()),
                  "/extra/chatter": client.node.create_publisher(String, "extra/chatter", 10)}
    image = np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3)
    messages = {"/camera/image_raw": lambda i: image_to_msg(image, frame_id=f"frame{i}"),
                "/instruction": lambda i: String(data=f"instruction {i}"),
                "/action": lambda i: action_to_msg([i, 0, 0, 0, 0, 0, 1]),
                "/episode": lambda i: String(data=json.dumps({"episode": i, "success": False})),
                "/extra/chatter": lambda i: String(data=f"chatter {i}")}
    try:
        for publisher in publishers.values():
            client.wait_for_subscribers(publisher, timeout_s=60)
        client.spin_for(1.0)      # the recorder moves the camera to best effort once it sees our publisher
        for topic, count in COUNTS.items():
            for index in range(count):
                publishers[topic].publish(messages[topic](index))
                client.spin_for(0.02)
        recorder.process.send_signal(signal.SIGINT)
        assert recorder.process.wait(30) == 0, recorder.log
    finally:
        client.close()
        recorder.stop()
    return bag, recorder.log


def test_bag_reads_back_with_rosbags_and_mcap(recorded_bag):
    from mcap_ros2.reader import read_ros2_messages
    from rosbags.highlevel import AnyReader

    bag, log = recorded_bag
    assert "bag closed" in log and "best effort" in log
    assert (bag / "metadata.yaml").exists()
    with AnyReader([bag]) as reader:
        counts = {connection.topic: connection.msgcount for connection in reader.connections}
        assert {topic: count for topic, count in counts.items() if count} == COUNTS
        assert set(counts) >= {"/" + topic for topic in DEFAULT_TOPICS}     # subscribed from the start
        msgtypes = {connection.topic: connection.msgtype for connection in reader.connections}
        assert {"/" + topic.name: topic.msgtype for topic in topics.RECORDED}.items() <= msgtypes.items()
        by_topic = {}
        for connection, _timestamp, raw in reader.messages():
            by_topic.setdefault(connection.topic, []).append(reader.deserialize(raw, connection.msgtype))
    assert [m.header.frame_id for m in by_topic["/camera/image_raw"]] == [f"frame{i}" for i in range(5)]
    assert by_topic["/camera/image_raw"][0].data.tobytes() == np.arange(64 * 48 * 3, dtype=np.uint8).tobytes()
    assert [list(m.data) for m in by_topic["/action"]] == [[i, 0, 0, 0, 0, 0, 1] for i in range(4)]
    assert by_topic["/extra/chatter"][-1].data == "chatter 2"

    [mcap_file] = bag.glob("*.mcap")
    mcap_counts = {}
    for message in read_ros2_messages(str(mcap_file)):
        mcap_counts[message.channel.topic] = mcap_counts.get(message.channel.topic, 0) + 1
        if message.channel.topic == "/episode":
            assert json.loads(message.ros_msg.data) == {"episode": 0, "success": False}
    assert mcap_counts == COUNTS


def test_sigkilled_recorder_bag_is_recovered_analysed_and_reindexed(tmp_path, capsys, monkeypatch):
    """The recorder flushes on its own: a first batch of messages reaches the disk while it runs
    (no close); a second batch is published and the recorder SIGKILLed at once. The bag then has no
    summary and no metadata.yaml; the analyzer recovers it with a notice, and the reindexed copy
    opens with rosbags and mcap's indexed reader, with the same messages.

    Recorder and client use Fast DDS's default transports here (the frames are tiny): once, in a
    full suite run, closing this process's participant after the SIGKILL hung for good inside
    Fast DDS's TCP transport (LARGE_DATA), its teardown waiting on a channel's blocked read."""
    monkeypatch.setenv(BUILTIN_TRANSPORTS, "DEFAULT")       # read by both participants as they are made
    from mcap.reader import make_reader
    from rosbags.highlevel import AnyReader

    from spec_vla_ros.commands import analyze as bag_analysis
    from spec_vla_ros.commands import bag_reindex
    from spec_vla_ros.analysis.bags import Recovery, read_bag, recovered_records, unfinished_mcap_files

    bag = tmp_path / "bag"
    recorder = NodeProcess("bag_recorder", NODE_NAME, {"output": str(bag)}, tmp_path / "recorder.log", tmp_path)
    client = Client()
    client.watched.append(recorder)
    actions = client.node.create_publisher(Float64MultiArray, topics.ACTION.name, 10)
    episodes = client.node.create_publisher(String, topics.EPISODE.name, topics.EPISODE.qos_profile())
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    camera = client.node.create_publisher(Image, topics.CAMERA.name, qos_profile_sensor_data)
    first_batch = 6

    def on_disk() -> list:
        files = unfinished_mcap_files(bag)
        return [(c.topic, bytes(m.data)) for _, c, m in recovered_records(Recovery(files))] if files else []

    try:
        for publisher in (actions, episodes, camera):
            client.wait_for_subscribers(publisher, timeout_s=60)
        for index in range(first_batch):
            actions.publish(action_to_msg([index, 0, 0, 0, 0, 0, 1]))
            client.spin_for(0.02)
        deadline = time.monotonic() + 60            # generous: a loaded machine; flushes are every 0.5 s
        while sum(topic == "/action" for topic, _ in on_disk()) < first_batch:
            assert time.monotonic() < deadline and recorder.process.poll() is None, recorder.log
            client.spin_for(0.2)
        for index in range(3):
            camera.publish(image_to_msg(image, frame_id=f"frame{index}"))
            actions.publish(action_to_msg([first_batch + index, 0, 0, 0, 0, 0, 1]))
        episodes.publish(String(data=json.dumps({"episode": 0})))     # malformed: no instruction etc.
        client.spin_for(0.05)
        recorder.process.send_signal(signal.SIGKILL)
        assert recorder.process.wait(30) == -signal.SIGKILL
    finally:
        client.close()
        recorder.stop()

    [mcap_file] = bag.glob("*.mcap")
    assert not (bag / "metadata.yaml").exists() and unfinished_mcap_files(bag) == [mcap_file]
    assert not mcap_file.read_bytes().endswith(b"\x89MCAP0\r\n")      # no summary, no footer
    with pytest.raises(Exception):
        AnyReader([bag]).open()

    recovered = on_disk()
    run = read_bag(bag)
    assert run.recovery is not None and run.recovery.messages == len(recovered)
    assert [action[0] for action in run.actions][:first_batch] == list(range(first_batch))
    assert bag_analysis.main([str(bag), "--output", str(tmp_path / "report")]) == 0
    assert f"recovered {len(recovered)} messages from an unfinished bag {bag}" in capsys.readouterr().err

    assert bag_reindex.main([str(bag), "--output", str(tmp_path / "complete")]) == 0
    with AnyReader([tmp_path / "complete"]) as reader:
        assert [(c.topic, bytes(raw)) for c, _, raw in reader.messages()] == recovered
    [complete_file] = (tmp_path / "complete").glob("*.mcap")
    with complete_file.open("rb") as stream:
        reader = make_reader(stream)
        assert reader.get_summary().statistics.message_count == len(recovered)
        assert [(c.topic, bytes(m.data)) for _, c, m in reader.iter_messages()] == recovered
