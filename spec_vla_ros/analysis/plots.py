"""Plots shared by the eval, harness and bag reports.

matplotlib with the Agg backend (no display needed), PNG files of one fixed size, each with a
caption at the bottom that says what produced it (the report's provenance line).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from ..vla.constants import ACTION_DIM  # noqa: E402

FIGURE_SIZE_IN = (9.0, 5.0)
DPI = 100
FIGURE_PIXELS = (int(FIGURE_SIZE_IN[0] * DPI), int(FIGURE_SIZE_IN[1] * DPI))   # (width, height) of every PNG
CAPTION_FONT_SIZE = 7


def grouped_bars(path: Path, title: str, ylabel: str, groups: list[str], series: dict[str, list[float]],
                 caption: str, errors: dict[str, list[float]] | None = None, ylim: tuple | None = None,
                 xlabel: str = "") -> Path:
    """One cluster of bars per group (a task, a position), one bar per series (a configuration)."""
    figure, axes = _figure(title)
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for index, (label, values) in enumerate(series.items()):
        error = None if errors is None else _finite(errors.get(label))
        axes.bar(x + (index - (len(series) - 1) / 2) * width, _finite(values), width, yerr=error, capsize=3,
                 label=label)
    axes.set_xticks(x, groups, fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if ylim is not None:
        axes.set_ylim(*ylim)
    return _save(figure, axes, path, caption)


def lines(path: Path, title: str, xlabel: str, ylabel: str, series: dict[str, tuple], caption: str) -> Path:
    """One line per series, each given as (x values, y values)."""
    figure, axes = _figure(title)
    for label, (x, y) in series.items():
        axes.plot(x, y, marker="." if len(x) < 50 else None, linewidth=1, label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    return _save(figure, axes, path, caption)


def acceptance_length_histogram(path: Path, passes_per_action: dict[str, list[int]], caption: str,
                                title: str = "Acceptance length per action") -> Path:
    """Share of actions at each acceptance length; an action decoded in p verifier passes has
    acceptance length 7 / p, so the possible values are 1, 1.17, ... 3.5, 7."""
    passes = range(ACTION_DIM, 0, -1)
    groups = [f"{ACTION_DIM / p:.2f}\n({p} pass{'es' if p > 1 else ''})" for p in passes]
    series = {label: [counts.count(p) / len(counts) if counts else 0.0 for p in passes]
              for label, counts in passes_per_action.items()}
    return grouped_bars(path, title, "share of actions", groups, series, caption, ylim=(0, 1),
                        xlabel="acceptance length (verifier passes for the action)")


def acceptance_by_position(path: Path, outcomes: dict[str, tuple[list[int], list[int]]], caption: str,
                           title: str = "Acceptance by draft position") -> Path:
    """Rate at which the verifier accepted the draft's k-th proposal of a pass, among the proposals it
    judged (`outcomes[label] = (accepted counts, judged counts)` per position 1, 2, ...)."""
    positions = max((len(judged) for _, judged in outcomes.values()), default=0)
    groups = [str(position + 1) for position in range(positions)]
    series = {label: [accepted[i] / judged[i] if i < len(judged) and judged[i] else float("nan")
                      for i in range(positions)]
              for label, (accepted, judged) in outcomes.items()}
    return grouped_bars(path, title, "accepted / judged", groups, series, caption, ylim=(0, 1),
                        xlabel="draft position (k-th proposal verified in a pass)")


def _figure(title: str):
    figure, axes = plt.subplots(figsize=FIGURE_SIZE_IN, dpi=DPI)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    return figure, axes


def _save(figure, axes, path: Path, caption: str) -> Path:
    """Legend, caption and a fixed-size PNG (no tight bounding box, so every file is FIGURE_PIXELS)."""
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    figure.text(0.01, 0.01, caption, fontsize=CAPTION_FONT_SIZE, wrap=True, va="bottom")
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    plt.close(figure)
    return path


def _finite(values):
    """None -> NaN so that matplotlib leaves a gap instead of failing."""
    return None if values is None else [np.nan if value is None else value for value in values]
