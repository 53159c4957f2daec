"""Plots shared by the eval, harness and bag reports.

matplotlib with the Agg backend (no display needed), PNG files, each with a caption at the
bottom that says what produced it (the report's provenance line) and how many samples each
mark summarizes. Every plot is drawn by a `draw_*` function that returns the matplotlib Figure
(tests inspect its panels and data) and written by the function of the plot's name, which
returns the PNG's path. Conventions:

- colours never repeat within a figure (tab10, tab20, then evenly spaced turbo colours);
- legends sit outside the axes, so they never cover data;
- a value of 0 is drawn (a tick at the value), a value that was never measured is written
  as "n=0" and never drawn as a bar at 0;
- intervals are 95 %: Wilson score intervals for rates (scipy's binomtest), percentile
  bootstrap intervals for ratios of means (scipy's bootstrap, resampling episodes or actions as
  the caller says) from MIN_BOOTSTRAP_UNITS units on; with fewer, no interval is drawn and the
  caption says so.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from sim_bridge.constants import LIBERO_MAX_DELTA_POS_M, LIBERO_MAX_DELTA_ROT_RAD

from ..vla.constants import ACTION_DIM, ACTION_NAMES

FIGURE_SIZE_IN = (9.0, 5.0)               # one panel
TALL_FIGURE_SIZE_IN = (9.0, 9.0)          # one panel per action dimension
DPI = 100
FIGURE_PIXELS = (int(FIGURE_SIZE_IN[0] * DPI), int(FIGURE_SIZE_IN[1] * DPI))   # (width, height) of one-panel PNGs
CAPTION_FONT_SIZE = 7
CAPTION_CHARS_PER_LINE = 175              # at CAPTION_FONT_SIZE across FIGURE_SIZE_IN's width
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
# Fewer units than this get no bootstrap interval: n units give at most C(2n-1, n) distinct
# resamples (3 for n = 2, 35 for 4, 126 for 5), and a percentile interval over so few values
# of so few units says little about the spread of the mean.
MIN_BOOTSTRAP_UNITS = 5
NOT_MEASURED_HATCH = "//"
MEDIAN_LINE_WIDTH = 2.0

# An action's units: LIBERO's controller takes pose deltas normalized to its per-step limits
# (OSC_POSE: 0.05 m, 0.5 rad), so value x limit is the commanded motion in one control step.
# The gripper is OpenVLA's [0, 1] (1 = open), without a physical unit.
ACTION_SCALES = (LIBERO_MAX_DELTA_POS_M,) * 3 + (LIBERO_MAX_DELTA_ROT_RAD,) * 3 + (1.0,)
ACTION_UNITS = ("m", "m", "m", "rad", "rad", "rad", "gripper (0 closed, 1 open)")


# --- statistics -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % interval (NaN bounds when too few samples)."""
    estimate: float
    low: float
    high: float
    n: int


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """Success rate k/n with its Wilson score interval (scipy.stats.binomtest(...).proportion_ci);
    n = 0 gives NaN everywhere (nothing was measured)."""
    if trials == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    interval = scipy_stats.binomtest(int(successes), int(trials)).proportion_ci(confidence, method="wilson")
    return Interval(successes / trials, float(interval.low), float(interval.high), int(trials))


