"""Bags a rosbag2 recorder with file compression (`ros2 bag record --compression-mode file`) leaves
when it is killed, made here the way rosbag2 makes them: each split an MCAP file of its own
(rosbags' Writer; the split being recorded, the recorder's flushing writer), a closed split
compressed to `<split>.zstd` as one zstd frame (rosbag2_compression_zstd: level 1, streamed) by one
of several compressor threads, so in any order, and the plain split removed only after;
metadata.yaml only at close. A kill leaves each finished split in one of FINISHED_STATES and the
last one unfinished (or, killed while closing, finished too). spec-vla-analyze and
spec-vla-bag-reindex must report exactly the messages on disk and leave the user's files as they
were."""
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pytest
import yaml

from spec_vla_ros.analysis.bags import read_bag, reindex_bag, unfinished_bag, unfinished_mcap_files
from spec_vla_ros.commands import analyze, bag_reindex
from spec_vla_ros.ros import topics
from test_bag_analysis import fresh_rng, write_bag

# What a kill leaves of a finished split: compressed and removed; compressed, the plain file not yet
# removed; being compressed (the .zstd cut short); queued for a compressor thread (plain only).
FINISHED_STATES = ("compressed", "compressed, plain not removed", "compressing", "queued")
ACTION, EPISODE = f"/{topics.ACTION.name}", f"/{topics.EPISODE.name}"            # as write_bag names them
RUN_TOPICS = [f"/{topic.name}" for topic in (topics.ACTION, topics.DECODE_STATS, topics.CAMERA, topics.INSTRUCTION,
                                              topics.EPISODE)]


