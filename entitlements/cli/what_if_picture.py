"""`what-if --png`: a region's daily counts before and after the hypothetical commands.

    save_png(what_if_figure(answer.counts), "docs/cn-what-if-earlier.png")

One panel per capability whose answers changed there (entitlements/application/what_if_counts.py
chooses them), days across, accounts up: each plan one colour, the log as it is solid and
with the what-if's commands dashed, the gap between them shaded. The counts are
`entitlements report`'s (a day counted at 00:00 UTC, per the plan the account had then), so
a plan whose lines part is where the what-if moves answers. Rule switches are vertical
lines: in both histories grey, only as on file dark grey, only in the what-if red. Drawn
on a bare `Figure` (no pyplot), as pictures.py draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from entitlements.application.report import COUNTED_AT, Series, allowed_to
from entitlements.application.what_if_counts import WhatIfCounts
from entitlements.cli.pictures import DPI, FONT, legend_beside

PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#bab0ac")
#: How a rule switch is drawn: (colour, line style, label prefix), by where it is on file.
SWITCH_STYLES = {
    "both": ("#9a9a9a", ":", ""),
    "before": ("#333333", "-.", "as on file: "),
    "after": ("#c0392b", "--", "what-if: "),
}
PANEL_INCHES = 2.9
TOTAL = "#222222"


def _x(days: Sequence[date]) -> list[float]:
    """Each day's midnight as matplotlib places it, and one more: the last day's step ends."""
    xs = [datetime.combine(d, time(), UTC) for d in days]
    xs.append(xs[-1] + timedelta(days=1))
    return [float(mdates.date2num(t)) for t in xs]  # type: ignore[no-untyped-call]


def _line(series: Series, plan: str | None) -> list[int]:
    """A plan's count each day (None: the total), the last repeated (a step drawn `post`
    needs its end)."""
    counts = [c.get(plan, 0) if plan else sum(c.values()) for _, c in series.days]
    return [*counts, counts[-1]]


def moved_plans(before: Series, after: Series, plans: Sequence[str]) -> list[str]:
    """The plans whose count differs on some day."""
    return [p for p in plans if _line(before, p) != _line(after, p)]


def _panel(ax: Axes, before: Series, after: Series, plans: Sequence[str], also: str) -> None:
    """One capability: the total before (solid) and after (dashed), and so each plan whose
    count moves, in its colour, the gap between them shaded."""
    xs = _x([d for d, _ in before.days])
    moved = moved_plans(before, after, plans)
    top = 1
    for plan in (None, *moved):
        was, will = _line(before, plan), _line(after, plan)
        colour = TOTAL if plan is None else PALETTE[list(plans).index(plan) % len(PALETTE)]
        ax.step(xs, was, where="post", color=colour, lw=1.8)
        ax.step(xs, will, where="post", color=colour, lw=1.8, ls="--")
        ax.fill_between(xs, was, will, step="post", color=colour, alpha=0.15, lw=0)
        top = max(top, *was, *will)
    ax.set_ylim(0, top * 1.35 + 0.5)
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylabel(f"accounts\n{allowed_to(before.capability)}{also}", fontsize=FONT)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=FONT)
    ax.grid(axis="y", alpha=0.3)


def panels(counts: WhatIfCounts) -> list[tuple[Series, Series, list[str]]]:
    """(before, after, the other capabilities counted the same) per panel: a capability
    whose counts equal an earlier one's, before and after, shares its panel."""
    found: list[tuple[Series, Series, list[str]]] = []
    for was, will in zip(counts.before.series, counts.after.series, strict=True):
        same = next((p for p in found if (p[0].days, p[1].days) == (was.days, will.days)), None)
        if same is None:
            found.append((was, will, []))
        else:
            same[2].append(was.capability)
    return found


