"""spec-vla-analyze and the harness's bag input, on small MCAP bags written here with rosbags
(the recorder's library and format), with plain and namespaced topic names; unfinished bags (a
recorder killed: no summary, no metadata.yaml) cut at random points, recovered and reindexed;
malformed messages skipped."""
import json
import os
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from spec_vla_ros.ros import topics
from spec_vla_ros.analysis import bag_analysis, plots
from spec_vla_ros.analysis.bags import observation_episodes, read_bag
from spec_vla_ros.analysis.plots import FIGURE_PIXELS
from spec_vla_ros.commands import analyze
from spec_vla_ros.commands import collect as collect_command
from spec_vla_ros.commands import harness as harness_command
from spec_vla_ros.ros.decode_report import DecodeReport
from spec_vla_ros.decoding.stats import DecodeStats
from spec_vla_ros.training import collect
from spec_vla_ros.training.collect import synthetic_episode
from spec_vla_ros.vla.constants import ACTION_DIM, ACTION_TOKEN_MIN

INSTRUCTIONS = ("put the bowl on the plate", "turn on the stove")
DRAFT_CHECKPOINT = "/drafts/history-for-test"
TOKENS = [ACTION_TOKEN_MIN + 100 + i for i in range(ACTION_DIM)]
# (draft, acceptance, accepted per pass, proposed per pass) of each action, two episodes of three
ACTIONS = [[("ar", "strict", [0] * 7, [0] * 7)] * 3,
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
                       for name, msgtype in [(topic.name, topic.msgtype) for topic in (
                                             topics.INSTRUCTION, topics.CAMERA, topics.DECODE_STATS, topics.ACTION,
                                             topics.EPISODE)]}

        def write(name, msg):
            nonlocal time_ns
            time_ns += 10_000_000
            writer.write(connections[name], time_ns, store.serialize_cdr(msg, connections[name].msgtype))

        for episode, actions in enumerate(ACTIONS):
            write(topics.INSTRUCTION.name, types["std_msgs/msg/String"](data=INSTRUCTIONS[episode]))
            _, frames = synthetic_episode(episode, frames_per_episode, size=64)
            for index, frame in enumerate(frames):
                stamp = types["builtin_interfaces/msg/Time"](sec=time_ns // 10**9, nanosec=time_ns % 10**9)
                header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="agentview")
                write(topics.CAMERA.name, types["sensor_msgs/msg/Image"](
                    header=header, height=64, width=64, encoding="rgb8", is_bigendian=0, step=192,
                    data=frame.reshape(-1)))
                if acted is not None and not acted(episode, index):
                    continue
                draft, acceptance, accepted, proposed = actions[index % len(actions)]
                stats = DecodeStats(draft, acceptance, TOKENS, len(accepted), accepted, proposed,
                                    draft_ms=0.5 * index, verify_ms=10.0 * len(accepted), total_ms=11.0 * len(accepted),
                                    draft_checkpoint=DRAFT_CHECKPOINT if draft != "ar" else "")
                report = DecodeReport(stats, policy_ms=stats.total_ms + 2, image_to_action_ms=stats.total_ms + 3)
                status = types["diagnostic_msgs/msg/DiagnosticStatus"](
                    level=0, name="spec_vla_policy: decode", message="", hardware_id="miniature",
                    values=[types["diagnostic_msgs/msg/KeyValue"](key=k, value=v) for k, v in report.to_pairs()])
                write(topics.DECODE_STATS.name,
                      types["diagnostic_msgs/msg/DiagnosticArray"](header=header, status=[status]))
                write(topics.ACTION.name, types["std_msgs/msg/Float64MultiArray"](
                    layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                    data=np.array([0.1 * index, 0, 0, 0, 0, 0, 1.0])))
            record = {"task_id": episode, "task_name": f"task_{episode}", "episode": 0,
                      "instruction": INSTRUCTIONS[episode], "success": episode == 1, "steps": frames_per_episode,
                      "wall_seconds": 2.0 + episode, "reset_seconds": 1.0, "sim_seconds": 0.15, "rejected_actions": 0,
                      "clipped_actions": 0, "failure_reason": "" if episode == 1 else "max_steps (3) reached"}
            write(topics.EPISODE.name, types["std_msgs/msg/String"](data=json.dumps(record)))
    return path


