"""The report plots: intervals (Wilson, bootstrap) and the panels and marks each figure is drawn
with, inspected on the matplotlib Figure before it is written. Random data on a fresh seed each
run (printed on failure)."""
import math
import os

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer

from spec_vla_ros.analysis import plots
from spec_vla_ros.vla.constants import ACTION_DIM, ACTION_NAMES

SEED = int.from_bytes(os.urandom(4), "little")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plots.plt.close("all")


def _rng():
    print(f"seed {SEED}")
    return np.random.default_rng(SEED)


def test_wilson_interval_matches_a_hand_computed_case():
    # k = 3, n = 10, z = 1.959964: centre (0.3 + z^2/20) / (1 + z^2/10) = 0.355505,
    # half-width z * sqrt(0.3 * 0.7 / 10 + z^2 / 400) / (1 + z^2/10) = 0.247717
    interval = plots.wilson_interval(3, 10)
    assert interval.estimate == 0.3 and interval.n == 10
    assert interval.low == pytest.approx(0.107789, abs=1e-5) and interval.high == pytest.approx(0.603222, abs=1e-5)
    z = 1.959963984540054                 # and the formula itself, on a second case
    p, n = 0.0, 4
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    zero = plots.wilson_interval(0, 4)
    assert zero.low == pytest.approx(max(0.0, centre - half), abs=1e-9) and zero.high == pytest.approx(centre + half)
    assert math.isnan(plots.wilson_interval(0, 0).estimate)                 # nothing judged: no rate at all


def test_bootstrap_intervals_contain_the_point_estimate():
    rng = _rng()
    for _ in range(5):
        n = int(rng.integers(plots.MIN_BOOTSTRAP_UNITS, 30))
        ar = [(float(rng.uniform(50, 500)) * actions, actions) for actions in rng.integers(1, 40, n).tolist()]
        mine = [(total / float(rng.uniform(0.5, 3.0)), actions) for total, actions in ar]
        interval = plots.ratio_of_means_interval(ar, mine, seed=SEED)
        expected = (sum(t for t, _ in ar) / sum(a for _, a in ar)) / (sum(t for t, _ in mine) / sum(a for _, a in mine))
        assert interval.estimate == pytest.approx(expected) and interval.n == n
        assert interval.low <= interval.estimate <= interval.high, SEED
    one = plots.ratio_of_means_interval([(10.0, 1.0)], [(5.0, 1.0)])
    assert one.estimate == 2.0 and math.isnan(one.low) and math.isnan(one.high)     # one episode: no interval


@pytest.mark.parametrize("n", range(1, 7))
def test_an_interval_needs_min_bootstrap_units(n):
    """Below MIN_BOOTSTRAP_UNITS (5) units: the estimate, no bounds; from it on: finite bounds."""
    rng = _rng()
    ar = [(float(rng.uniform(50, 500)), 1.0) for _ in range(n)]
    mine = [(total / float(rng.uniform(0.5, 3.0)), count) for total, count in ar]
    for interval in (plots.ratio_of_means_interval(ar, mine, seed=SEED), plots.mean_interval([t for t, _ in ar])):
        assert interval.n == n and math.isfinite(interval.estimate)
        assert math.isfinite(interval.low) == math.isfinite(interval.high) == (n >= plots.MIN_BOOTSTRAP_UNITS == 5)


def test_speedup_figure_has_three_panels_with_intervals_and_n():
    rng = _rng()
    rows = []
    for name in ("ar", "mamba", "history"):
        ar = [(float(rng.uniform(100, 200)) * 10, 10.0) for _ in range(6)]
        mine = [(total / float(rng.uniform(1, 2)), count) for total, count in ar]
        rows.append(plots.SpeedupRow(name, plots.ratio_of_means_interval(ar, mine),
                                     plots.ratio_of_means_interval(ar, mine),
                                     plots.mean_interval(rng.uniform(1, 7, 20).tolist())))
    figure = plots.draw_speedup(rows, "PROVENANCE")
    assert [axes.get_title().split("\n")[0] for axes in figure.axes] == [
        "decode speedup vs AR", "episode speedup vs AR", "verifier passes per action"]
    for axes in figure.axes:
        bars = axes.patches
        assert len(bars) == 3
        assert len({to_hex(bar.get_facecolor()) for bar in bars}) == 3          # no colour repeats
    heights = [bar.get_height() for bar in figure.axes[0].patches]
    assert heights == pytest.approx([row.decode_speedup.estimate for row in rows])
    caption = figure.texts[-1].get_text().replace("\n", " ")
    assert "PROVENANCE" in caption and "mamba n=6" in caption and "bootstrap intervals over episodes" in caption
    assert "No interval" not in caption and all(whisker_drawn(axes) == [True] * 3 for axes in figure.axes)