def source_messages(tmp_path) -> list:
    """write_bag's run (two episodes, 22 messages) as (topic, type, receive time, bytes)."""
    from rosbags.highlevel import AnyReader

    with AnyReader([write_bag(tmp_path / "source")]) as reader:
        return [(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in reader.messages()]


def closed_split(path, messages) -> bytes:
    """A closed split's MCAP bytes (rosbags' Writer), every topic of the run registered, as rosbag2
    registers the topics it records in each new split."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=store)
                       for topic, msgtype in dict.fromkeys((topic, msgtype) for topic, msgtype, _, _ in messages)}
        for topic, _, timestamp, raw in messages:
            writer.write(connections[topic], timestamp, raw)
    [mcap_file] = path.glob("*.mcap")
    return mcap_file.read_bytes()


def recording_split(path, messages, rng) -> tuple[bytes, list]:
    """The split a kill interrupts: the recorder's FlushingBagWriter, flushed at random; returns the
    bytes the disk held before close and [(file size, messages on disk)] at each flush."""
    from rosbags.typesys import Stores, get_typestore

    from spec_vla_ros.ros.bag_writer import FlushingBagWriter

    store = get_typestore(Stores.ROS2_KILTED)
    flushes = [(0, 0)]
    with FlushingBagWriter(path) as writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=store)
                       for topic, msgtype in dict.fromkeys((topic, msgtype) for topic, msgtype, _, _ in messages)}
        for index, (topic, _, timestamp, raw) in enumerate(messages):
            writer.write(connections[topic], timestamp, raw)
            if rng.random() < 0.3 and writer.flush():
                flushes.append((writer.flushed_bytes, index + 1))
        if writer.flush():
            flushes.append((writer.flushed_bytes, len(messages)))
        [mcap_file] = path.glob("*.mcap")
        on_disk = mcap_file.read_bytes()
    return on_disk, flushes


def zstd_frame(data: bytes) -> bytes:
    """rosbag2_compression_zstd's compress_uri: the file streamed in pieces through one compression
    context at level 1 (ZSTD_e_continue, then ZSTD_e_end), one frame with no content size."""
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd

    compressor, piece = zstd.ZstdCompressor(level=1), 128 * 1024        # ZSTD_CStreamInSize()
    frame = b"".join(compressor.compress(data[start:start + piece]) for start in range(0, len(data), piece))
    return frame + compressor.flush()


@dataclass
class KilledBag:
    path: object
    parts: list            # the messages of each split
    at_least: list         # the messages on disk (the recording split cut inside a chunk: at least these)
    at_most: list


def killed_split_bag(tmp_path, name, messages, rng, states, last="recording", cut=None, bounds=None) -> KilledBag:
    """A bag directory as a killed file-compressing recorder leaves it: the messages split at random
    boundaries into len(states) + 1 splits, the finished ones left in `states`; the last one being
    recorded (cut at byte `cut(bytes, flushes)`, a random byte by default) or, `last` a finished
    state, the recorder killed while closing. `bounds`: where the splits begin (default random)."""
    bounds = bounds or sorted(rng.choice(np.arange(1, len(messages)), len(states), replace=False).tolist())
    parts = [messages[a:b] for a, b in zip([0] + bounds, bounds + [len(messages)])]
    bag = tmp_path / name
    bag.mkdir()
    on_disk = []
    for index, (part, state) in enumerate(zip(parts, list(states) + [last])):
        plain = bag / f"{name}_{index}.mcap"
        if state == "recording":
            data, flushes = recording_split(tmp_path / f"{name}_recording", part, rng)
            kept = cut(data, flushes) if cut else int(rng.integers(0, len(data) + 1))
            plain.write_bytes(data[:kept])
            at_least = max(count for size, count in flushes if size <= kept)    # exact when cut at a flush
            at_most = at_least if kept in dict(flushes) else min(
                [count for size, count in flushes if size > kept], default=len(part))
            return KilledBag(bag, parts, on_disk + part[:at_least], on_disk + part[:at_most])
        data = closed_split(tmp_path / f"{name}_closed{index}", part)
        compressed = zstd_frame(data)
        if state != "compressed":
            plain.write_bytes(data)
        if state == "compressing":
            compressed = compressed[:int(rng.integers(0, len(compressed)))]
        if state != "queued":
            (bag / f"{plain.name}.zstd").write_bytes(compressed)
        on_disk += part
    return KilledBag(bag, parts, on_disk, on_disk)


def fingerprint(directory) -> dict:
    return {file.name: hashlib.sha256(file.read_bytes()).hexdigest() for file in sorted(directory.iterdir())}


def as_written(messages) -> list:
    return [(topic, timestamp, raw) for topic, _, timestamp, raw in messages]


def reindexed(bag, output) -> list:
    """The messages of the complete copy reindex_bag writes; its count checked against them."""
    from rosbags.highlevel import AnyReader

    _, written, recovery = reindex_bag(bag, output)
    with AnyReader([output]) as reader:
        messages = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
    assert written == len(messages) == recovery.messages
    return messages


def test_a_killed_split_compressed_bag_is_analysed_and_reindexed_whole(tmp_path, capsys):
    """The issue's bag (the first episode in a compressed split beside the second, unfinished one, no
    metadata.yaml), killed right after a flush: every message on disk is in analyze's count and
    report and in the reindexed copy. Then every state a kill leaves splits in, in a random mix and
    order."""
    rng, _ = fresh_rng()
    messages = source_messages(tmp_path)
    after_a_flush = lambda data, flushes: flushes[int(rng.integers(1, len(flushes)))][0]     # noqa: E731
    first_episode = next(index for index, (topic, *_) in enumerate(messages) if topic == EPISODE) + 1
    killed = killed_split_bag(tmp_path, "bag", messages, rng, ["compressed"], cut=after_a_flush, bounds=[first_episode])
    bag, expected = killed.path, killed.at_least
    assert expected == killed.at_most and len(expected) > len(killed.parts[0])
    assert sorted(file.name for file in bag.iterdir()) == ["bag_0.mcap.zstd", "bag_1.mcap"]
    before = fingerprint(bag)

    output = tmp_path / "report"
    assert analyze.main([str(bag), "--output", str(output)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [notice] = [line for line in err.splitlines() if "recovered" in line]
    assert f"recovered {len(expected)} messages from an unfinished bag {bag} (no metadata.yaml" in notice
    assert "in 2 split files (1 zstd-compressed)" in notice and "reading bag_1.mcap ended at byte" in notice
    document = json.loads((output / "bag_analysis.json").read_text())
    counts = {row["topic"]: row["messages"] for row in document["tables"]["topics"]}
    for topic in RUN_TOPICS:
        assert counts.get(topic, 0) == sum(1 for t, *_ in expected if t == topic), topic
    assert len(document["tables"].get("episodes", [])) == sum(1 for t, *_ in expected if t == EPISODE)

    assert bag_reindex.main([str(bag)]) == 0
    assert f"wrote {len(expected)} messages" in capsys.readouterr().out
    assert reindexed(bag, tmp_path / "again") == as_written(expected)
    assert fingerprint(bag) == before                                 # the user's files as they were

    for trial in range(6):
        states = [str(state) for state in rng.permutation(FINISHED_STATES)]
        states += [str(state) for state in rng.choice(FINISHED_STATES, int(rng.integers(0, 3)))]
        last = "recording" if trial % 3 else str(rng.choice(FINISHED_STATES))      # or killed while closing
        killed = killed_split_bag(tmp_path, f"mix{trial}", messages, rng, states, last)
        bag, context = killed.path, f"trial {trial}: {states} then {last}"
        before = fingerprint(bag)
        run = read_bag(bag)
        recovered = reindexed(bag, tmp_path / f"mix{trial}_complete")
        assert recovered == as_written(killed.at_most[:len(recovered)]), context
        assert len(killed.at_least) <= len(recovered) <= len(killed.at_most), context
        assert run.recovery.messages == len(recovered) == sum(run.message_counts.values()), context
        assert len(run.actions) == sum(1 for topic, *_ in recovered if topic == ACTION), context
        assert len(unfinished_mcap_files(bag)) == len(states) + 1, context
        [notice] = run.notices
        assert f"recovered {len(recovered)} messages" in notice and f"in {len(states) + 1} split files" in notice
        if last == "recording":
            assert f"reading {bag.name}_{len(states)}.mcap ended at byte" in notice, context
        else:
            assert recovered == as_written(messages) and "ended at" not in notice, context
        assert fingerprint(bag) == before, context


def test_a_damaged_compressed_split_gives_one_line_and_the_rest_is_read(tmp_path, capsys):
    """A compressed split alone and cut short (a copy that stopped, a full disk) or not zstd at all:
    one line names the file and how many of its messages were read; the other splits come whole."""
    rng, _ = fresh_rng()
    messages = source_messages(tmp_path)
    for damage in ("truncated", "not_zstd"):
        killed = killed_split_bag(tmp_path, damage, messages, rng, ["compressed", "compressed", "queued"],
                                  last="compressed")
        bag = killed.path
        split = bag / f"{damage}_1.mcap.zstd"
        data = split.read_bytes()
        split.write_bytes(data[:int(rng.integers(1, len(data)))] if damage == "truncated" else rng.bytes(len(data)))

        if damage == "truncated":        # each command says it in one line
            assert analyze.main([str(bag), "--output", str(tmp_path / f"{damage}_report")]) == 0
            printed = capsys.readouterr().err
        else:
            assert bag_reindex.main([str(bag), "--output", str(tmp_path / f"{damage}_reindexed")]) == 0
            printed = capsys.readouterr().out
        assert "Traceback" not in printed
        [notice] = [line for line in printed.splitlines() if "recovered" in line]
        recovered = reindexed(bag, tmp_path / f"{damage}_complete")
        before, during = len(killed.parts[0]), len(killed.parts[1])
        read = len(recovered) - (len(messages) - during)
        assert 0 <= read <= during and (read == 0 or damage == "truncated")
        assert recovered == as_written(messages[:before + read] + messages[before + during:]), damage
        assert f"recovered {len(recovered)} messages" in notice
        assert f"reading {split.name} ended at byte" in notice and f"after {read} of its messages" in notice
        assert ("EOFError" if damage == "truncated" else "ZstdError") in notice
        assert notice.count("ended at byte") == 1                       # the other splits were read whole


def test_a_closed_split_compressed_bag_is_read_whole_and_not_recovered(tmp_path):
    """rosbag2 writes metadata.yaml after compressing the last split: such a bag is complete and read
    through rosbags; one whose metadata.yaml does not list every split on disk is recovered."""
    rng, _ = fresh_rng()
    messages = source_messages(tmp_path)
    killed = killed_split_bag(tmp_path, "closed", messages, rng, ["compressed"] * 2, last="compressed")
    bag = killed.path
    files = [f"closed_{index}.mcap.zstd" for index in range(3)]
    topic_types = dict.fromkeys((topic, msgtype) for topic, msgtype, _, _ in messages)
    metadata = {"rosbag2_bagfile_information": {
        "version": 9, "storage_identifier": "mcap", "compression_format": "zstd", "compression_mode": "FILE",
        "relative_file_paths": files, "message_count": len(messages),
        "duration": {"nanoseconds": messages[-1][2] - messages[0][2]},
        "starting_time": {"nanoseconds_since_epoch": messages[0][2]},
        "files": [{"path": file, "message_count": len(part), "duration": {"nanoseconds": part[-1][2] - part[0][2]},
                   "starting_time": {"nanoseconds_since_epoch": part[0][2]}}
                  for file, part in zip(files, killed.parts)],
        "topics_with_message_count": [
            {"message_count": sum(1 for t, *_ in messages if t == topic),
             "topic_metadata": {"name": topic, "type": msgtype, "serialization_format": "cdr",
                                "offered_qos_profiles": []}} for topic, msgtype in topic_types]}}
    (bag / "metadata.yaml").write_text(yaml.safe_dump(metadata))
    assert unfinished_bag(bag) is None
    run = read_bag(bag)
    assert run.notices == [] and run.recovery is None
    assert run.message_counts == {topic: sum(1 for t, *_ in messages if t == topic) for topic, _ in topic_types}
    assert len(run.actions) == 6 and len(run.episodes) == 2

    metadata["rosbag2_bagfile_information"]["relative_file_paths"] = files[:2]   # a split it does not list
    (bag / "metadata.yaml").write_text(yaml.safe_dump(metadata))
    recovery = unfinished_bag(bag)
    assert recovery is not None and recovery.files == [bag / file for file in files]
    assert f"lists {files[0]}, {files[1]}, the disk holds {', '.join(files)}" in recovery.reason
    assert reindexed(bag, tmp_path / "closed_complete") == as_written(messages)


def mcap_split(path, messages, chunk_size) -> bytes:
    """A closed split written with the MCAP library rosbag2's storage plugin is built on (mcap's
    writer, here its Python one): chunk CRCs stored, as rosbag2 stores them; chunks uncompressed
    and small, so damage to one message's bytes can reach the reader silently."""
    from mcap.writer import CompressionType, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    with path.open("wb") as stream:
        writer = Writer(stream, chunk_size=chunk_size, compression=CompressionType.NONE)
        writer.start(profile="ros2", library="test")
        channels = {}
        for topic, msgtype, timestamp, raw in messages:
            if topic not in channels:
                definition = store.generate_msgdef(msgtype, ros_version=2)[0]
                schema = writer.register_schema(msgtype, "ros2msg", definition.encode())
                channels[topic] = writer.register_channel(topic, "cdr", schema, {"offered_qos_profiles": ""})
            writer.add_message(channels[topic], log_time=timestamp, data=raw, publish_time=timestamp)
        writer.finish()
    return path.read_bytes()


