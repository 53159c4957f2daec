"""spec-vla-analyze and the harness's bag input, on small MCAP bags written here with rosbags
(the recorder's library and format), with plain and namespaced topic names."""
import json

import numpy as np
import pytest
from PIL import Image

from spec_vla_ros.analysis import bag_analysis, harness
from spec_vla_ros.analysis.bags import observation_episodes, read_bag
from spec_vla_ros.analysis.plots import FIGURE_PIXELS
from spec_vla_ros.control import encode_values
from spec_vla_ros.decoding.stats import DecodeStats
from spec_vla_ros.training import collect
from spec_vla_ros.training.collect import synthetic_episode
from spec_vla_ros.vla.constants import ACTION_DIM, ACTION_TOKEN_MIN

INSTRUCTIONS = ("put the bowl on the plate", "turn on the stove")
TOKENS = [ACTION_TOKEN_MIN + 100 + i for i in range(ACTION_DIM)]
# (draft, acceptance, accepted per pass, proposed per pass) of each action, two episodes of three
ACTIONS = [[("none", "strict", [0] * 7, [0] * 7)] * 3,
           [("history", "strict", [0] * 7, [0] * 7), ("history", "strict", [7], [7]),
            ("history", "strict", [2, 3, 0], [7, 4, 1])]]