def whisker_drawn(axes) -> list[bool]:
    """Per bar of a panel: whether its error bar has a finite whisker."""
    segments = [np.asarray(container.lines[2][0].get_segments(), dtype=float)
                for container in axes.containers if isinstance(container, ErrorbarContainer)]
    return [bool(segment.size and np.isfinite(segment).all()) for segment in segments]


def test_speedup_figure_draws_no_interval_below_min_bootstrap_units():
    """Two episodes per configuration (the README's miniature run): bars and n, no whiskers, and the
    caption says why; a row with enough episodes beside them keeps its whiskers."""
    rng = _rng()

    def row(name, n):
        ar = [(float(rng.uniform(100, 200)) * 10, 10.0) for _ in range(n)]
        mine = [(total / float(rng.uniform(1, 2)), count) for total, count in ar]
        return plots.SpeedupRow(name, plots.ratio_of_means_interval(ar, mine), plots.ratio_of_means_interval(ar, mine),
                                plots.ratio_of_means_interval([(float(rng.uniform(7, 21)), 7.0) for _ in range(n)],
                                                              [(1.0, 1.0)] * n))
    few = plots.draw_speedup([row("ar", 2), row("mamba", 2)], "PROVENANCE")
    caption = few.texts[-1].get_text().replace("\n", " ")
    assert caption.startswith("No intervals: fewer than 5 episodes to resample.") and "mamba n=2" in caption
    assert all(whisker_drawn(axes) == [False, False] for axes in few.axes)
    assert [bar.get_height() for bar in few.axes[0].patches] == pytest.approx([1.0, 1.0], abs=1.0)   # bars drawn
    mixed = plots.draw_speedup([row("history", 2), row("llama", 8)], "PROVENANCE")
    assert mixed.texts[-1].get_text().replace("\n", " ").startswith("No interval for history: fewer than 5 episodes")
    assert all(whisker_drawn(axes) == [False, True] for axes in mixed.axes)


def test_acceptance_by_position_marks_never_judged_positions_and_explains_beyond_k():
    outcomes = {"mamba": ([5, 2, 0, 0, 0, 0, 0], [10, 5, 2, 0, 0, 0, 0]),
                "history": ([9, 8, 7, 6, 3, 1, 0], [12, 9, 8, 7, 6, 3, 1])}
    figure = plots.draw_acceptance_by_position(outcomes, "PROVENANCE", num_draft_tokens=4)
    [axes] = figure.axes
    texts = [text.get_text() for text in axes.texts]
    assert texts.count("n=0") == 4                          # mamba's positions 4-7: written, not drawn
    bars = [bar for bar in axes.patches if bar.get_width() < 1]
    assert len(bars) == 3 + 7                               # judged positions only (the shade is not a bar)
    assert "5/10" in texts and "0/2" in texts and "0/1" in texts   # counts on every judged bar, 0 % included
    assert any("beyond k=4" in text for text in texts)
    zero_judged = [bar for bar in bars if bar.get_height() == 0]
    assert len(zero_judged) == 2                            # mamba 0/2 and history 0/1: judged, rate 0