def test_damaged_bytes_never_come_out_as_messages(tmp_path):
    """A byte of one message flipped in a closed split (the disk, a copy), plain or compressed after:
    the chunk CRC rosbag2 stores ends that split's reading there; every message that comes out is one
    that was written, in order, and the line names the file."""
    rng, _ = fresh_rng()
    messages = source_messages(tmp_path)
    data = mcap_split(tmp_path / "whole.mcap", messages, chunk_size=4096)
    payload = messages[int(rng.integers(0, len(messages)))][3]
    damaged = next(index for index, message in enumerate(messages) if message[3] == payload)   # its first copy
    offset = data.index(payload) + int(rng.integers(0, len(payload)))
    data = data[:offset] + bytes([data[offset] ^ 0x10]) + data[offset + 1:]
    for compressed in (False, True):
        bag = tmp_path / f"bag_{compressed}"
        bag.mkdir()
        name = "bag_0.mcap" + (".zstd" if compressed else "")
        (bag / name).write_bytes(zstd_frame(data) if compressed else data)
        run = read_bag(bag)
        recovered = reindexed(bag, tmp_path / f"{bag.name}_complete")
        assert recovered == as_written(messages[:len(recovered)]) and len(recovered) <= damaged
        [notice] = run.notices
        assert f"reading {name} ended at byte" in notice and "CRC" in notice and f"after {len(recovered)} of" in notice


