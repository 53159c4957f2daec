"""ros/policy_workers.py without ROS or a model: what the README's "Cameras" section documents for
the inference thread. An unexpected error while computing an action (in `act`, in the episode
reset, or while publishing) is counted in `inference_errors`, logged with its type, and the thread
serves the next frame; a bad frame (`act` raising ValueError) is counted in `inputs_rejected`
instead. The next published action sees both counts, as the node's decode_stats report does
(PolicyNode._publish reads `counts_now()`)."""
import threading
import time
from types import SimpleNamespace

import numpy as np

from spec_vla_ros.ros.policy_workers import PolicyWorkers

TIMEOUT_S = 10.0


class Clock:
    """Stands in for the node clock: times are nanoseconds, differences have `.nanoseconds`."""

    class Time(int):
        def __sub__(self, other):
            return SimpleNamespace(nanoseconds=int(self) - int(other))

    def now(self):
        return self.Time(time.monotonic_ns())


class ScriptedPolicy:
    """`act` and `reset_episode` take their outcomes, in order, from scripts: an exception is
    raised, anything else is returned (act: as the action, with stand-in stats)."""

    def __init__(self, acts: list, resets: list):
        self.acts, self.resets = list(acts), list(resets)
        self.config = SimpleNamespace(draft="ar")

    def reset_episode(self) -> None:
        outcome = self.resets.pop(0) if self.resets else None
        if isinstance(outcome, BaseException):
            raise outcome

    def act(self, image, instruction):
        outcome = self.acts.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome, SimpleNamespace(tokens=[], instruction=instruction)


class Logger:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda message, **_: self.lines.append((level, message))


def test_an_inference_error_is_counted_and_the_next_frame_is_served():
    clock, logger, reports, published = Clock(), Logger(), [], []
    done = threading.Condition()
    fail_publish = [False]
    policy = ScriptedPolicy(
        acts=[RuntimeError("CUDA error: an illegal memory access"), ValueError("image is 0 x 0"),
              np.full(7, 0.1), np.full(7, 0.2), np.full(7, 0.3)],
        resets=[None, KeyError("draft state")])

    def publish(action, stats, stamp, since, policy_ms):
        if fail_publish[0]:
            raise RuntimeError("publisher's context is invalid")
        with done:
            published.append((stamp, action.tolist(), workers.counts_now()))
            done.notify_all()

    workers = PolicyWorkers(policy, clock.now, {"stale_image_timeout_sec": 60.0}, publish, logger,
                            lambda level, message: reports.append((level, message)))

    def serve(stamp: str, counted: dict | None = None) -> None:
        """Offer one frame; wait until it was handled: counted as `counted` says, else published."""
        before = len(published)
        workers.offer_frame(np.zeros((4, 4, 3), np.uint8), clock.now(), stamp)
        deadline = time.monotonic() + TIMEOUT_S
        while not (all(workers.counts_now()[k] == v for k, v in counted.items()) if counted else
                   len(published) > before):
            assert time.monotonic() < deadline, (stamp, workers.counts_now(), reports)
            with done:
                done.wait(0.05)

    workers.start()
    try:
        workers.set_instruction("put the bowl on the plate")
        serve("frame 1", {"inference_errors": 1})                       # act raised RuntimeError
        serve("frame 2", {"inputs_rejected": 1})                        # a bad frame is not an inference error
        serve("frame 3")
        assert published[-1] == ("frame 3", [0.1] * 7, {**published[-1][2], "inference_errors": 1,
                                                        "inputs_rejected": 1})
        workers.set_instruction("open the drawer")                      # a new episode; its reset raises
        serve("frame 4")
        assert published[-1][:2] == ("frame 4", [0.2] * 7) and published[-1][2]["inference_errors"] == 2
        fail_publish[0] = True
        serve("frame 5", {"inference_errors": 3})                       # publishing raised
    finally:
        workers.stop(TIMEOUT_S)
    assert [stamp for stamp, _, _ in published] == ["frame 3", "frame 4"]
    counts = workers.counts_now()
    assert (counts["inference_errors"], counts["inputs_rejected"]) == (3, 1)
    errors = [message for level, message in reports if level == "error"]
    assert errors == ["no action for this frame: RuntimeError: CUDA error: an illegal memory access",
                      "could not reset the episode: KeyError: 'draft state'",
                      "could not publish the action: RuntimeError: publisher's context is invalid"]
    assert reports.count(("warning", "no action for this frame: image is 0 x 0")) == 1
    assert not policy.acts and all(thread.is_alive() is False for thread in workers._threads)