def ratio_of_means_interval(numerator: list[tuple[float, float]], denominator: list[tuple[float, float]],
                            seed: int = 0, confidence: float = CONFIDENCE) -> Interval:
    """(sum a / sum b of the numerator) / (sum a / sum b of the denominator), with a percentile
    bootstrap interval that resamples the paired units (episodes: each pair is one task and
    initial state under both configurations). Items are (total, count) per unit, e.g. (decode ms,
    actions) of an episode, so a unit weighs by its count. With fewer than MIN_BOOTSTRAP_UNITS
    units the bounds are NaN (no interval).

    Speedup of B over A: ratio_of_means_interval(A's units, B's units)."""
    a = np.asarray(numerator, dtype=float).reshape(-1, 2)
    b = np.asarray(denominator, dtype=float).reshape(-1, 2)
    if len(a) != len(b):
        raise ValueError(f"paired units needed, got {len(a)} and {len(b)}")

    def statistic(num_total, num_count, den_total, den_count, axis=-1):
        return ((num_total.sum(axis) / num_count.sum(axis)) / (den_total.sum(axis) / den_count.sum(axis)))

    estimate = float(statistic(a[:, 0], a[:, 1], b[:, 0], b[:, 1])) if len(a) and b[:, 0].sum() else float("nan")
    if len(a) < MIN_BOOTSTRAP_UNITS or not np.isfinite(estimate):
        return Interval(estimate, float("nan"), float("nan"), len(a))
    result = scipy_stats.bootstrap((a[:, 0], a[:, 1], b[:, 0], b[:, 1]), statistic, paired=True, vectorized=True,
                                   n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=confidence,
                                   method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return Interval(estimate, float(low), float(high), len(a))


def mean_interval(values: list[float], seed: int = 0, confidence: float = CONFIDENCE) -> Interval:
    """Mean with a percentile bootstrap interval (NaN bounds with fewer than MIN_BOOTSTRAP_UNITS values)."""
    pairs = [(value, 1.0) for value in values]
    ones = [(1.0, 1.0)] * len(values)
    return ratio_of_means_interval(pairs, ones, seed, confidence)


# --- colours, captions, saving ---------------------------------------------------------------

def colours(count: int) -> list:
    """`count` distinct colours: tab10 up to 10, tab20 up to 20, else evenly spaced turbo."""
    if count <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(count)]
    if count <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(count)]
    return [plt.get_cmap("turbo")(x) for x in np.linspace(0.05, 0.95, count)]


def _figure(title: str, rows: int = 1, columns: int = 1, size=FIGURE_SIZE_IN, **options):
    figure, axes = plt.subplots(rows, columns, figsize=size, dpi=DPI, squeeze=False, **options)
    figure.suptitle(title)
    for panel in axes.flat:
        panel.grid(axis="y", alpha=0.3)
    return figure, axes


def _finish(figure, caption: str, legend_axes=None) -> None:
    """Legend outside the axes (right), the caption wrapped at the bottom, tight layout around both."""
    right = 1.0
    if legend_axes is not None and legend_axes.get_legend_handles_labels()[0]:
        handles, labels = legend_axes.get_legend_handles_labels()
        legend = figure.legend(handles, labels, loc="upper right", fontsize=7, frameon=False,
                               bbox_to_anchor=(1.0, 0.93))
        figure.canvas.draw()
        width = legend.get_window_extent().width / figure.bbox.width
        right = 1.0 - width - 0.01
    lines = textwrap.wrap(caption, CAPTION_CHARS_PER_LINE) or [""]
    figure.text(0.01, 0.005, "\n".join(lines), fontsize=CAPTION_FONT_SIZE, va="bottom")
    height_in = figure.get_size_inches()[1]
    bottom = (len(lines) * CAPTION_FONT_SIZE * 1.3 / 72 + 0.1) / height_in
    figure.tight_layout(rect=(0, bottom, right, 0.97))


def save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    plt.close(figure)
    return path


def _error_bars(intervals: list[Interval]):
    """Asymmetric yerr from intervals; NaN bounds draw no whisker."""
    low = [i.estimate - i.low if np.isfinite(i.low) else np.nan for i in intervals]
    high = [i.high - i.estimate if np.isfinite(i.high) else np.nan for i in intervals]
    return np.array([low, high])


def _value_ticks(axes, x, values, width, colour) -> None:
    """A short line at each value, so a bar of height 0 is still seen."""
    axes.hlines([v for v in values], np.asarray(x) - width / 2, np.asarray(x) + width / 2, colors=[colour],
                linewidth=1.5)


# --- generic plots (also used by the harness) -----------------------------------------------