def test_a_compressed_split_damaged_after_closing_is_recovered_with_one_line(tmp_path, capsys):
    """A closed file-compressed bag (metadata.yaml written by rosbags' Writer) whose compressed split
    was cut short afterwards (a copy that stopped): rosbags' reader cannot decompress it, so it is
    recovered like an unfinished bag, in one line naming the file; reindex writes what was read."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    rng, _ = fresh_rng()
    messages = source_messages(tmp_path)
    store = get_typestore(Stores.ROS2_KILTED)
    bag = tmp_path / "bag"
    writer = Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.FILE, CompressionFormat.ZSTD)
    with writer:
        connections = {}
        for topic, msgtype, timestamp, raw in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], timestamp, raw)
    [split] = bag.glob("*.mcap.zstd")
    assert read_bag(bag).notices == [] and unfinished_bag(bag) is None
    with pytest.raises(ValueError, match="nothing to reindex"):
        reindex_bag(bag, tmp_path / "not_needed")
    data = split.read_bytes()
    split.write_bytes(data[:int(rng.integers(1, len(data)))])

    assert analyze.main([str(bag), "--output", str(tmp_path / "report")]) in (0, 2)   # 2: nothing usable left
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [notice] = [line for line in err.splitlines() if line.startswith("spec-vla-analyze: recovered")]
    recovered = reindexed(bag, tmp_path / "complete")
    assert recovered == as_written(messages[:len(recovered)]) and len(recovered) < len(messages)
    assert f"from a damaged bag {bag} (a compressed split does not decompress whole: EOFError" in notice
    assert f"reading {split.name} ended at byte" in notice and f"after {len(recovered)} of its messages" in notice
