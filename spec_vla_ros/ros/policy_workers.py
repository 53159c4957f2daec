"""The policy node's two worker threads and what they share with the executor thread.

- inference: takes the newest frame, skips it if it is older than `stale_image_timeout_sec`,
  runs one action (never two at once) and hands it to the node to publish.
- loader: builds a new decoder after a draft / decoding parameter change. The old decoder keeps
  serving meanwhile; VLAPolicy installs the new one between two actions.

The executor thread only hands things over (`offer_frame`, `set_instruction`, `request_reset`,
`request_decoder`) and never waits on the model. Everything shared lives behind one condition.
No exception leaves a thread: a bad frame is counted in `inputs_rejected`, anything else in
`inference_errors`, and the thread goes on with the next frame.
"""
from __future__ import annotations

import threading
import time

from ..errors import one_line
from .decode_report import COUNTER_KEYS
from .topics import INSTRUCTION

WARNING_PERIOD_S = 5.0


class PolicyWorkers:
    """`policy`: a VLAPolicy. `now()`: the node clock's current rclpy Time. `values`: the node's
    live parameter values (read: stale_image_timeout_sec). `publish(action, stats, stamp_msg,
    since, policy_ms)`: the node's publishing step. `logger`, `report`: the node's logger and its
    rate-limited log."""

    def __init__(self, policy, now, values: dict, publish, logger, report):
        self.policy, self._now, self.values, self._publish = policy, now, values, publish
        self.logger, self.report = logger, report
        # Shared between the threads, guarded by _condition.
        self._condition = threading.Condition()
        self._frame = None              # newest unused frame: (image, time its age counts from, header stamp)
        self._instruction = None
        self._reset_requested = False
        self._pending_config = None     # (PolicyConfig, its ResolvedDraft) waiting for the loader
        self._stopping = False
        self.counts = dict.fromkeys(COUNTER_KEYS, 0)
        self._threads = [threading.Thread(target=self._serve, name="inference", daemon=True),
                         threading.Thread(target=self._load, name="decoder_loader", daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float) -> None:
        """Let the action in flight finish (up to `timeout_s` per thread), then end the threads."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)

    def count(self, name: str) -> None:
        with self._condition:
            self.counts[name] += 1

    def counts_now(self) -> dict:
        with self._condition:
            return dict(self.counts)

    # --- handed over by the executor thread ---------------------------------------------

    def offer_frame(self, image, since, stamp_msg) -> None:
        """The newest frame replaces an unused one (counted as dropped), never queues behind it."""
        with self._condition:
            if self._frame is not None:
                self.counts["frames_dropped"] += 1
            self._frame = (image, since, stamp_msg)
            self._condition.notify_all()

    def set_instruction(self, instruction: str | None) -> None:
        """None: no valid instruction (no actions until one arrives). A change starts a new episode."""
        with self._condition:
            if instruction != self._instruction:
                self._reset_requested = True
            self._instruction = instruction

    def request_reset(self) -> None:
        with self._condition:
            self._reset_requested = True

    def request_decoder(self, config, resolved) -> None:
        with self._condition:
            self._pending_config = (config, resolved)
            self._condition.notify_all()

    # --- inference thread -----------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._stopping or self._frame is not None)
                if self._stopping:
                    return
                (image, since, stamp_msg), self._frame = self._frame, None
                instruction, reset = self._instruction, self._reset_requested
                self._reset_requested = False
            age_s = (self._now() - since).nanoseconds * 1e-9
            if age_s > self.values["stale_image_timeout_sec"]:
                self.count("frames_stale")
                self.logger.warning(f"skipping a frame {age_s:.2f} s old (stale_image_timeout_sec="
                                    f"{self.values['stale_image_timeout_sec']})", throttle_duration_sec=WARNING_PERIOD_S)
                continue
            if instruction is None:
                self.logger.warning(f"no valid instruction yet; publish one on '{INSTRUCTION.name}'",
                                    throttle_duration_sec=WARNING_PERIOD_S)
                continue
            if reset:
                try:
                    self.policy.reset_episode()
                except Exception as error:  # noqa: BLE001
                    self.count("inference_errors")
                    self.report("error", f"could not reset the episode: {type(error).__name__}: {one_line(error)}")
            started = time.perf_counter()
            try:
                action, stats = self.policy.act(image, instruction)
            except ValueError as error:
                self.count("inputs_rejected")
                self.report("warning", f"no action for this frame: {one_line(error)}")
                continue
            except Exception as error:  # noqa: BLE001 -- the node keeps serving the next frame
                self.count("inference_errors")
                self.report("error", f"no action for this frame: {type(error).__name__}: {one_line(error)}")
                continue
            try:
                self._publish(action, stats, stamp_msg, since, (time.perf_counter() - started) * 1e3)
            except Exception as error:  # noqa: BLE001 -- e.g. the context shut down mid-publish
                self.count("inference_errors")
                self.report("error", f"could not publish the action: {type(error).__name__}: {one_line(error)}")

    # --- loader thread --------------------------------------------------------------------

    def _load(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._stopping or self._pending_config is not None)
                if self._stopping:
                    return
                (config, resolved), self._pending_config = self._pending_config, None
            started = time.monotonic()
            try:
                decoder = self.policy.build_decoder(config, resolved)
            except Exception as error:  # noqa: BLE001 -- the old decoder keeps serving
                self.logger.error(f"could not build the decoder for draft '{config.draft}': "
                                  f"{type(error).__name__}: {one_line(error)}; "
                                  f"draft '{self.policy.config.draft}' keeps serving")
                continue
            with self._condition:
                if self._pending_config is not None:
                    continue                     # superseded while loading: build the newer one
            self.policy.set_decoder(decoder, config)
            self.logger.info(f"draft '{config.draft}' ({config.acceptance} acceptance, "
                             f"{decoder.shape.name if decoder.draft else 'no draft'}) ready in "
                             f"{time.monotonic() - started:.1f} s; it serves from the next action")
