"""The auditors' bitemporal picture of one decision, drawn with matplotlib.

    fig = bitemporal_figure(audit.bitemporal(engine, "cn-ent-02", "host"),
                            audit.explain(engine, "cn-ent-02", "host"))
    save_png(fig, "docs/cn-ent-02-host.png")   # a temporary file beside it, then a rename

Effective time runs across, recorded time up; each rectangle of entitlements/domain/bitemporal.py
is filled by its answer. A backdated event shows as a corner above the diagonal: the
answer to its right changes only from the day it was recorded upward. Drawn on a bare
`Figure` (the Agg canvas, no pyplot): no screen, no global state, the same bytes each time.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.patches import Rectangle as Box

from entitlements.domain.bitemporal import Rectangle, deciding_events
from entitlements.domain.rules import LIMIT_CAPABILITIES, Fact

DPI = 110
SIZE = (12.5, 7.5)  # inches: 1375 x 825 pixels at DPI
FONT = 8.5  # points, for reasons, ticks and the caption
CHAR_INCHES, LINE_INCHES = 0.075, 0.155  # about one character and one line at FONT
YES, NO, UNKNOWN, ASKED = "#74c476", "#ef8a62", "#d9d9d9", "#1f3fbf"
EDGE_NOTE = (
    "the last time on file on each axis: past it nothing\n"
    "changes, so a colour crossing it has no end on file"
)
CAPTION = (
    "Each point (T, K) is coloured by what check answers for effective time T as known at "
    "K. Past the dashed lines (the last time on file) nothing changes: a colour crossing "
    "them has no end on file and goes on past the picture's edge. Above the dotted diagonal "
    "lie events recorded after they took effect (backdated); below it, events recorded "
    "ahead of time."
)

#: (colour, legend label): how one answer is painted.
Paint = tuple[str, str]


def _paint(r: Rectangle, capability: str, limits: Sequence[int]) -> Paint:
    """Grey where the account is not registered (as known then), else by the answer: yes /
    no, or for a limit its value, greener for more."""
    if not r.registered:
        return UNKNOWN, "not registered, or not yet known"
    if capability in LIMIT_CAPABILITIES:
        if not r.value:
            return NO, "0: no hosting, so no limit"
        shade = 0.35 + 0.45 * (limits.index(r.value) / max(len(limits) - 1, 1))
        return to_hex(colormaps["Greens"](shade)), f"limit {r.value}"
    return (YES, "allowed") if r.allowed else (NO, "not allowed")


def _num(t: datetime) -> float:
    """A time as matplotlib places it on a date axis (days since its epoch)."""
    return float(mdates.date2num(t))  # type: ignore[no-untyped-call]


def _day(t: datetime) -> str:
    """A date as people read it; the time too when it is not midnight UTC."""
    return t.strftime("%Y-%m-%d %H:%M") if (t.hour, t.minute) != (0, 0) else t.strftime("%Y-%m-%d")


def _answer(explained: Mapping[str, Any]) -> str:
    if explained["capability"] in LIMIT_CAPABILITIES:
        return str(explained["value"] if explained["allowed"] else 0)
    return "yes" if explained["allowed"] else "no"


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


#: Where a margin is cut: the store takes times up to the last microsecond of 9999, past
#: which `datetime` overflows, and matplotlib's date axis refuses a limit it rounds to the
#: year 10000 (the last microsecond does), so the last second is the edge.
FIRST = datetime.min.replace(tzinfo=UTC)
LAST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def _shift(t: datetime, by: timedelta) -> datetime:
    """`t + by`, kept within [FIRST, LAST] instead of overflowing."""
    try:
        return min(max(t + by, FIRST), LAST)
    except OverflowError:
        return LAST if by > timedelta(0) else FIRST


def _extent(
    rects: Sequence[Rectangle], events: Sequence[Fact], asked: Sequence[datetime | None]
) -> tuple[datetime, datetime, datetime, datetime]:
    """One range for both axes (every finite edge and deciding event, and the asked times
    unless they lie far off, with a margin), and the last effective and recorded edges:
    past each, nothing changes along its axis, so the margins show the open ends going on.
    A margin past the year 9999 is cut at its end: the times on file are all drawn."""
    across = [t for r in rects for t in (r.effective_from, r.effective_to) if t is not None]
    up = [t for r in rects for t in (r.recorded_from, r.recorded_to) if t is not None]
    across += [f.effective_at for f in events]
    up += [f.recorded_at for f in events]
    lo, hi = min(across + up), max(across + up)
    near = [t for t in asked if t is not None and _shift(lo, lo - hi) <= t <= _shift(hi, hi - lo)]
    lo, hi = min([lo, *near]), max([hi, *near])
    pad = max((hi - lo) * 0.2, timedelta(days=10))
    return _shift(lo, -pad), _shift(hi, pad), max(across, default=hi), max(up, default=hi)


#: Deciding events at one point (effective, recorded) share a number on the picture.
Group = tuple[datetime, datetime, list[Fact]]
MAX_LISTED = 7  # event groups listed beside the picture; the rest are counted


def _groups(events: Sequence[Fact]) -> list[Group]:
    """The deciding events by point, in (effective, recorded) order."""
    points: dict[tuple[datetime, datetime], list[Fact]] = {}
    for f in events:
        points.setdefault((f.effective_at, f.recorded_at), []).append(f)
    return [(eff, rec, facts) for (eff, rec), facts in points.items()]


def _group_line(n: int, group: Group) -> str:
    """`n  HostingRevoked v2 of account:x`, both clocks, and how late (or early) it was
    known when not on the same day."""
    eff, rec, facts = group
    streams: dict[str, dict[str, list[str]]] = {}  # stream -> type -> versions
    for f in facts:
        streams.setdefault(f.stream, {}).setdefault(f.type, []).append(f"v{f.version}")
    what = "; ".join(
        ", ".join(f"{kind} {', '.join(vs)}" for kind, vs in kinds.items()) + f" of {stream}"
        for stream, kinds in streams.items()
    )
    head = textwrap.fill(
        f"{n}  {what}", 62, subsequent_indent="   ", max_lines=3, break_on_hyphens=False
    )
    text = f"{head}\n   effective {_day(eff)}, recorded {_day(rec)}"
    days = round(abs(rec - eff) / timedelta(days=1))
    if days:
        text += f"\n   {days} days " + ("late: backdated" if rec > eff else "ahead of time")
    return text


def _borders(ax: Axes, rects: Sequence[Rectangle], lo: datetime, hi: datetime) -> None:
    """A thin white line where two touching rectangles give different answers, so two
    reasons of one colour (a suspension inside a revocation, say) still show apart."""
    for a in rects:
        for b in rects:
            if (a.allowed, a.value, a.reason) == (b.allowed, b.value, b.reason):
                continue
            if a.effective_to is not None and a.effective_to == b.effective_from:
                span = _overlap(
                    (a.recorded_from, a.recorded_to), (b.recorded_from, b.recorded_to), lo, hi
                )
                if span:
                    x = _num(a.effective_to)
                    ax.plot([x, x], span, color="white", lw=1.2, zorder=2)
            if a.recorded_to is not None and a.recorded_to == b.recorded_from:
                span = _overlap(
                    (a.effective_from, a.effective_to), (b.effective_from, b.effective_to), lo, hi
                )
                if span:
                    y = _num(a.recorded_to)
                    ax.plot(span, [y, y], color="white", lw=1.2, zorder=2)


Span = tuple[datetime | None, datetime | None]


def _overlap(a: Span, b: Span, lo: datetime, hi: datetime) -> list[float] | None:
    """Where two sides of touching rectangles overlap, clipped to [lo, hi] (an open end is
    the window's edge), in the axes' numbers; None when they do not."""

    def clip(t: datetime | None, default: datetime) -> float:
        return _num(min(max(t or default, lo), hi))

    start = max(clip(a[0], lo), clip(b[0], lo))
    end = min(clip(a[1], hi), clip(b[1], hi))
    return [start, end] if start < end else None


#: An answer's largest painted rectangle: its area, the rectangle, its colour, and its
#: clipped (left, right, bottom, top) in the axes' numbers.
Biggest = tuple[float, Rectangle, str, tuple[float, ...]]


def _fill(
    ax: Axes, rects: Sequence[Rectangle], capability: str, lo: datetime, hi: datetime
) -> list[Paint]:
    """Paint each rectangle (clipped to [lo, hi]) and write each answer's reason once, in
    its largest rectangle, when it fits there; returns the legend's paints in order."""
    limits = sorted({r.value for r in rects if r.registered and r.value})
    legend: dict[str, Paint] = {}
    biggest: dict[tuple[Any, ...], Biggest] = {}
    for r in rects:
        left = _num(max(r.effective_from or lo, lo))
        right = _num(min(r.effective_to or hi, hi))
        bottom = _num(max(r.recorded_from or lo, lo))
        top = _num(min(r.recorded_to or hi, hi))
        if right <= left or top <= bottom:
            continue  # wholly outside the picture
        colour, label = _paint(r, capability, limits)
        legend.setdefault(label, (colour, label))
        ax.add_patch(Box((left, bottom), right - left, top - bottom, color=colour, lw=0))
        area = (right - left) * (top - bottom)
        key = (r.allowed, r.value, r.reason)
        if area > biggest.get(key, (0.0,))[0]:
            biggest[key] = (area, r, colour, (left, right, bottom, top))
    span = _num(hi) - _num(lo)
    for found in biggest.values():
        _write_reason(ax, found, span)
    return list(legend.values())


def _write_reason(ax: Axes, biggest: Biggest, span: float) -> None:
    """An answer's reason written in its largest rectangle, wrapped to its width; nothing
    when a word is wider than the rectangle or the lines are taller."""
    _, r, colour, (left, right, bottom, top) = biggest
    box = ax.get_position()
    fig_w, fig_h = SIZE
    inches_w = (right - left) / span * box.width * fig_w
    inches_h = (top - bottom) / span * box.height * fig_h
    lines = textwrap.wrap(r.reason, width=max(int(inches_w / CHAR_INCHES) - 2, 1))
    if not lines or max(map(len, lines)) * CHAR_INCHES > inches_w - 0.1:
        return  # a word longer than the rectangle is wide
    if (len(lines) + 1) * LINE_INCHES > inches_h:
        return
    ax.text(
        (left + right) / 2,
        (bottom + top) / 2,
        "\n".join(lines),
        ha="center",
        va="center",
        fontsize=FONT,
        color="#222222",
        bbox={"fc": colour, "ec": "none", "pad": 1.5},  # over the lines drawn across
        zorder=3,
    )


def _mark_events(ax: Axes, groups: Sequence[Group]) -> None:
    """A dot and a number at each group's (effective, recorded); an arrow up from the
    diagonal to it for an event known late (or up to the diagonal for one known early)."""
    for n, (eff, rec, _) in enumerate(groups, start=1):
        x, y = _num(eff), _num(rec)
        if abs(rec - eff) >= timedelta(days=1):
            ax.annotate(
                "",
                (x, y),
                xytext=(x, x),
                arrowprops={"arrowstyle": "->", "color": "#222222", "lw": 1},
                zorder=4,
            )
        ax.plot([x], [y], "o", color="black", ms=6, zorder=5)
        ax.annotate(
            str(n),
            (x, y),
            xytext=(7, 7),
            textcoords="offset points",
            fontsize=10,
            fontweight="bold",
            bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": "black", "lw": 0.8},
            zorder=6,
        )


def _mark_asked(ax: Axes, at: datetime, known: datetime | None, lo: datetime, hi: datetime) -> str:
    """A star at the asked (T, K), moved in to the edge when it lies past it (nothing on
    file changes out there, so the colour under the star is still the answer); returns
    the legend's label for it. K None (everything recorded) is drawn at the top."""
    inside = timedelta(days=1) + (hi - lo) * 0.03
    x = min(max(at, lo + inside), hi - inside)
    y = hi - inside if known is None else min(max(known, lo + inside), hi - inside)
    ax.plot(
        [_num(x)],
        [_num(y)],
        "*",
        color=ASKED,
        ms=18,
        mec="white",
        mew=1.2,
        zorder=7,
    )
    label = f"asked: at {_day(at)}, as known {'at ' + _day(known) if known else 'now'}"
    if x != at or y != known:
        label += "\n(drawn at the edge: nothing on file changes past it)"
    return label


def _axes(ax: Axes, lo: datetime, hi: datetime) -> None:
    ax.set_xlim(_num(lo), _num(hi))
    ax.set_ylim(_num(lo), _num(hi))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=9))  # type: ignore[no-untyped-call]
        axis.set_major_formatter(mdates.DateFormatter("%d %b\n%Y"))  # type: ignore[no-untyped-call]
    ax.set_xlabel("effective time: when it takes effect  →", fontsize=10)
    ax.set_ylabel("recorded time: when it was known  →", fontsize=10)
    ax.tick_params(labelsize=FONT)
    ax.grid(True, color="white", lw=0.5, alpha=0.6)