def write_bag(path, namespace="", frames_per_episode=3, acted=None):
    """Instruction, camera frames, decode_stats (stamped with their frame), actions and an episode result
    per episode; `acted(episode, frame)` says which frames get decode statistics and an action."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    time_ns = 1_000_000_000
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {name: writer.add_connection(f"{namespace}/{name}", msgtype, typestore=store)
                       for name, msgtype in [("instruction", "std_msgs/msg/String"),
                                             ("camera/image_raw", "sensor_msgs/msg/Image"),
                                             ("decode_stats", "diagnostic_msgs/msg/DiagnosticArray"),
                                             ("action", "std_msgs/msg/Float64MultiArray"),
                                             ("episode", "std_msgs/msg/String")]}

        def write(name, msg):
            nonlocal time_ns
            time_ns += 10_000_000
            writer.write(connections[name], time_ns, store.serialize_cdr(msg, connections[name].msgtype))

        for episode, actions in enumerate(ACTIONS):
            write("instruction", types["std_msgs/msg/String"](data=INSTRUCTIONS[episode]))
            _, frames = synthetic_episode(episode, frames_per_episode, size=64)
            for index, frame in enumerate(frames):
                stamp = types["builtin_interfaces/msg/Time"](sec=time_ns // 10**9, nanosec=time_ns % 10**9)
                header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="agentview")
                write("camera/image_raw", types["sensor_msgs/msg/Image"](
                    header=header, height=64, width=64, encoding="rgb8", is_bigendian=0, step=192,
                    data=frame.reshape(-1)))
                if acted is not None and not acted(episode, index):
                    continue
                draft, acceptance, accepted, proposed = actions[index % len(actions)]
                stats = DecodeStats(draft, acceptance, TOKENS, len(accepted), accepted, proposed,
                                    draft_ms=0.5 * index, verify_ms=10.0 * len(accepted), total_ms=11.0 * len(accepted))
                values = {**stats.as_dict(), "policy_ms": stats.total_ms + 2, "image_to_action_ms": stats.total_ms + 3}
                status = types["diagnostic_msgs/msg/DiagnosticStatus"](
                    level=0, name="spec_vla_policy: decode", message="", hardware_id="miniature",
                    values=[types["diagnostic_msgs/msg/KeyValue"](key=k, value=v) for k, v in encode_values(values)])
                write("decode_stats", types["diagnostic_msgs/msg/DiagnosticArray"](header=header, status=[status]))
                write("action", types["std_msgs/msg/Float64MultiArray"](
                    layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                    data=np.array([0.1 * index, 0, 0, 0, 0, 0, 1.0])))
            record = {"task_id": episode, "task_name": f"task_{episode}", "episode": 0,
                      "instruction": INSTRUCTIONS[episode], "success": episode == 1, "steps": frames_per_episode,
                      "wall_seconds": 2.0 + episode, "reset_seconds": 1.0, "sim_seconds": 0.15, "rejected_actions": 0,
                      "clipped_actions": 0, "failure_reason": "" if episode == 1 else "max_steps (3) reached"}
            write("episode", types["std_msgs/msg/String"](data=json.dumps(record)))
    return path


@pytest.mark.parametrize("namespace", ["", "/robot1"])
def test_bag_report_groups_decoding_by_draft_and_reports_episodes(tmp_path, namespace, capsys):
    bag = write_bag(tmp_path / "bag", namespace)
    output = tmp_path / "report"
    assert bag_analysis.main([str(bag), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert str(bag) in printed and "| history | strict |" in printed

    document = json.loads((output / "bag_analysis.json").read_text())
    decoding = document["tables"]["decoding"]
    assert [(row["draft"], row["actions"]) for row in decoding] == [("none", 3), ("history", 3)]
    history_passes = [len(accepted) for _, _, accepted, _ in ACTIONS[1]]
    assert decoding[0]["passes_per_action"] == ACTION_DIM and decoding[0]["acceptance_length"] == 1.0
    assert decoding[1]["acceptance_length"] == pytest.approx(3 * ACTION_DIM / sum(history_passes))
    assert [row["field"] for row in document["tables"]["latency"]] == [
        "draft_ms", "verify_ms", "total_ms", "policy_ms", "image_to_action_ms"]
    tasks = document["tables"]["tasks"]
    assert [(row["task_id"], row["success_rate"]) for row in tasks] == [(0, 0.0), (1, 1.0), ("all", 0.5)]
    assert len(document["tables"]["episodes"]) == 2
    assert {row["topic"]: row["messages"] for row in document["tables"]["topics"]}[f"{namespace}/action"] == 6

    assert [f.rsplit("/", 1)[-1] for f in document["figures"]] == [
        "bag_decode_latency.png", "bag_acceptance_length_histogram.png", "bag_acceptance_by_position.png",
        "bag_actions.png"]
    for figure in document["figures"]:
        with Image.open(figure) as image:
            assert image.format == "PNG" and image.size == FIGURE_PIXELS


def test_a_bag_without_the_package_topics_is_refused(tmp_path, capsys):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        writer.write(connection, 1, store.serialize_cdr(store.types["std_msgs/msg/String"](data="hi"),
                                                        "std_msgs/msg/String"))
    assert bag_analysis.main([str(tmp_path / "bag")]) == 2
    assert "no decode_stats, action or episode messages" in capsys.readouterr().err
    assert bag_analysis.main([str(tmp_path / "missing")]) == 2


def test_harness_takes_the_frames_the_policy_acted_on_from_a_bag(tmp_path):
    """Frames without decode statistics (republished while no action came) are not replayed."""
    bag = write_bag(tmp_path / "bag", frames_per_episode=4, acted=lambda episode, frame: frame != 2)
    episodes = observation_episodes(bag)
    assert [(instruction, len(frames)) for instruction, frames in episodes] == [(INSTRUCTIONS[0], 3),
                                                                                (INSTRUCTIONS[1], 3)]
    first_frames = synthetic_episode(0, 4, size=64)[1]
    np.testing.assert_array_equal(episodes[0][1][2], first_frames[3])
    assert len(read_bag(bag).decode_stats) == 6

    output = tmp_path / "harness"
    assert harness.main(["--bag", str(bag), "--drafts", "history", "--acceptance", "strict", "--output",
                         str(output), "--no-progress"]) == 0
    [run] = json.loads((output / "harness.json").read_text())["tables"]["runs"]
    assert run["actions"] == 6 and run["same_tokens_as_verifier"] == 1.0


def test_traces_are_collected_from_a_bag(miniature, tmp_path):
    """A bag is a trace source: the frames the policy acted on, decoded by the verifier here."""
    from spec_vla_ros.decoding.decoder import Decoder
    from spec_vla_ros.vla.preprocess import pixel_values
    from spec_vla_ros.vla.prompt import prompt_token_ids

    bag = write_bag(tmp_path / "bag", frames_per_episode=3, acted=lambda episode, frame: frame != 1)
    collect.main([str(tmp_path / "traces"), "--source", "bag", "--bag", str(bag)])
    manifest, steps = collect.read_traces(tmp_path / "traces")
    assert manifest["source"]["bag"] == str(bag)
    assert [(s["episode"], s["step"], s["instruction"]) for s in steps] == [
        (0, 0, INSTRUCTIONS[0]), (0, 1, INSTRUCTIONS[0]), (1, 0, INSTRUCTIONS[1]), (1, 1, INSTRUCTIONS[1])]
    frame = synthetic_episode(1, 3, size=64)[1][2]            # episode 1's third frame, its second acted on
    expected, _ = Decoder(miniature.model).decode(pixel_values(frame), prompt_token_ids(miniature.tokenizer,
                                                                                        INSTRUCTIONS[1]))
    assert steps[3]["tokens"].tolist() == expected
