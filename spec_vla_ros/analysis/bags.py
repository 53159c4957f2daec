"""Reading the package's bags (rosbag2, MCAP or SQLite, no ROS needed): the decode statistics,
actions, instructions and episode results of a run, as plain values.

A complete bag is read with rosbags' AnyReader. A bag whose recorder never closed it (SIGKILL,
power cut: no metadata.yaml, or an MCAP file without its summary) is read with mcap's
non-seeking reader, which walks the records from the start of each split file and stops at the
first one the crash cut off: what reached the disk is recovered, and the run's `notices` say so.
Split files may be plain (`<bag>_N.mcap`) or as rosbag2's file compression leaves them
(`<bag>_N.mcap.zstd`), in any mix: rosbag2 compresses each split once it has closed it, on its own
threads and so in any order, and removes the plain file only after. Compressed splits are
decompressed as a stream while they are read; the bag directory is never written to.
`reindex_bag` (`spec-vla-bag-reindex`) rewrites such a bag into a complete one.

A message the analysis cannot use (an episode result without `instruction`, a decode_stats
status without `draft` (decode_report.MalformedReport), an action that is not 7 values, bytes
that do not decode as the topic's type) is skipped and counted per topic, never raised. Fields
beyond the expected ones are kept (the bridge and the evaluation add fields to their records;
DecodeReport.unknown).

Topics are matched by their last name segment (`.../decode_stats`, `.../action`, ...), so bags
of remapped or namespaced nodes read the same.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePath
from typing import Callable, Iterator

import numpy as np

from sim_bridge.libero_goal import EpisodeResult

from ..ros import topics
from ..ros.bag_writer import BAG_VERSION
from ..decoding.stats import DecodeStats, tree_statistics
from ..ros.decode_report import DecodeReport, has_json_type
from ..vla.constants import ACTION_DIM

log = logging.getLogger(__name__)

MCAP_MAGIC = b"\x89MCAP0\r\n"
MCAP_SUFFIX = ".mcap"
# rosbag2's file compression (`ros2 bag record --compression-mode file`): its one compressor,
# rosbag2_compression_zstd, writes a closed split `F` as one zstd frame to `F.zstd`. (lz4 in a
# rosbag2 bag is only MCAP's own chunk compression, inside a file, which mcap's reader undoes.)
COMPRESSED_SUFFIX = ".zstd"
RUN_TOPICS = tuple(topic.basename for topic in (topics.DECODE_STATS, topics.ACTION, topics.INSTRUCTION,
                                                 topics.EPISODE))
_CAMERA_NAME = topics.CAMERA.name.split("/")      # the camera topic is matched by its last two segments
# Episode results: EpisodeResult's fields; those added after the first bags were recorded are optional.
_FIELD_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
_NEWER_EPISODE_FIELDS = ("interrupted", "seeding")
EPISODE_FIELDS = {f.name: _FIELD_TYPES[f.type] for f in fields(EpisodeResult) if f.name not in _NEWER_EPISODE_FIELDS}
OPTIONAL_EPISODE_FIELDS = {f.name: _FIELD_TYPES[f.type] for f in fields(EpisodeResult)
                           if f.name in _NEWER_EPISODE_FIELDS}


class MalformedMessage(ValueError):
    """A message that lacks what the analysis needs; skipped and counted."""


@dataclass
class Recovery:
    """What was read from an unfinished bag: one file per split, in recording order, and why the
    bag counts as unfinished."""
    files: list[Path]
    reason: str = "no metadata.yaml: the recorder did not close it"
    state: str = "unfinished"                     # or "damaged": closed, then a compressed split was cut or damaged
    messages: int = 0
    cut_off: list = field(default_factory=list)   # per file read only in part: where reading ended, and why

    def notice(self, path: Path) -> str:
        """One line: how many messages, from which files, and every file a crash or damage cut short."""
        compressed = sum(file.name.endswith(COMPRESSED_SUFFIX) for file in self.files)
        files = (f" in {len(self.files)} split file{'s' if len(self.files) > 1 else ''} ({compressed} zstd-compressed)"
                 if len(self.files) > 1 or compressed else "")
        tail = "".join(f"; {cut}" for cut in self.cut_off)
        return (f"recovered {self.messages} messages from {'an' if self.state[0] in 'aeiou' else 'a'} {self.state} "
                f"bag {path} ({self.reason}){files}{tail}; "
                f"`spec-vla-bag-reindex {path}` writes a complete copy")


@dataclass
class BagRun:
    path: Path
    message_counts: dict = field(default_factory=dict)    # topic -> messages in the bag
    decode_stats: list = field(default_factory=list)      # per action: its DecodeReport
    decode_stamps: list = field(default_factory=list)     # per DecodeReport: (source image stamp, received) in ns
    actions: list = field(default_factory=list)           # published actions, 7 floats each
    instructions: list = field(default_factory=list)
    episodes: list = field(default_factory=list)          # the bridge's episode results
    recovery: Recovery | None = None                      # set when the bag was unfinished
    skipped: dict = field(default_factory=dict)           # topic -> [count, first reason]

    def skip(self, topic: str, reason: str) -> None:
        entry = self.skipped.setdefault(topic, [0, reason])
        entry[0] += 1

    @property
    def notices(self) -> list[str]:
        """One line per thing a reader of the analysis must know: recovery, skipped messages."""
        lines = [self.recovery.notice(self.path)] if self.recovery else []
        lines += [f"skipped {count} {topic} message(s) the analysis cannot use (first: {reason})"
                  for topic, (count, reason) in sorted(self.skipped.items())]
        return lines


# --- finding out whether a bag is complete ---------------------------------------------------

@dataclass(frozen=True)
class Split:
    """One split of a bag (`<bag>_N.mcap`) as the disk holds it: the plain MCAP file, its
    zstd-compressed copy, or both (the recorder was killed while compressing it, or before it
    removed the plain file)."""
    plain: Path | None = None
    compressed: Path | None = None

    @property
    def files(self) -> list[Path]:
        return [file for file in (self.plain, self.compressed) if file is not None]

    @property
    def source(self) -> Path:
        """The file to read: the plain one when it is complete or alone (rosbag2 compresses a split
        only after closing it, and removes it only once the compressed copy is whole), otherwise
        the compressed copy."""
        if self.plain is not None and (self.compressed is None or _ends_with_magic(self.plain)):
            return self.plain
        return self.compressed


def bag_splits(path: Path) -> list[Split]:
    """The MCAP splits of a bag directory, plain and compressed, in recording order."""
    found: dict[str, dict] = {}
    for file in path.iterdir():
        if not file.is_file():
            continue
        if file.name.endswith(MCAP_SUFFIX):
            found.setdefault(file.name, {})["plain"] = file
        elif file.name.endswith(MCAP_SUFFIX + COMPRESSED_SUFFIX):
            found.setdefault(file.name[:-len(COMPRESSED_SUFFIX)], {})["compressed"] = file
    return [Split(**found[name]) for name in sorted(found, key=_natural_key)]


def unfinished_bag(path) -> Recovery | None:
    """What to recover from a bag directory that was not closed; None for a complete bag, and for
    anything that is not an MCAP bag directory (AnyReader then says what it is). rosbag2 writes
    metadata.yaml last, after every split is closed and compressed: a bag is complete when its
    metadata.yaml lists exactly the split files on disk and each plain one ends with MCAP's magic
    (its summary and footer were written)."""
    path = Path(path)
    splits = bag_splits(path) if path.is_dir() else []
    if not splits:
        return None
    on_disk = {file.name for split in splits for file in split.files}
    listed, reason = _listed_files(path / "metadata.yaml")
    if not reason and listed != on_disk:
        reason = (f"its metadata.yaml lists {', '.join(sorted(listed, key=_natural_key)) or 'no file'}, "
                  f"the disk holds {', '.join(sorted(on_disk, key=_natural_key))}")
    if not reason and not all(_ends_with_magic(split.plain) for split in splits if split.plain is not None):
        reason = "no MCAP summary: the recorder did not close it"
    return Recovery([split.source for split in splits], reason) if reason else None


def damaged_after_closing(path) -> Recovery | None:
    """What to recover from a bag its metadata.yaml calls complete but whose zstd-compressed split
    does not decompress whole (cut short or damaged after the recorder closed it: a copy that
    stopped, a full disk); None when every split decompresses (rosbags' reader tries them all).
    ValueError: rosbags cannot read the bag for another reason (it says which)."""
    from rosbags.highlevel import AnyReader, AnyReaderError

    path = Path(path)
    if not path.is_dir() or not any(split.compressed for split in bag_splits(path)):
        return None
    try:
        with AnyReader([path]):
            return None
    except (_zstd().ZstdError, EOFError) as error:
        return _damaged_after_closing(path, error)
    except AnyReaderError as error:
        raise ValueError(f"{path}: {error}") from None


def _damaged_after_closing(path: Path, error: Exception) -> Recovery:
    return Recovery([split.source for split in bag_splits(path)],
                    f"a compressed split does not decompress whole: {_error_text(error)}", state="damaged")


def unfinished_mcap_files(path) -> list[Path]:
    """The files to read (one per split, in recording order) of a bag directory that was not
    closed; [] for a complete bag and for anything that is not an MCAP bag directory."""
    recovery = unfinished_bag(path)
    return recovery.files if recovery else []


def _listed_files(metadata: Path) -> tuple[set, str]:
    """The file names a metadata.yaml lists, and '' or why there are none."""
    import yaml

    if not metadata.exists():
        return set(), "no metadata.yaml: the recorder did not close it"
    try:
        information = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
        return {PurePath(name).name for name in information["relative_file_paths"]}, ""
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as error:
        return set(), f"its metadata.yaml is unreadable: {_error_text(error)}"


def _natural_key(name: str) -> list:
    """bag_2.mcap before bag_10.mcap (rosbag2 numbers split files)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _ends_with_magic(file: Path) -> bool:
    with file.open("rb") as stream:
        if stream.seek(0, 2) < 2 * len(MCAP_MAGIC):
            return False
        stream.seek(-len(MCAP_MAGIC), 2)
        return stream.read() == MCAP_MAGIC


def _error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


# --- reading messages, complete or recovered -------------------------------------------------

def recovered_records(recovery: Recovery) -> Iterator[tuple]:
    """(schema, channel, message) records of unfinished MCAP files (mcap's records), in file
    order, up to the first record a crash cut off (or damage made unreadable) in each file;
    counts into `recovery`. Chunks are checked against their CRC where the writer stored one
    (rosbag2 does), so damaged bytes end a file's reading instead of coming out as messages."""
    from mcap.reader import NonSeekingReader

    for file in recovery.files:
        read = 0
        with _open_split(file) as stream:
            records = NonSeekingReader(stream, validate_crcs=True).iter_messages(log_time_order=False)
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except Exception as error:   # mcap: EndOfFile, McapError, struct errors; zstd: EOFError, ZstdError
                    where = " of its decompressed MCAP" if file.name.endswith(COMPRESSED_SUFFIX) else ""
                    recovery.cut_off.append(f"reading {file.name} ended at byte {stream.tell()}{where} "
                                            f"({_error_text(error)}) after {read} of its messages")
                    break
                read += 1
                recovery.messages += 1
                yield record


def _open_split(file: Path):
    """A split file as a stream of MCAP bytes: a compressed one is decompressed as it is read."""
    return _zstd().open(file, "rb") if file.name.endswith(COMPRESSED_SUFFIX) else file.open("rb")


def _zstd():
    """The zstd module rosbags reads compressed bags with: cut-short streams raise EOFError."""
    try:
        from compression import zstd           # Python 3.14's standard library
    except ImportError:
        from backports import zstd             # the same module before 3.14
    return zstd


class _Undecodable:
    """Stands in for a message whose bytes are not its type."""

    def __init__(self, reason: str):
        self.reason = reason


class BagReader:
    """Messages of a bag directory, complete (rosbags' AnyReader) or unfinished (mcap's
    non-seeking reader), deserialized with rosbags' typestores."""

    def __init__(self, path):
        self.path = Path(path)
        self.recovery = unfinished_bag(self.path)
        self.message_counts: dict[str, int] = {}

    def messages(self, wanted: Callable[[str], bool]) -> Iterator[tuple[str, int, object]]:
        """(topic, receive time in ns, message) for the topics `wanted(topic)` accepts, in
        recording order; a message that does not deserialize comes as an `_Undecodable`.
        Fills `message_counts` (every topic) as it goes."""
        if self.recovery is None:
            yield from self._indexed(wanted)
        else:
            self.recovery.messages, self.recovery.cut_off = 0, []
            yield from self._recovered(wanted)

    def _indexed(self, wanted):
        from rosbags.highlevel import AnyReader

        reader = AnyReader([self.path])
        try:
            reader.open()                    # decompresses every compressed split, before any message
        except (_zstd().ZstdError, EOFError) as error:
            self.recovery = _damaged_after_closing(self.path, error)
            self.message_counts = {}
            yield from self._recovered(wanted)
            return
        try:
            self.message_counts = {connection.topic: connection.msgcount for connection in reader.connections}
            connections = [connection for connection in reader.connections if wanted(connection.topic)]
            if not connections:              # rosbags reads every connection when given none
                return
            for connection, timestamp, raw in reader.messages(connections=connections):
                yield connection.topic, timestamp, _deserialize(reader.deserialize, raw, connection.msgtype)
        finally:
            reader.close()

    def _recovered(self, wanted):
        from rosbags.typesys import Stores, get_typestore

        store = get_typestore(Stores.ROS2_KILTED)
        self.message_counts = {}
        for schema, channel, message in recovered_records(self.recovery):
            self.message_counts[channel.topic] = self.message_counts.get(channel.topic, 0) + 1
            if not wanted(channel.topic):
                continue
            if schema is None:
                yield channel.topic, message.log_time, _Undecodable("no schema for its channel")
                continue
            problem = register_schema(store, schema)
            yield channel.topic, message.log_time, (_Undecodable(problem) if problem else
                                                    _deserialize(store.deserialize_cdr, message.data, schema.name))


def register_schema(store, schema) -> str:
    """Make a typestore know an MCAP schema's type (rosbags' parsers); '' or what went wrong."""
    from rosbags.typesys import TypesysError, get_types_from_idl, get_types_from_msg

    if schema.name in store.types:
        return ""
    try:
        text = schema.data.decode()
        if schema.encoding == "ros2msg":
            store.register(get_types_from_msg(text, schema.name))
        elif schema.encoding == "ros2idl":
            store.register(get_types_from_idl(text))
        else:
            return f"schema encoding {schema.encoding!r} is not ros2msg or ros2idl"
    except (TypesysError, UnicodeDecodeError, ValueError) as error:
        return f"cannot parse the schema of {schema.name}: {error}"
    return "" if schema.name in store.types else f"schema does not define {schema.name}"


def _deserialize(deserialize, raw, msgtype):
    try:
        return deserialize(raw, msgtype)
    except Exception as error:        # any bytes may be in a bag; rosbags raises several kinds
        return _Undecodable(f"not a {msgtype}: {type(error).__name__}: {error}")


def _name(topic: str) -> str:
    return topic.rsplit("/", 1)[-1]


# --- the run's values --------------------------------------------------------------------------

def read_bag(path) -> BagRun:
    """The run in a bag; recovered when the bag is unfinished, malformed messages skipped."""
    reader = BagReader(path)
    run = BagRun(reader.path)
    for topic, timestamp, msg in reader.messages(lambda topic: _name(topic) in RUN_TOPICS):
        try:
            if isinstance(msg, _Undecodable):
                raise MalformedMessage(msg.reason)
            _take(run, _name(topic), timestamp, msg, topic)
        except (MalformedMessage, AttributeError, TypeError, ValueError) as error:
            run.skip(topic, str(error) or type(error).__name__)
    run.message_counts = reader.message_counts
    run.recovery = reader.recovery
    return run


def _take(run: BagRun, name: str, timestamp: int, msg, topic: str) -> None:
    if name == topics.DECODE_STATS.basename:
        for status in msg.status:            # one status per action; each checked on its own
            try:
                report = DecodeReport.from_pairs((kv.key, kv.value) for kv in status.values)
            except ValueError as error:
                run.skip(topic, str(error))
                continue
            run.decode_stats.append(report)
            run.decode_stamps.append((msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, timestamp))
    elif name == topics.ACTION.basename:
        values = [float(v) for v in msg.data]
        if len(values) != ACTION_DIM:
            raise MalformedMessage(f"{len(values)} values, expected {ACTION_DIM}")
        run.actions.append(values)
    elif name == topics.INSTRUCTION.basename:
        if not isinstance(msg.data, str):
            raise MalformedMessage("no text")
        run.instructions.append(msg.data)
    elif name == topics.EPISODE.basename:
        try:
            record = json.loads(msg.data)
        except ValueError as error:
            raise MalformedMessage(f"not JSON: {error}") from None
        problem = field_problem(record, EPISODE_FIELDS, OPTIONAL_EPISODE_FIELDS)
        if problem:
            raise MalformedMessage(problem)
        run.episodes.append(record)


def field_problem(record, required: dict, optional: dict) -> str:
    """'' if `record` is a dict with every required field (and the optional ones it has) of the
    right type; otherwise what is wrong, for the skip notice."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, expected an object"
    missing = [name for name in required if name not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    for name, kind in {**required, **{k: v for k, v in optional.items() if k in record}}.items():
        if not has_json_type(record[name], kind):
            return f"{name} is {record[name]!r}, expected {kind.__name__}"
    return ""


def observation_episodes(path) -> list[tuple[str, list]]:
    """(instruction, camera frames) per episode from a bag: the frames the policy acted on (their
    stamps appear in decode_stats; every frame if the bag has none), split at each episode result
    and each change of instruction. Reads the camera topic, which `read_bag` does not. An
    unfinished bag is recovered and frames that do not convert are skipped; both are logged
    (warnings) with counts."""
    from ..ros.conversions import msg_to_image  # image conversion: only here

    run = read_bag(path)
    for notice in run.notices:
        log.warning(notice)
    acted = {image_stamp_ns for image_stamp_ns, _ in run.decode_stamps}
    episodes, instruction, frames = [], None, []
    skipped, first_reason = 0, ""

    def close_episode():
        if frames:
            episodes.append((instruction, frames[:]))
            frames.clear()

    def wanted(topic: str) -> bool:
        return (topic.split("/")[-len(_CAMERA_NAME):] == _CAMERA_NAME
                or _name(topic) in (topics.INSTRUCTION.basename, topics.EPISODE.basename))

    for topic, _, msg in BagReader(path).messages(wanted):
        name = _name(topic)
        if name == topics.EPISODE.basename:  # a boundary, even when its record is malformed
            close_episode()
            continue
        try:
            if isinstance(msg, _Undecodable):
                raise MalformedMessage(msg.reason)
            if name == topics.INSTRUCTION.basename:
                if msg.data != instruction:
                    close_episode()
                    instruction = msg.data
            elif instruction is not None and (not acted or msg.header.stamp.sec * 1_000_000_000
                                              + msg.header.stamp.nanosec in acted):
                frames.append(msg_to_image(msg))
        except Exception as error:           # one bad frame must not end a collection
            skipped += 1
            first_reason = first_reason or f"{topic}: {type(error).__name__}: {error}"
    close_episode()
    if skipped:
        log.warning("skipped %d camera/instruction message(s) that do not convert (first: %s)", skipped, first_reason)
    if not episodes:
        raise ValueError(f"{path}: no {topics.CAMERA.name} frames with an instruction before them")
    return episodes


def decoding_label(stats: DecodeStats) -> str:
    """'draft acceptance shape' ('draft acceptance' for autoregressive decoding and for statistics
    recorded before trees, which name no shape): what the bag analysis groups actions by."""
    return " ".join(part for part in (stats.draft, stats.acceptance, stats.tree_shape) if part)


def summarize_decoding(reports: list[DecodeReport]) -> list[dict]:
    """One row per (draft, acceptance, tree shape) in order of first use: actions, verifier passes
    per action, acceptance length (tokens per verifier pass), ms per action, and the kept paths'
    depth and sources (analysis.report.tree_statistics)."""
    groups: dict[tuple, list] = {}
    for report in reports:
        stats = report.stats
        groups.setdefault((stats.draft, stats.acceptance, stats.tree_shape), []).append(stats)
    rows = []
    for (draft, acceptance, shape), group in groups.items():
        passes = sum(stats.verifier_passes for stats in group)
        total_ms = [stats.total_ms for stats in group]
        rows.append({
            "draft": draft, "acceptance": acceptance, "shape": shape or None, "actions": len(group),
            **tree_statistics(group),
            "passes_per_action": passes / len(group),
            "acceptance_length": ACTION_DIM * len(group) / passes if passes else 0.0,
            "median_ms": float(np.median(total_ms)), "p90_ms": float(np.percentile(total_ms, 90)),
            "draft_ms": float(np.mean([stats.draft_ms for stats in group])),
            "verify_ms": float(np.mean([stats.verify_ms for stats in group])),
        })
    return rows


# --- making an unfinished bag complete ---------------------------------------------------------

def reindex_bag(path, output=None) -> tuple[Path, int, Recovery]:
    """Rewrite an unfinished MCAP bag (or one whose compressed split was damaged after it was
    closed) into a complete one (MCAP summary and metadata.yaml), as `ros2 bag reindex` does, at
    `output` (default `<bag>_reindexed`, which must not exist); the unfinished bag is left as it is.
    Every recovered message keeps its topic, type, definition, offered QoS, receive time and bytes.
    Returns (output, messages written, recovery).

    ValueError: the bag is complete, or not an MCAP bag; rosbags' WriterError: output exists."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.metadata import parse_qos
    from rosbags.typesys import Stores, get_typestore

    source = Path(path)
    output = Path(output) if output is not None else source.with_name(source.name + "_reindexed")
    recovery = unfinished_bag(source) or damaged_after_closing(source)
    if recovery is None:
        raise ValueError(f"{source} is not an unfinished MCAP bag (its metadata.yaml lists its complete MCAP "
                         "files, or it has no MCAP file): nothing to reindex")
    store = get_typestore(Stores.ROS2_KILTED)
    connections, written, schemaless = {}, 0, set()
    with Writer(output, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP) as writer:
        for schema, channel, message in recovered_records(recovery):
            qos = channel.metadata.get("offered_qos_profiles", "")
            key = (channel.topic, schema.name if schema else "", qos)
            if key not in connections:
                problem = "no schema" if schema is None else register_schema(store, schema)
                if problem:
                    schemaless.add(f"{channel.topic} ({problem})")
                    connections[key] = None
                else:
                    connections[key] = writer.add_connection(
                        channel.topic, schema.name, msgdef=schema.data.decode(),
                        rihs01=store.hash_rihs01(schema.name), offered_qos_profiles=parse_qos(qos))
            if connections[key] is not None:
                writer.write(connections[key], message.log_time, message.data)
                written += 1
    if schemaless:
        log.warning("left out the messages of %s: rosbag2 needs each topic's message definition",
                    ", ".join(sorted(schemaless)))
    return output, written, recovery
