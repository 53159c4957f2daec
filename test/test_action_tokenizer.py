import json

import numpy as np
import pytest

from spec_vla_ros.vla import constants as C
from spec_vla_ros.vla.action_tokenizer import (LIBERO_GOAL_STATS, actions_to_token_ids, load_norm_stats,
                                               select_norm_stats, token_ids_to_actions, token_ids_to_bin_indices)


def test_every_bin_center_round_trips():
    ids = actions_to_token_ids(C.BIN_CENTERS)
    assert ids.tolist() == list(range(C.ACTION_TOKEN_MAX, C.ACTION_TOKEN_MIN, -1))   # 31999 .. 31745
    np.testing.assert_array_equal(token_ids_to_actions(ids), C.BIN_CENTERS)


def test_token_id_range_and_direction():
    ids = actions_to_token_ids(np.linspace(-3, 3, 1001))
    assert ids.min() == C.ACTION_TOKEN_MIN == 31744 and ids.max() == C.ACTION_TOKEN_MAX == 31999
    assert np.all(np.diff(ids) <= 0), "a larger action must never get a larger token id"


@pytest.mark.parametrize("action, token_id", [(0.0, 31872), (1.0, 31744), (-1.0, 31999), (5.0, 31744),
                                               (-5.0, 31999), (0.5, 31808), (-0.5, 31936)])
def test_hand_computed_token_ids(action, token_id):
    # digitize(0.5, linspace(-1, 1, 256)) = 192 since edges[191] = 0.498 <= 0.5 < edges[192] = 0.506
    assert actions_to_token_ids(action) == token_id


def test_hand_computed_decoding_with_clip():
    assert token_ids_to_bin_indices([31872, 31999, 31744, 31745, 100]).tolist() == [127, 0, 254, 254, 254]
    assert token_ids_to_actions(31872) == pytest.approx(0.0, abs=1e-12)
    assert token_ids_to_actions(31999) == pytest.approx(-1 + 1 / 255)
    assert token_ids_to_actions(31744) == pytest.approx(1 - 1 / 255)


def test_unnormalize_pose_dims_and_pass_gripper_through():
    x = np.array([-1.0, 1.0, 0.0, -1.0, 1.0, 0.0, 0.7])
    out = LIBERO_GOAL_STATS.unnormalize(x)
    q01, q99 = np.array(C.LIBERO_GOAL_Q01), np.array(C.LIBERO_GOAL_Q99)
    assert out[0] == pytest.approx(q01[0]) and out[1] == pytest.approx(q99[1])
    assert out[2] == pytest.approx(0.5 * (q99[2] - q01[2]) + q01[2])
    assert out[5] == pytest.approx(0.5 * (0.375 + 0.13777500048279764) - 0.13777500048279764)
    assert out[6] == 0.7, "the gripper (mask false) must not be de-normalized"


def test_unnorm_key_lookup_and_fallback(tmp_path):
    entry = LIBERO_GOAL_STATS.to_json_entry()
    assert select_norm_stats({"libero_goal_no_noops": entry}).unnorm_key == "libero_goal_no_noops"
    with pytest.raises(ValueError, match=r"unnorm_key 'libero_spatial' is not in .*expected one of \['libero_goal'\]"):
        select_norm_stats({"libero_goal": entry}, "libero_spatial")
    (tmp_path / "config.json").write_text(json.dumps({"norm_stats": {"libero_goal": entry}}))
    assert load_norm_stats(tmp_path).q99 == C.LIBERO_GOAL_Q99
    (tmp_path / "dataset_statistics.json").write_text(json.dumps({"other": entry}))
    assert load_norm_stats(tmp_path, "other").unnorm_key == "other"


def test_statistics_without_a_mask_denormalize_every_dimension(rng):
    """OpenVLA: mask = stats.get("mask", np.ones_like(q01, dtype=bool)); the gripper too."""
    q01, q99 = rng.uniform(-1, 0, 7), rng.uniform(0.1, 1, 7)
    stats = select_norm_stats({"bridge": {"action": {"q01": q01.tolist(), "q99": q99.tolist()}}}, "bridge")
    assert stats.mask == (True,) * 7
    x = rng.uniform(-1, 1, 7)
    np.testing.assert_allclose(stats.unnormalize(x), 0.5 * (x + 1) * (q99 - q01) + q01, rtol=0, atol=1e-15)
    with_mask = select_norm_stats({"b": {"action": {"q01": q01.tolist(), "q99": q99.tolist(),
                                                    "mask": [True] * 6 + [False]}}}, "b")
    assert with_mask.unnormalize(x)[6] == x[6] and stats.unnormalize(x)[6] != x[6]


@pytest.mark.parametrize("action, message", [
    ({"q01": [0.0] * 6, "q99": [1.0] * 7}, "'q01' for 'k' must be 7 finite numbers"),
    ({"q01": [0.0] * 7, "q99": [1.0] * 6 + [float("nan")]}, "'q99' for 'k' must be 7 finite numbers"),
    ({"q01": [0.0] * 7, "q99": ["1"] * 7}, "'q99' for 'k' must be 7 finite numbers"),
    ({"q01": [0.0] * 7, "q99": [1.0] * 6 + [-1.0]}, "q99 must be >= q01"),
    ({"q01": [0.0] * 7, "q99": [1.0] * 7, "mask": [1] * 7}, "'mask' for 'k' must be 7 booleans"),
])
def test_malformed_statistics_are_refused_with_what_is_expected(action, message):
    with pytest.raises(ValueError, match=message):
        select_norm_stats({"k": {"action": action}}, "k")
    with pytest.raises(ValueError, match="no 'action' entry"):
        select_norm_stats({"k": {"q01": action["q01"]}}, "k")


def test_statistics_files_are_read_in_the_loaders_order(tmp_path):
    from spec_vla_ros.vla.action_tokenizer import read_norm_stats
    entry = LIBERO_GOAL_STATS.to_json_entry()
    (tmp_path / "config.json").write_text(json.dumps({"norm_stats": {"from_config": entry}}))
    assert list(read_norm_stats(tmp_path)) == ["from_config"]
    (tmp_path / "dataset_statistics.json").write_text("{ not json")
    with pytest.raises(ValueError, match="dataset_statistics.json is not readable JSON"):
        read_norm_stats(tmp_path)
    (tmp_path / "dataset_statistics.json").write_text("{}")
    with pytest.raises(ValueError, match="no action statistics"):
        read_norm_stats(tmp_path)