def draw_grouped_bars(title: str, ylabel: str, groups: list[str], series: dict[str, list[float]], caption: str,
                      errors: dict[str, list] | None = None, ylim: tuple | None = None, xlabel: str = "",
                      annotations: dict[str, list[str]] | None = None):
    """One cluster of bars per group (a task, a position), one bar per series (a configuration).
    `errors[label]` per bar: a symmetric half-width or an Interval; None / NaN values draw "n=0"."""
    figure, axes = _figure(title)
    panel = axes[0, 0]
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for index, ((label, values), colour) in enumerate(zip(series.items(), colours(len(series)))):
        positions = x + (index - (len(series) - 1) / 2) * width
        values = np.array([np.nan if value is None else value for value in values], dtype=float)
        error = None
        if errors is not None and errors.get(label) is not None:
            given = errors[label]
            if given and isinstance(given[0], Interval):
                error = _error_bars(given)
            else:
                error = np.array([np.nan if e is None else e for e in given], dtype=float)
        measured = np.isfinite(values)
        if error is not None:
            error = (error[..., measured] if error.ndim == 2 else error[measured]).tolist()
        panel.bar(positions[measured], values[measured], width, color=colour, label=label, yerr=error,
                  capsize=2, error_kw={"linewidth": 0.8})
        _value_ticks(panel, positions[measured], values[measured], width, colour)
        for position in positions[~measured]:
            panel.text(position, 0.01, "n=0", rotation=90, fontsize=6, ha="center", va="bottom",
                       transform=panel.get_xaxis_transform(), color=colour)
        if annotations and label in annotations:        # counts at the foot of the bar, clear of the whiskers
            for position, value, text in zip(positions, values, annotations[label]):
                if text and np.isfinite(value):
                    panel.text(position, 0.01, text, rotation=90, fontsize=6, ha="center", va="bottom",
                               transform=panel.get_xaxis_transform(),
                               bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.5, "linewidth": 0})
    panel.set_xticks(x, groups, fontsize=8)
    panel.set_xlabel(xlabel)
    panel.set_ylabel(ylabel)
    if ylim is not None:
        panel.set_ylim(*ylim)
    _finish(figure, caption, panel)
    return figure


def grouped_bars(path: Path, title: str, ylabel: str, groups: list[str], series: dict[str, list[float]],
                 caption: str, errors: dict[str, list] | None = None, ylim: tuple | None = None,
                 xlabel: str = "", annotations: dict[str, list[str]] | None = None) -> Path:
    return save(draw_grouped_bars(title, ylabel, groups, series, caption, errors, ylim, xlabel, annotations), path)


def draw_lines(title: str, xlabel: str, ylabel: str, series: dict[str, tuple], caption: str):
    """One line per series, each given as (x values, y values)."""
    figure, axes = _figure(title)
    panel = axes[0, 0]
    for (label, (x, y)), colour in zip(series.items(), colours(len(series))):
        panel.plot(list(x), list(y), marker="." if len(x) < 50 else None, linewidth=1, label=label, color=colour)
    panel.set_xlabel(xlabel)
    panel.set_ylabel(ylabel)
    _finish(figure, caption, panel)
    return figure


def lines(path: Path, title: str, xlabel: str, ylabel: str, series: dict[str, tuple], caption: str) -> Path:
    return save(draw_lines(title, xlabel, ylabel, series, caption), path)


def acceptance_length_histogram(path: Path, passes_per_action: dict[str, list[int]], caption: str,
                                title: str = "Acceptance length per action") -> Path:
    """Share of actions at each acceptance length; an action decoded in p verifier passes has
    acceptance length 7 / p, so the possible values are 1, 1.17, ... 3.5, 7."""
    passes = range(ACTION_DIM, 0, -1)
    groups = [f"{ACTION_DIM / p:.2f}\n({p} pass{'es' if p > 1 else ''})" for p in passes]
    series = {f"{label} (n={len(counts)} actions)": [counts.count(p) / len(counts) if counts else None
                                                      for p in passes]
              for label, counts in passes_per_action.items()}
    return grouped_bars(path, title, "share of actions", groups, series, caption, ylim=(0, 1.05),
                        xlabel="acceptance length (verifier passes for the action)")


# --- acceptance by draft position -----------------------------------------------------------