@pytest.mark.parametrize("namespace", ["", "/robot1"])
def test_bag_report_groups_decoding_by_draft_and_reports_episodes(tmp_path, namespace, capsys):
    bag = write_bag(tmp_path / "bag", namespace)
    output = tmp_path / "report"
    assert analyze.main([str(bag), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert str(bag) in printed and "| history | strict |" in printed

    document = json.loads((output / "bag_analysis.json").read_text())
    decoding = document["tables"]["decoding"]
    assert [(row["draft"], row["actions"]) for row in decoding] == [("ar", 3), ("history", 3)]
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
        "bag_decode_latency.png", "bag_ms_per_action.png", "bag_acceptance_length_histogram.png",
        "bag_acceptance_by_position.png", "bag_actions.png"]
    for figure in document["figures"]:
        with Image.open(figure) as image:
            assert image.format == "PNG" and image.size[0] == FIGURE_PIXELS[0]
    assert f"draft checkpoint history={DRAFT_CHECKPOINT}" in document["provenance"]


def test_bag_plots_split_latency_and_draw_one_panel_per_action_dimension(tmp_path):
    run = read_bag(write_bag(tmp_path / "bag"))
    # Preprocessing = policy_ms - total_ms (the bag writes policy_ms = total_ms + 2)
    row = bag_analysis.latency_row("history strict", run.decode_stats[3:])
    assert row.preprocessing_ms == pytest.approx(2.0) and row.actions == 3
    assert row.total_ms == pytest.approx(sum(11.0 * len(accepted) for _, _, accepted, _ in ACTIONS[1]) / 3)
    without = [replace(report, policy_ms=None) for report in run.decode_stats]
    assert bag_analysis.latency_row("ar strict", without[:3]).preprocessing_ms is None      # not measured
    figure = plots.draw_ms_per_action([row, bag_analysis.latency_row("ar strict", without[:3])], "caption")
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend[0] == "preprocessing (image -> pixels)" and "not measured" in " ".join(
        text.get_text() for text in figure.axes[0].texts)

    # One action per step: the episodes end after actions 3 and 6.
    boundaries, labels = bag_analysis.episode_boundaries(run.episodes, len(run.actions))
    assert boundaries == [3, 6] and labels == ["task 0 ep 0 ends", "task 1 ep 0 ends"]
    figure = plots.draw_actions(run.actions, "caption", boundaries, labels)
    assert len(figure.axes) == ACTION_DIM
    units = [axes.get_ylabel() for axes in figure.axes]
    assert units[0] == "dx\n(m)" and units[3] == "droll\n(rad)" and units[-1].startswith("gripper")
    for axes in figure.axes:
        assert len([line for line in axes.get_lines() if line.get_linestyle() == "--"]) == 2   # the boundaries
    # Pose in metres per step: the published 0.1 (normalized) is 0.005 m
    assert figure.axes[0].get_lines()[0].get_ydata()[1] == pytest.approx(0.1 * 0.05)
    # k inferred from the passes after the prefill (history proposed 4 then 1 after a 7-token prefill)
    assert bag_analysis.inferred_num_draft_tokens([report.stats for report in run.decode_stats]) == 4
    plots.plt.close("all")


def test_a_bag_without_the_package_topics_is_refused(tmp_path, capsys):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        writer.write(connection, 1, store.serialize_cdr(store.types["std_msgs/msg/String"](data="hi"),
                                                        "std_msgs/msg/String"))
    assert analyze.main([str(tmp_path / "bag")]) == 2
    assert "no usable decode_stats, action or episode messages" in capsys.readouterr().err
    assert analyze.main([str(tmp_path / "missing")]) == 2


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
    assert harness_command.main(["--bag", str(bag), "--verifier", "miniature", "--drafts", "history",
                                 "--acceptance", "strict", "--output", str(output), "--no-progress"]) == 0
    [run] = json.loads((output / "harness.json").read_text())["tables"]["runs"]
    assert run["actions"] == 6 and run["same_tokens_as_verifier"] == 1.0


def test_traces_are_collected_from_a_bag(miniature, tmp_path):
    """A bag is a trace source: the frames the policy acted on, decoded by the verifier here."""
    from spec_vla_ros.decoding.decoder import Decoder
    from spec_vla_ros.vla.preprocess import pixel_values
    from spec_vla_ros.vla.prompt import prompt_token_ids

    bag = write_bag(tmp_path / "bag", frames_per_episode=3, acted=lambda episode, frame: frame != 1)
    collect_command.main([str(tmp_path / "traces"), "--source", "bag", "--bag", str(bag)])
    manifest, steps = collect.read_traces(tmp_path / "traces")
    assert manifest["source"]["bag"] == str(bag)
    assert [(s["episode"], s["step"], s["instruction"]) for s in steps] == [
        (0, 0, INSTRUCTIONS[0]), (0, 1, INSTRUCTIONS[0]), (1, 0, INSTRUCTIONS[1]), (1, 1, INSTRUCTIONS[1])]
    frame = synthetic_episode(1, 3, size=64)[1][2]            # episode 1's third frame, its second acted on
    expected, _ = Decoder(miniature.model).decode(pixel_values(frame), prompt_token_ids(miniature.tokenizer,
                                                                                        INSTRUCTIONS[1]))
    assert steps[3]["tokens"].tolist() == expected


# --- unfinished bags -----------------------------------------------------------------------------

def fresh_rng():
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"random seed {seed}")                  # pytest shows it when the test fails
    return np.random.default_rng(seed), seed