def _switches(counts: WhatIfCounts) -> list[tuple[datetime, str, str]]:
    """(when, where on file, text) of every rule switch in either history, in time order."""
    was = {(s.at, s.rule, s.on) for s in counts.before.switches}
    will = {(s.at, s.rule, s.on) for s in counts.after.switches}
    found = []
    for at, rule, on in sorted(was | will):
        where = (
            "both"
            if (at, rule, on) in was & will
            else "before"
            if (at, rule, on) in was
            else "after"
        )
        found.append((at, where, f"{rule} {'on' if on else 'lifted'}"))
    return found


def _mark_switches(axes: Sequence[Axes], counts: WhatIfCounts) -> None:
    """The rule switches as vertical lines on every panel, named on the first."""
    for i, (at, where, text) in enumerate(_switches(counts)):
        colour, style, prefix = SWITCH_STYLES[where]
        x = float(mdates.date2num(at))  # type: ignore[no-untyped-call]
        for ax in axes:
            ax.axvline(x, color=colour, ls=style, lw=1.1)
        lo, hi = axes[0].get_xlim()
        right = x > lo + 0.6 * (hi - lo)  # written leftwards there, clear of the legend
        axes[0].annotate(
            f"{at:%d %b}: {prefix}{text}",
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-3 if right else 3, -4 - 11 * (i % 4)),
            textcoords="offset points",
            va="top",
            ha="right" if right else "left",
            fontsize=7.5,
            color=colour,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )


def _legend(ax: Axes, counts: WhatIfCounts) -> None:
    """The plans whose counts move, by colour, and what solid and dashed mean."""
    plans = counts.after.plans
    moved = {p for was, will, _ in panels(counts) for p in moved_plans(was, will, plans)}
    handles: list[Any] = [Line2D([], [], color=TOTAL, lw=1.8, label="all plans")]
    handles += [
        Line2D([], [], color=PALETTE[i % len(PALETTE)], lw=1.8, label=plan)
        for i, plan in enumerate(plans)
        if plan in moved
    ]
    handles += [
        Line2D([], [], color="#777777", lw=1.8, label="before: the log as it is"),
        Line2D([], [], color="#777777", lw=1.8, ls="--", label="after: with the commands"),
    ]
    handles += [
        Line2D([], [], color=colour, ls=style, lw=1.1, label=f"rule switch {label}")
        for colour, style, label in (
            (*SWITCH_STYLES["both"][:2], "in both"),
            (*SWITCH_STYLES["before"][:2], "only as on file"),
            (*SWITCH_STYLES["after"][:2], "only in the what-if"),
        )
    ]
    legend_beside(
        ax, handles, "accounts counted:\nall, and each plan whose count moves", x=1.01, size=8
    )


def what_if_figure(counts: WhatIfCounts) -> Figure:
    """The region's daily counts per plan before and after, one panel per capability."""
    before, after = counts.before, counts.after
    drawn = panels(counts)
    n = len(drawn)
    fig = Figure(figsize=(12.5, PANEL_INCHES * n + 1.4), dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.subplots(n, 1, sharex=True, squeeze=False)
    axes = [row[0] for row in grid]
    for ax, (was, will, also) in zip(axes, drawn, strict=True):
        same = f"\n(the same: {', '.join(also)})" if also else ""
        _panel(ax, was, will, after.plans, same)
    _mark_switches(axes, counts)  # after the panels: their x limits are set
    _legend(axes[0], counts)
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes[-1].set_xlabel(f"day (counted at {COUNTED_AT})", fontsize=FONT)
    known = (
        f"as known at {before.as_known_at:%Y-%m-%d %H:%M} UTC"
        if before.as_known_at
        else "as known now"
    )
    fig.suptitle(
        f"what-if in {counts.region}: accounts per plan each day, {before.start} to "
        f"{before.end}, {known}: before (solid) and after (dashed); nothing recorded",
        x=0.02,
        ha="left",
        fontsize=11,
        fontweight="bold",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the legend, beside the first panel
    return fig
