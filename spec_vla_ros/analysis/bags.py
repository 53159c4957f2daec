"""Reading the package's bags with rosbags' AnyReader (rosbag2 MCAP or SQLite, no ROS needed):
the decode statistics, actions, instructions and episode results of a run, as plain values.

Topics are matched by their last name segment (`.../decode_stats`, `.../action`, ...), so bags
of remapped or namespaced nodes read the same.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..control import decode_values
from ..vla.constants import ACTION_DIM


@dataclass
class BagRun:
    path: Path
    message_counts: dict = field(default_factory=dict)    # topic -> messages in the bag
    decode_stats: list = field(default_factory=list)      # per action: DecodeStats.as_dict() and node counters,
                                                          # plus image_stamp_ns (source image) and received_ns
    actions: list = field(default_factory=list)           # published actions, 7 floats each
    instructions: list = field(default_factory=list)
    episodes: list = field(default_factory=list)          # the bridge's episode results


def read_bag(path) -> BagRun:
    from rosbags.highlevel import AnyReader

    run = BagRun(Path(path))
    with AnyReader([run.path]) as reader:
        run.message_counts = {connection.topic: connection.msgcount for connection in reader.connections}
        wanted = [connection for connection in reader.connections
                  if connection.topic.rsplit("/", 1)[-1] in ("decode_stats", "action", "instruction", "episode")]
        if not wanted:                   # rosbags reads every connection when given none
            return run
        for connection, timestamp, raw in reader.messages(connections=wanted):
            msg = reader.deserialize(raw, connection.msgtype)
            name = connection.topic.rsplit("/", 1)[-1]
            if name == "decode_stats":
                for status in msg.status:
                    stats = decode_values((kv.key, kv.value) for kv in status.values)
                    stats["image_stamp_ns"] = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                    stats["received_ns"] = timestamp
                    run.decode_stats.append(stats)
            elif name == "action":
                run.actions.append([float(v) for v in msg.data])
            elif name == "instruction":
                run.instructions.append(msg.data)
            elif name == "episode":
                run.episodes.append(json.loads(msg.data))
    return run


def observation_episodes(path) -> list[tuple[str, list]]:
    """(instruction, camera frames) per episode from a bag: the frames the policy acted on (their
    stamps appear in decode_stats; every frame if the bag has none), split at each episode result
    and each change of instruction. Reads the camera topic, which `read_bag` does not."""
    from rosbags.highlevel import AnyReader

    from ..ros_conversions import msg_to_image   # cv_bridge: only here

    acted = {stats["image_stamp_ns"] for stats in read_bag(path).decode_stats}
    episodes, instruction, frames = [], None, []

    def close_episode():
        if frames:
            episodes.append((instruction, frames[:]))
            frames.clear()

    with AnyReader([Path(path)]) as reader:
        wanted = [c for c in reader.connections if c.topic.split("/")[-2:] == ["camera", "image_raw"]
                  or c.topic.rsplit("/", 1)[-1] in ("instruction", "episode")]
        for connection, _, raw in reader.messages(connections=wanted) if wanted else ():   # none = all, in rosbags
            msg = reader.deserialize(raw, connection.msgtype)
            name = connection.topic.rsplit("/", 1)[-1]
            if name == "episode":
                close_episode()
            elif name == "instruction":
                if msg.data != instruction:
                    close_episode()
                    instruction = msg.data
            elif instruction is not None and (not acted or msg.header.stamp.sec * 1_000_000_000
                                              + msg.header.stamp.nanosec in acted):
                frames.append(msg_to_image(msg))
    close_episode()
    if not episodes:
        raise ValueError(f"{path}: no camera/image_raw frames with an instruction before them")
    return episodes


def summarize_decoding(decode_stats: list[dict]) -> list[dict]:
    """One row per (draft, acceptance) in order of first use: actions, verifier passes per action,
    acceptance length (tokens per verifier pass) and ms per action."""
    groups: dict[tuple, list[dict]] = {}
    for stats in decode_stats:
        groups.setdefault((stats["draft"], stats["acceptance"]), []).append(stats)
    rows = []
    for (draft, acceptance), group in groups.items():
        passes = sum(stats["verifier_passes"] for stats in group)
        total_ms = [stats["total_ms"] for stats in group]
        rows.append({
            "draft": draft, "acceptance": acceptance, "actions": len(group),
            "passes_per_action": passes / len(group),
            "acceptance_length": ACTION_DIM * len(group) / passes if passes else 0.0,
            "median_ms": float(np.median(total_ms)), "p90_ms": float(np.percentile(total_ms, 90)),
            "draft_ms": float(np.mean([stats["draft_ms"] for stats in group])),
            "verify_ms": float(np.mean([stats["verify_ms"] for stats in group])),
        })
    return rows