def write_flushed_bag(path, rng):
    """write_bag's messages through the recorder's FlushingBagWriter, flushed at random points;
    returns (messages as (topic, time, bytes), [(file size, messages on disk) after each flush],
    the MCAP bytes as the disk held them before close) and leaves the bag closed (complete)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from spec_vla_ros.ros.bag_writer import FlushingBagWriter

    complete = write_bag(path.with_name(path.name + "_source"))
    with AnyReader([complete]) as reader:
        source = [(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in reader.messages()]
    store = get_typestore(Stores.ROS2_KILTED)
    written, flushes = [], []
    with FlushingBagWriter(path) as writer:
        connections = {}
        for topic, msgtype, timestamp, raw in source:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], timestamp, raw)
            written.append((topic, timestamp, raw))
            if rng.random() < 0.3 and writer.flush():
                flushes.append((writer.flushed_bytes, len(written)))
        writer.flush()
        flushes.append((writer.flushed_bytes, len(written)))
        [mcap_file] = path.glob("*.mcap")
        on_disk = mcap_file.read_bytes()
    return written, flushes, on_disk


def unfinished_copy(directory, name, data):
    """A bag directory holding only the MCAP bytes a killed recorder left (no metadata.yaml)."""
    directory.mkdir()
    (directory / f"{name}.mcap").write_bytes(data)
    return directory


def test_recovery_keeps_every_flushed_message_at_any_cut(tmp_path):
    """Cut the bag at random bytes, as a kill or power cut does: what comes back is exactly the
    first messages, every message flushed before the cut among them, none past the chunk cut."""
    from spec_vla_ros.analysis.bags import Recovery, recovered_records, unfinished_mcap_files

    rng, _ = fresh_rng()
    written, flushes, on_disk = write_flushed_bag(tmp_path / "bag", rng)
    assert flushes[-1] == (len(on_disk), len(written))
    cuts = sorted(set(rng.integers(0, len(on_disk) + 1, 12).tolist()) | {len(on_disk)})
    for index, cut in enumerate(cuts):
        bag = unfinished_copy(tmp_path / f"cut{index}", "bag", on_disk[:cut])
        files = unfinished_mcap_files(bag)
        recovered = [(channel.topic, message.log_time, bytes(message.data))
                     for _, channel, message in recovered_records(Recovery(files))]
        at_least = max([count for size, count in flushes if size <= cut], default=0)
        at_most = min([count for size, count in flushes if size > cut], default=len(written))
        assert recovered == written[:len(recovered)], f"cut at byte {cut}: not a prefix"
        assert at_least <= len(recovered) <= at_most, f"cut at byte {cut}: {len(recovered)} of {len(written)}"


def test_unfinished_bag_is_analysed_with_a_notice_and_reindexed(tmp_path, capsys):
    from mcap.reader import make_reader
    from rosbags.highlevel import AnyReader

    from spec_vla_ros.commands import bag_reindex
    from spec_vla_ros.analysis.bags import unfinished_mcap_files

    rng, _ = fresh_rng()
    written, flushes, on_disk = write_flushed_bag(tmp_path / "complete", rng)
    # the disk after a kill: everything up to a flush in the second episode, plus half a chunk
    kept_size, kept = next((size, count) for size, count in flushes if count > len(written) // 2)
    next_size = next((size for size, _ in flushes if size > kept_size), len(on_disk))
    bag = unfinished_copy(tmp_path / "bag", "bag", on_disk[:(kept_size + next_size) // 2])
    assert unfinished_mcap_files(bag) and not (bag / "metadata.yaml").exists()

    output = tmp_path / "report"
    assert analyze.main([str(bag), "--output", str(output)]) == 0
    captured = capsys.readouterr()
    notice = f"recovered {kept} messages from an unfinished bag {bag}"
    assert notice in captured.err and "spec-vla-bag-reindex" in captured.err
    document = json.loads((output / "bag_analysis.json").read_text())
    assert document["recovered"] is True and notice in document["notes"][0]
    actions = sum(1 for topic, _, _ in written[:kept] if topic == "/action")
    assert {row["topic"]: row["messages"] for row in document["tables"]["topics"]}["/action"] == actions

    assert bag_reindex.main([str(bag)]) == 0
    complete = tmp_path / "bag_reindexed"
    assert f"wrote {kept} messages" in capsys.readouterr().out
    assert not (bag / "metadata.yaml").exists()                       # the unfinished bag is left alone
    with AnyReader([complete]) as reader:
        assert [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()] == written[:kept]
    [mcap_file] = complete.glob("*.mcap")
    with mcap_file.open("rb") as stream:
        reader = make_reader(stream)
        summary = reader.get_summary()                              # an indexed, complete file
        assert summary is not None and summary.statistics.message_count == kept and summary.chunk_indexes
        assert [(channel.topic, message.log_time, bytes(message.data))
                for _, channel, message in reader.iter_messages()] == written[:kept]
    assert read_bag(complete).notices == [] and unfinished_mcap_files(complete) == []
    assert bag_reindex.main([str(complete)]) == 2                   # complete: nothing to do, said so
    assert "nothing to reindex" in capsys.readouterr().err


def test_frames_of_an_unfinished_bag_are_recovered_for_collection(tmp_path):
    bag = write_bag(tmp_path / "bag", frames_per_episode=3)
    [mcap_file] = bag.glob("*.mcap")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    data = mcap_file.read_bytes()
    (unfinished / mcap_file.name).write_bytes(data[:data.rfind(b"\x89MCAP0\r\n")])   # summary kept, magic lost
    (unfinished / "metadata.yaml").write_text((bag / "metadata.yaml").read_text())
    expected = observation_episodes(bag)
    assert "(no MCAP summary" in read_bag(unfinished).notices[0]
    recovered = observation_episodes(unfinished)
    assert [(i, len(f)) for i, f in recovered] == [(i, len(f)) for i, f in expected]
    for (_, frames), (_, reference) in zip(recovered, expected):
        for frame, reference_frame in zip(frames, reference):
            np.testing.assert_array_equal(frame, reference_frame)


def test_malformed_messages_are_skipped_with_a_count(tmp_path, capsys):
    """An episode result without `instruction`, one that is not JSON or not an object, a decode_stats
    status without `draft` or with a wrong type, an action of 6 values: each skipped and counted."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    bag = write_bag(tmp_path / "good")
    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    good = read_bag(bag)
    episode = dict(good.episodes[0])
    del episode["instruction"]
    bad_episodes = [json.dumps(episode), "{not json", json.dumps([1, 2]), json.dumps({**good.episodes[0], "steps": "x"})]
    status = types["diagnostic_msgs/msg/DiagnosticStatus"]
    key_value = types["diagnostic_msgs/msg/KeyValue"]
    stats = [{key: value for key, value in good.decode_stats[0].values().items() if key != "draft"},
             {**good.decode_stats[0].values(), "verifier_passes": "three"}]
    mixed = tmp_path / "mixed"
    with Writer(mixed, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        with AnyReader([bag]) as reader:
            connections = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=store)
                           for c in reader.connections}
            for connection, timestamp, raw in reader.messages():
                writer.write(connections[connection.topic], timestamp, raw)
        last = 10**12
        for text in bad_episodes:
            last += 1
            writer.write(connections["/episode"], last, store.serialize_cdr(types["std_msgs/msg/String"](data=text),
                                                                              "std_msgs/msg/String"))
        header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                              frame_id="")
        array = types["diagnostic_msgs/msg/DiagnosticArray"](header=header, status=[
            status(level=0, name="x", message="", hardware_id="",
                   values=[key_value(key=k, value=json.dumps(v) if not isinstance(v, str) else v)
                           for k, v in values.items()]) for values in stats])
        writer.write(connections["/decode_stats"], last + 1,
                     store.serialize_cdr(array, "diagnostic_msgs/msg/DiagnosticArray"))
        writer.write(connections["/action"], last + 2, store.serialize_cdr(types["std_msgs/msg/Float64MultiArray"](
            layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.zeros(6)),
            "std_msgs/msg/Float64MultiArray"))
        writer.write(connections["/instruction"], last + 3, b"\x00\x01")        # not a String's CDR

    run = read_bag(mixed)
    assert run.episodes == good.episodes and run.decode_stats == good.decode_stats and run.actions == good.actions
    assert {topic: count for topic, (count, _) in run.skipped.items()} == {
        "/episode": 4, "/decode_stats": 2, "/action": 1, "/instruction": 1}
    assert "missing instruction" in run.skipped["/episode"][1]

    output = tmp_path / "report"
    assert analyze.main([str(mixed), "--output", str(output)]) == 0
    err = capsys.readouterr().err
    assert "skipped 4 /episode message(s)" in err and "missing instruction" in err and "Traceback" not in err
    document = json.loads((output / "bag_analysis.json").read_text())
    assert document["skipped_messages"] == {"/episode": 4, "/decode_stats": 2, "/action": 1, "/instruction": 1}
    assert len(document["tables"]["episodes"]) == 2


