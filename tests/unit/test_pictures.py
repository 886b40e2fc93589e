"""What the bitemporal picture says, read back from the figure (no store, no file): the
answers in the legend, the late event listed as backdated, the asked (T, K) where it was
asked, or moved in to the edge (saying so) when it lies far past everything on file, which
then does not stretch the axes."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import numpy as np
from matplotlib import dates as mdates
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text

from entitlements.cli.pictures import bitemporal_figure
from entitlements.domain.bitemporal import rectangles
from entitlements.domain.rules import Fact


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def num(text: str) -> float:
    """A day where matplotlib puts it on a date axis."""
    return float(mdates.date2num(day(text)))  # type: ignore[no-untyped-call]


STREAM = "account:cn-ent-02"
FACTS = [
    Fact(
        STREAM,
        "AccountRegistered",
        1,
        day("2020-05-26"),
        day("2020-05-26"),
        {"region": "CN", "plan": "enterprise", "channel": "direct"},
    ),
    Fact(STREAM, "HostingRevoked", 2, day("2020-09-15"), day("2020-11-01"), {"reason": "breach"}),
]


def figure(capability: str, at: str, known: str | None, **answer: Any) -> Figure:
    explained = {
        "account_id": "cn-ent-02",
        "capability": capability,
        "at": at,
        "as_known_at": known,
        **answer,
    }
    return bitemporal_figure(rectangles(capability, FACTS, "CN", []), explained)


def words(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def star(fig: Figure) -> tuple[float, float]:
    (mark,) = [
        line
        for line in fig.axes[0].get_lines()
        if isinstance(line, Line2D) and line.get_marker() == "*"
    ]
    xy = np.asarray(mark.get_xydata(), dtype=float)
    return float(xy[0, 0]), float(xy[0, 1])


def test_the_picture_names_the_answers_the_decision_and_the_backdated_event() -> None:
    fig = figure(
        "host",
        "2020-10-01T00:00:00Z",
        "2020-10-20T00:00:00Z",
        allowed=True,
        value=None,
        reason="may host on the enterprise plan",
    )
    text = words(fig)
    assert "cn-ent-02 · host at 2020-10-01, as known at 2020-10-20: yes" in text
    for label in ("allowed", "not allowed", "not registered, or not yet known"):
        assert f"\n{label}\n" in f"\n{text}\n"
    assert "HostingRevoked v2 of account:cn-ent-02" in text
    assert "effective 2020-09-15, recorded 2020-11-01\n   47 days late: backdated" in text
    assert star(fig) == (num("2020-10-01"), num("2020-10-20"))
    assert "drawn at the edge" not in text


def test_an_asked_time_far_past_the_file_is_drawn_at_the_edge_without_stretching() -> None:
    fig = figure(
        "host",
        "2026-11-24T00:00:00Z",
        None,
        allowed=False,
        value=None,
        reason="hosting revoked: breach",
    )
    left, right = fig.axes[0].get_xlim()
    assert num("2020-03-01") < left < num("2020-05-26")
    assert num("2020-11-01") < right < num("2021-03-01")
    x, y = star(fig)
    assert x < right and y < fig.axes[0].get_ylim()[1]  # inside, past the last time on file
    assert x > num("2020-11-01") and y > num("2020-11-01")
    assert "as known now\n(drawn at the edge: nothing on file changes past it)" in words(fig)


def test_a_limit_is_painted_by_its_value() -> None:
    fig = figure(
        "max_participants",
        "2020-10-01T00:00:00Z",
        None,
        allowed=False,
        value=0,
        reason="no hosting, so no limit: hosting revoked: breach",
    )
    text = words(fig)
    assert "limit 500" in text and "0: no hosting, so no limit" in text
    assert "max_participants at 2020-10-01, as known now: 0" in text


def test_an_account_whose_times_reach_the_year_9999_is_drawn_to_the_calendars_end() -> None:
    """The store takes times up to 9999-12-31T23:59:59.999999Z; the margin past them used to
    overflow `datetime` (explain --png exit 4). The picture is drawn, rendered whole, with
    the far event inside it and the right edge cut at the last second of 9999."""
    far = day("9999-12-31T23:59:59.999999")
    closed = Fact(STREAM, "SubscriptionClosed", 2, far, day("2020-06-01"), {})
    explained = {
        "account_id": "cn-ent-02",
        "capability": "host",
        "at": far.isoformat(),
        "as_known_at": None,
        "allowed": True,
        "value": None,
        "reason": "may host on the free plan",
    }
    fig = bitemporal_figure(rectangles("host", [FACTS[0], closed], "CN", []), explained)
    fig.savefig(io.BytesIO(), format="png")  # ticks are placed, and dates converted, here
    left, right = fig.axes[0].get_xlim()
    assert left < num("2020-05-26") and num("9999-12-31") < right <= num("9999-12-31T23:59:59")
    assert "SubscriptionClosed v2 of account:cn-ent-02" in words(fig)
    x, _ = star(fig)
    assert num("9000-01-01") < x < right  # the asked time, moved in from the far edge