def draw_acceptance_by_position(outcomes: dict[str, tuple[list[int], list[int]]], caption: str,
                                num_draft_tokens: int | None = None, title: str = "Acceptance by draft position"):
    """Rate at which the verifier accepted the draft's k-th proposal of a pass, among the proposals
    it judged (`outcomes[label] = (accepted counts, judged counts)` per position 1, 2, ...). Each
    bar carries accepted/judged; a position never judged reads "n=0". With `num_draft_tokens` k,
    positions beyond k are shaded: only the prefill pass judges them (proposals made before the
    prefill, e.g. history or a Mamba state carried across control steps)."""
    positions = max((len(judged) for _, judged in outcomes.values()), default=0)
    groups = [str(position + 1) for position in range(positions)]
    series, errors, annotations = {}, {}, {}
    for label, (accepted, judged) in outcomes.items():
        intervals = [wilson_interval(accepted[i], judged[i]) if i < len(judged) else wilson_interval(0, 0)
                     for i in range(positions)]
        series[label] = [interval.estimate for interval in intervals]
        errors[label] = intervals
        annotations[label] = [f"{accepted[i]}/{judged[i]}" if i < len(judged) and judged[i] else ""
                              for i in range(positions)]
    figure = draw_grouped_bars(title, "accepted / judged (95 % Wilson)", groups, series, caption, errors=errors,
                               ylim=(0, 1.15), xlabel="draft position (k-th proposal verified in a pass)",
                               annotations=annotations)
    panel = figure.axes[0]
    if num_draft_tokens is not None and num_draft_tokens < positions:
        panel.axvspan(num_draft_tokens - 0.5, positions - 0.5, color="0.85", zorder=0)
        panel.text(num_draft_tokens - 0.45, 1.12, f"beyond k={num_draft_tokens}: prefill pass only (early guesses)",
                   fontsize=7, va="top")
    return figure


def acceptance_by_position(path: Path, outcomes: dict[str, tuple[list[int], list[int]]], caption: str,
                           title: str = "Acceptance by draft position", num_draft_tokens: int | None = None) -> Path:
    if num_draft_tokens is not None:
        caption = (f"Bars: accepted/judged proposals per position (95 % Wilson intervals); n=0: never judged. "
                   f"Positions beyond k={num_draft_tokens} (shaded) are judged only by the prefill pass, on "
                   f"proposals made before it (history, or the Mamba state carried from the previous step). "
                   + caption)
    return save(draw_acceptance_by_position(outcomes, caption, num_draft_tokens, title), path)


# --- the eval's main results ----------------------------------------------------------------

@dataclass(frozen=True)
class SpeedupRow:
    """One configuration: decode speedup (AR ms per action / its own), episode speedup (AR
    seconds per episode / its own) and verifier passes per action, each with a 95 % interval."""
    configuration: str
    decode_speedup: Interval
    episode_speedup: Interval
    passes_per_action: Interval


def draw_speedup(rows: list[SpeedupRow], caption: str, resampled: str = "episodes"):
    """Three panels: decode speedup vs AR, episode speedup vs AR, verifier passes per action; a
    whisker where the row has MIN_BOOTSTRAP_UNITS units or more (the caption names the rest)."""
    figure, axes = _figure("Speculative decoding vs autoregressive (AR)", 1, 3)
    palette = colours(len(rows))
    panels = (("decode speedup vs AR\n(AR ms per action / ms per action)", "decode_speedup", 1.0),
              ("episode speedup vs AR\n(AR s per episode / s per episode)", "episode_speedup", 1.0),
              ("verifier passes per action\n(AR: 7)", "passes_per_action", float(ACTION_DIM)))
    x = np.arange(len(rows))
    for panel, (title, key, reference) in zip(axes.flat, panels):
        intervals = [getattr(row, key) for row in rows]
        values = np.array([i.estimate for i in intervals], dtype=float)
        for index, (row, interval, colour) in enumerate(zip(rows, intervals, palette)):
            if not np.isfinite(interval.estimate):
                panel.text(index, 0.02, "n=0", ha="center", fontsize=7, transform=panel.get_xaxis_transform())
                continue
            panel.bar([index], [interval.estimate], 0.7, color=colour, label=row.configuration,
                      yerr=_error_bars([interval]).tolist(), capsize=3)
            panel.text(index, 0.01, f"{interval.estimate:.2f}", ha="center", va="bottom", fontsize=7,
                       transform=panel.get_xaxis_transform(),     # at the foot of the bar, clear of the whiskers
                       bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.5, "linewidth": 0})
        panel.axhline(reference, color="0.3", linestyle="--", linewidth=0.8)
        panel.set_title(title, fontsize=9)
        panel.set_xticks(x, [row.configuration for row in rows], rotation=30, ha="right", fontsize=7)
        top = np.nanmax(np.concatenate([values, [i.high for i in intervals], [reference]]))
        panel.set_ylim(0, 1.15 * top if np.isfinite(top) else 1)
    n = ", ".join(f"{row.configuration} n={row.decode_speedup.n}" for row in rows)
    few = [row.configuration for row in rows if row.decode_speedup.n < MIN_BOOTSTRAP_UNITS]
    whiskers = ("No intervals: " if len(few) == len(rows) else
                f"No interval for {', '.join(few)}: " if few else "")
    whiskers += f"fewer than {MIN_BOOTSTRAP_UNITS} {resampled} to resample. " if few else ""
    _finish(figure, f"{whiskers}Whiskers: 95 % percentile bootstrap intervals over {resampled} ({n}), drawn from "
                    f"n >= {MIN_BOOTSTRAP_UNITS}, each resampled unit paired with AR's on the same task and initial "
                    f"state; dashed: AR. " + caption)
    return figure