def bitemporal_figure(rects: Sequence[Rectangle], explained: Mapping[str, Any]) -> Figure:
    """The picture of one account and capability: `rects` (from `audit.bitemporal`) filled
    by answer, the deciding events numbered at (effective, recorded), and the (T, K) that
    `explained` (from `audit.explain`) asked about, with its decision in the title."""
    capability = str(explained["capability"])
    at, known = _parse(explained["at"]), _parse(explained["as_known_at"])
    assert at is not None  # explain always names the effective time it answered for
    events = deciding_events(rects)
    groups = _groups(events)
    lo, hi, last_effective, last_recorded = _extent(rects, events, (at, known))
    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.07, 0.2, 0.55, 0.68))
    paints = _fill(ax, rects, capability, lo, hi)
    _borders(ax, rects, lo, hi)
    lo_n, hi_n = _num(lo), _num(hi)
    ax.plot([lo_n, hi_n], [lo_n, hi_n], ls=":", color="#555555", lw=1)
    # Past the last time on file nothing changes: a colour crossing these lines goes on.
    ax.axvline(_num(last_effective), color="#333333", lw=1.2, ls="--")
    ax.axhline(_num(last_recorded), color="#333333", lw=1.2, ls="--")
    _mark_events(ax, groups)
    asked = _mark_asked(ax, at, known, lo, hi)
    _axes(ax, lo, hi)

    handles: list[Any] = [
        Patch(facecolor=c, edgecolor="#888888", lw=0.5, label=lbl) for c, lbl in paints
    ]
    handles += [
        Line2D([], [], marker="o", color="black", ls="", label="deciding events (numbered below)"),
        Line2D([], [], marker="*", color=ASKED, ms=14, ls="", label=asked),
        Line2D([], [], ls=":", color="#555555", label="recorded = effective"),
        Line2D(
            [], [], marker=">", color="#222222", ms=5, label="from taking effect to being recorded"
        ),
        Line2D([], [], ls="--", lw=1.2, color="#333333", label=EDGE_NOTE),
    ]
    legend = legend_beside(
        ax,
        handles,
        "colour: what check answers for (effective time,\nas known at recorded time)",
        x=1.03,
        size=9,
    )
    listed = [_group_line(n, g) for n, g in enumerate(groups[:MAX_LISTED], start=1)]
    if len(groups) > MAX_LISTED:
        listed.append(f"... and {len(groups) - MAX_LISTED} more (entitlements history)")
    # The list starts under the legend, whose height depends on how many answers there are.
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
    legend_box = legend.get_window_extent(renderer).transformed(fig.transFigure.inverted())
    fig.text(
        0.655,
        legend_box.y0 - 0.03,
        "deciding events\n" + ("\n".join(listed) or "none"),
        va="top",
        ha="left",
        fontsize=8,
        family="monospace",
        linespacing=1.35,
    )

    known_text = f"as known at {_day(known)}" if known else "as known now"
    fig.suptitle(
        f"{explained['account_id']} · {capability} at {_day(at)}, {known_text}: "
        f"{_answer(explained)}",
        x=0.07,
        ha="left",
        fontsize=14,
        fontweight="bold",
        y=0.975,
    )
    fig.text(0.07, 0.905, str(explained["reason"]), fontsize=10.5, ha="left", color="#333333")
    fig.text(0.07, 0.035, textwrap.fill(CAPTION, width=112), fontsize=FONT, color="#333333")
    return fig


def legend_beside(ax: Axes, handles: list[Any], title: str, *, x: float, size: float) -> Legend:
    """The legend both pictures put to the right of their (first) axes, its top level with
    the axes' top at `x` axes widths, unframed, its title aligned left: one style for both."""
    return ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(x, 1.0),
        fontsize=size,
        frameon=False,
        title=title,
        title_fontsize=size,
        alignment="left",
    )


def writable_target(path: str | Path) -> Path:
    """`path` as a file to write, checked before any drawing: a name is given, it is not a
    folder, its folder exists; else an OSError saying which. (What only the write can tell,
    a read-only folder or a full disk, `save_png` reports.)"""
    target = Path(path)
    if not str(path).strip():
        raise FileNotFoundError(errno.ENOENT, "no file name given")
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "it is a folder")
    if not target.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"no folder {str(target.parent)!r}")
    return target


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG at `path`, whole or not at all: into a temporary file in
    the same directory, then renamed over `path` (an OSError leaves nothing behind)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI, metadata={"Software": None})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's 0600
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target
