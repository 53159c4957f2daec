"""A rosbag2 (MCAP) writer that a crash cannot empty: rosbags' `Writer`, with what it holds in
memory pushed to the disk on every `flush()`.

rosbags' MCAP writer collects messages in a chunk in memory and writes the chunk only when it
passes 1 MiB; the summary (index) and metadata.yaml come at `close()`. A recorder killed with
SIGKILL, or a power cut, therefore loses the open chunk: at the package's small message rates
(actions, decode statistics) that can be minutes. `flush()` closes the open chunk (a complete MCAP
chunk record with its message indexes), writes it out and fsyncs the file, so everything written
before the last flush survives; the recorder calls it every `FLUSH_PERIOD_S`. An unfinished bag is
read back by `spec_vla_ros.analysis.bags` (mcap's non-seeking reader) and made complete by
`spec-vla-bag-reindex`.

No rclpy here: the recorder node and the tests share this class.
"""
from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer

FLUSH_PERIOD_S = 0.5          # a kill loses at most about this (plus one timer period of lag)
BAG_VERSION = 9               # rosbag2 metadata version (Jazzy and later)


class FlushingBagWriter:
    """`rosbags.rosbag2.Writer` (MCAP, version 9) plus `flush()`; use as a context manager or
    `open()` / `close()`. `add_connection` and `write` are rosbags' own."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self.flushed_bytes = 0

    def open(self) -> None:
        self.writer.open()
        storage = self.writer.storage
        if not all(hasattr(storage, name) for name in ("chunk", "close_chunk", "bio")):
            self.writer.close()
            raise RuntimeError(f"rosbags {version('rosbags')}'s MCAP writer has no close_chunk (0.11.9 has): "
                               "install the version pinned in constraints.txt")
        _fsync_directory(self.path)          # the bag directory's entry survives a power cut too
        _fsync_directory(self.path.parent)

    def add_connection(self, *args, **kwargs):
        return self.writer.add_connection(*args, **kwargs)

    def write(self, connection, timestamp: int, data: bytes) -> None:
        self.writer.write(connection, timestamp, data)

    def flush(self) -> bool:
        """Write the open chunk (if it holds anything) and fsync; True if anything was written."""
        storage = self.writer.storage
        if storage is None or not storage.chunk.bio.tell():
            return False
        storage.close_chunk()
        storage.bio.flush()
        os.fsync(storage.bio.fileno())
        self.flushed_bytes = storage.bio.tell()
        return True

    def close(self) -> None:
        """Write the last chunk, the MCAP summary and metadata.yaml (rosbags' close)."""
        self.writer.close()

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc_info):
        self.close()


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