def speedup(path: Path, rows: list[SpeedupRow], caption: str, resampled: str = "episodes") -> Path:
    return save(draw_speedup(rows, caption, resampled), path)


@dataclass(frozen=True)
class LatencyRow:
    """Mean ms per action of one configuration, by stage; preprocessing None = not measured."""
    configuration: str
    actions: int
    draft_ms: float
    verify_ms: float
    total_ms: float                       # decode: draft + verify + the loop's own work
    preprocessing_ms: float | None = None


def draw_ms_per_action(rows: list[LatencyRow], caption: str):
    """Stacked bars per configuration: preprocessing, draft, verifier passes, other decode work."""
    figure, axes = _figure("Mean ms per action, by stage")
    panel = axes[0, 0]
    stages = ("preprocessing (image -> pixels)", "draft", "verifier passes", "other decode work")
    palette = dict(zip(stages, colours(len(stages))))
    x = np.arange(len(rows))
    bottoms = np.zeros(len(rows))
    for stage in stages:
        heights = []
        for row in rows:
            value = {"draft": row.draft_ms, "verifier passes": row.verify_ms,
                     "other decode work": max(0.0, row.total_ms - row.draft_ms - row.verify_ms),
                     "preprocessing (image -> pixels)": row.preprocessing_ms}[stage]
            heights.append(np.nan if value is None else value)
        heights = np.array(heights, dtype=float)
        measured = np.isfinite(heights)
        if measured.any():
            panel.bar(x[measured], heights[measured], 0.6, bottom=bottoms[measured], color=palette[stage], label=stage)
        else:                                          # a legend entry that says so, no bar at 0
            panel.fill_between([], [], [], facecolor="white", edgecolor="0.5", hatch=NOT_MEASURED_HATCH,
                               label=f"{stage}: not measured")
        bottoms = bottoms + np.nan_to_num(heights)
    some_measured = any(row.preprocessing_ms is not None for row in rows)   # else the legend says it once
    for index, row in enumerate(rows):
        note = f"{bottoms[index]:.1f} ms\nn={row.actions}"
        if row.preprocessing_ms is None and some_measured:
            note += "\npreprocessing\nnot measured"
        panel.annotate(note, (index, bottoms[index]), xytext=(0, 2), textcoords="offset points", ha="center",
                       fontsize=6)
    panel.set_xticks(x, [row.configuration for row in rows], rotation=20, ha="right", fontsize=8)
    panel.set_ylabel("ms per action (mean)")
    panel.set_ylim(0, 1.3 * max(bottoms.max(initial=0.0), 1e-3))
    _finish(figure, "n = actions per configuration. " + caption, panel)
    return figure


def ms_per_action(path: Path, rows: list[LatencyRow], caption: str) -> Path:
    return save(draw_ms_per_action(rows, caption), path)


def draw_success_rate(tasks: list[str], outcomes: dict[str, list[tuple[int, int]]], caption: str):
    """Success rate per task (and overall) and configuration: `outcomes[configuration]` =
    (successes, episodes) per entry of `tasks`; 95 % Wilson intervals, k/n on every bar."""
    series, errors, annotations = {}, {}, {}
    for label, counts in outcomes.items():
        intervals = [wilson_interval(k, n) for k, n in counts]
        series[label] = [interval.estimate for interval in intervals]
        errors[label] = intervals
        annotations[label] = [f"{k}/{n}" for k, n in counts]
    return draw_grouped_bars("Success rate per task (95 % Wilson intervals)", "success rate", tasks, series,
                             "Bars: successes/episodes; the tick marks the rate (also at 0). " + caption,
                             errors=errors, ylim=(0, 1.15), xlabel="LIBERO-GOAL task", annotations=annotations)


def success_rate(path: Path, tasks: list[str], outcomes: dict[str, list[tuple[int, int]]], caption: str) -> Path:
    return save(draw_success_rate(tasks, outcomes, caption), path)