def test_the_bag_report_names_the_draft_checkpoints_the_policy_used():
    from spec_vla_ros.analysis.bag_analysis import draft_checkpoint_description
    def report(draft: str, checkpoint: str | None) -> DecodeReport:
        """As read from a bag; checkpoint None: the status had no draft_checkpoint (an older node)."""
        pairs = DecodeReport(DecodeStats(draft, "strict", draft_checkpoint=checkpoint or "")).to_pairs()
        return DecodeReport.from_pairs((k, v) for k, v in pairs if checkpoint is not None or k != "draft_checkpoint")

    rows = [report("mamba", "/drafts/mamba"), report("history", ""), report("none", "")]
    assert draft_checkpoint_description(rows) == "draft checkpoint history, mamba=/drafts/mamba"
    assert "not named" in draft_checkpoint_description([report("llama", None)])
    assert draft_checkpoint_description([report("none", None)]) == "no draft (autoregressive)"   # an older bag
    assert draft_checkpoint_description([report("ar", "")]) == "no draft (autoregressive)"


def test_decoding_is_grouped_by_tree_shape_with_the_kept_paths_depth_and_source():
    """A policy switched from chains to a hybrid tree: one row per shape, the mean kept depth per
    pass, and which branch the kept paths came from; statistics recorded before trees (no shape,
    no sources) keep their own row with no source shares rather than zeros."""
    from spec_vla_ros.analysis.bags import decoding_label, summarize_decoding

    def report(shape, accepted, proposed, sources):
        stats = DecodeStats("mamba", "strict", TOKENS, len(accepted), accepted, proposed, 1.0, 10.0, 11.0,
                            generated=TOKENS, tree_shape=shape, judged_per_pass=[], source_per_pass=sources)
        return DecodeReport(stats)

    old = report("", [3, 2, 0], [4, 4, 1], [])
    chain = report("chain:4", [4, 2], [4, 2], ["model", "model"])
    hybrid = [report("hybrid:50:6:8", [6], [50], ["history"]),
              report("hybrid:50:6:8", [4, 1], [50, 14], ["retrieval", "model"]),
              report("hybrid:50:6:8", [0, 5], [50, 40], ["", "model"])]
    rows = summarize_decoding([old, chain, *hybrid])
    assert [(row["shape"], row["actions"]) for row in rows] == [(None, 1), ("chain:4", 1), ("hybrid:50:6:8", 3)]
    assert [decoding_label(r.stats) for r in (old, chain, hybrid[0])] == [
        "mamba strict", "mamba strict chain:4", "mamba strict hybrid:50:6:8"]
    assert rows[0]["accepted_depth"] == pytest.approx(5 / 3) and rows[0]["kept_model"] is None
    assert (rows[1]["accepted_depth"], rows[1]["kept_model"], rows[1]["kept_history"]) == (3.0, 1.0, 0.0)
    tree = rows[2]
    assert tree["accepted_depth"] == pytest.approx(16 / 5) and tree["passes_per_action"] == pytest.approx(5 / 3)
    assert (tree["kept_model"], tree["kept_history"], tree["kept_retrieval"]) == pytest.approx((2 / 5, 1 / 5, 1 / 5))