def test_success_rate_bars_carry_counts_and_wilson_whiskers():
    outcomes = {"ar": [(0, 2), (1, 2), (1, 4)], "mamba": [(2, 2), (0, 2), (2, 4)]}
    figure = plots.draw_success_rate(["task 0", "task 1", "all"], outcomes, "PROVENANCE")
    [axes] = figure.axes
    assert [tick.get_text() for tick in axes.get_xticklabels()] == ["task 0", "task 1", "all"]
    texts = [text.get_text() for text in axes.texts]
    assert sorted(texts) == sorted(["0/2", "1/2", "1/4", "2/2", "0/2", "2/4"])
    whiskers = [collection for collection in axes.collections if collection.get_segments()
                and len(collection.get_segments()[0]) == 2 and collection.get_segments()[0][0][0]
                == collection.get_segments()[0][1][0]]
    tops = sorted(max(point[1] for point in segment) for collection in whiskers
                  for segment in collection.get_segments())
    expected = sorted(plots.wilson_interval(k, n).high for counts in outcomes.values() for k, n in counts)
    assert tops == pytest.approx(expected)


def test_action_deviation_has_one_panel_per_dimension_in_units():
    rng = _rng()
    deviations = {"mamba:relaxed:9": rng.normal(0, 0.1, (30, ACTION_DIM)),
                  "llama:relaxed:9": rng.normal(0, 0.1, (12, ACTION_DIM))}
    figure = plots.draw_action_deviation(deviations, "PROVENANCE")
    panels = figure.axes[:ACTION_DIM]
    assert [axes.get_title() for axes in panels] == list(ACTION_NAMES)
    assert [axes.get_ylabel().split("(")[1].split(")")[0] for axes in panels[:6]] == ["m"] * 3 + ["rad"] * 3
    key = figure.axes[ACTION_DIM].texts[0].get_text()
    assert "mamba:relaxed:9 (n=30)" in key and "llama:relaxed:9 (n=12)" in key
    # the boxes summarize |deviation|: the median line of dx is the median of |dx|
    median_line = [line for line in panels[0].get_lines() if line.get_linewidth() == plots.MEDIAN_LINE_WIDTH][0]
    assert median_line.get_ydata()[0] == pytest.approx(np.median(np.abs(deviations["mamba:relaxed:9"][:, 0])))


def test_grouped_bars_of_many_series_never_repeat_a_colour_and_keep_the_legend_off_the_axes():
    rng = _rng()
    series = {f"configuration {i}": rng.uniform(0, 1, 5).tolist() for i in range(12)}
    series["configuration 0"] = [0.0] * 5                     # zero bars are still drawn (a tick at 0)
    figure = plots.draw_grouped_bars("t", "y", [str(i) for i in range(5)], series, "PROVENANCE")
    [axes] = figure.axes
    colours = {to_hex(bar.get_facecolor()) for bar in axes.patches}
    assert len(colours) == 12
    figure.canvas.draw()
    [legend] = figure.legends
    assert legend.get_window_extent().x0 >= axes.get_window_extent().x1    # right of the axes, not over the bars
    ticks_at_zero = [collection for collection in axes.collections
                     if all(point[1] == 0 for segment in collection.get_segments() for point in segment)]
    assert ticks_at_zero


def test_each_plot_is_written_as_a_png(tmp_path):
    path = plots.success_rate(tmp_path / "s.png", ["task 0", "all"], {"ar": [(1, 2), (1, 2)]}, "PROVENANCE")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ms_per_action_stacks_the_stages_and_says_when_preprocessing_was_not_measured():
    rows = [plots.LatencyRow("ar", 40, 0.0, 150.0, 155.0), plots.LatencyRow("mamba", 40, 20.0, 90.0, 115.0)]
    figure = plots.draw_ms_per_action(rows, "PROVENANCE")
    [axes] = figure.axes
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["preprocessing (image -> pixels): not measured", "draft", "verifier passes",
                      "other decode work"]
    # stacked: draft, verify, other; tops are the decode totals
    heights = {}
    for bar in axes.patches:
        heights.setdefault(round(bar.get_x() + bar.get_width() / 2), []).append(bar.get_height())
    assert [sum(stack) for _, stack in sorted(heights.items())] == pytest.approx([155.0, 115.0])
    assert [len(stack) for _, stack in sorted(heights.items())] == [3, 3]       # no preprocessing bar at 0