def draw_action_deviation(deviations: dict[str, np.ndarray], caption: str):
    """One panel per action dimension: |action - AR's action on the same observation| in the
    action's units (m, rad per control step; gripper), a box per configuration (n actions)."""
    figure, axes = _figure("Deviation from AR's action on the same observation (relaxed acceptance)", 2, 4,
                           size=TALL_FIGURE_SIZE_IN)
    labels = list(deviations)
    palette = colours(len(labels))
    for dimension, panel in enumerate(axes.flat[:ACTION_DIM]):
        data = [np.abs(np.asarray(deviations[label]).reshape(-1, ACTION_DIM)[:, dimension]) for label in labels]
        boxes = panel.boxplot(data, patch_artist=True, widths=0.6, showfliers=True,
                              medianprops={"color": "black", "linewidth": MEDIAN_LINE_WIDTH})   # seen on any fill
        for box, colour in zip(boxes["boxes"], palette):
            box.set_facecolor(colour)
        panel.set_title(ACTION_NAMES[dimension], fontsize=9)
        panel.set_ylabel(f"|deviation| ({ACTION_UNITS[dimension]})", fontsize=7)
        panel.set_xticks(range(1, len(labels) + 1), [str(i + 1) for i in range(len(labels))], fontsize=7)
        panel.tick_params(axis="y", labelsize=7)
    key = axes.flat[ACTION_DIM]
    key.axis("off")
    counts = [len(np.asarray(deviations[label]).reshape(-1, ACTION_DIM)) for label in labels]
    key.text(0, 1, "boxes:\n" + "\n".join(f"{i + 1}: {label} (n={count})"
                                          for i, (label, count) in enumerate(zip(labels, counts))), va="top", fontsize=7)
    _finish(figure, "Each action decoded again by AR on the observation the configuration acted on (untimed); "
                    f"pose in the controller's units per step (x {LIBERO_MAX_DELTA_POS_M} m, "
                    f"x {LIBERO_MAX_DELTA_ROT_RAD} rad). " + caption)
    return figure


def action_deviation(path: Path, deviations: dict[str, np.ndarray], caption: str) -> Path:
    return save(draw_action_deviation(deviations, caption), path)


def draw_actions(actions: np.ndarray, caption: str, boundaries: list[int] | None = None,
                 boundary_labels: list[str] | None = None, title: str = "Published actions"):
    """One panel per action dimension in its units (m, rad per control step; gripper), over the
    action index, with a dashed line where each episode ends."""
    actions = np.asarray(actions, dtype=float).reshape(-1, ACTION_DIM)
    figure, axes = _figure(title, ACTION_DIM, 1, size=TALL_FIGURE_SIZE_IN, sharex=True)
    steps = np.arange(len(actions))
    palette = colours(ACTION_DIM)
    for dimension, panel in enumerate(axes.flat):
        panel.plot(steps, actions[:, dimension] * ACTION_SCALES[dimension], color=palette[dimension], linewidth=1,
                   marker="." if len(steps) < 80 else None, markersize=3)
        unit = "0-1" if dimension == ACTION_DIM - 1 else ACTION_UNITS[dimension]
        panel.set_ylabel(f"{ACTION_NAMES[dimension]}\n({unit})", fontsize=7, rotation=0, ha="right", va="center")
        panel.tick_params(labelsize=6)
        for index, boundary in enumerate(boundaries or []):
            panel.axvline(boundary - 0.5, color="0.4", linestyle="--", linewidth=0.8)
            if dimension == 0 and boundary_labels:
                panel.text(boundary - 0.5, 1.02, boundary_labels[index], fontsize=6, ha="right",
                           transform=panel.get_xaxis_transform())
    axes.flat[-1].set_xlabel("action (in publication order)")
    _finish(figure, f"n = {len(actions)} actions; dashed: end of an episode (from the episode results' step counts); "
                    f"pose per control step (value x {LIBERO_MAX_DELTA_POS_M} m, x {LIBERO_MAX_DELTA_ROT_RAD} rad); "
                    "gripper: OpenVLA's 0 = close, 1 = open. " + caption)
    return figure


def actions_plot(path: Path, actions: np.ndarray, caption: str, boundaries: list[int] | None = None,
                 boundary_labels: list[str] | None = None) -> Path:
    return save(draw_actions(actions, caption, boundaries, boundary_labels), path)
