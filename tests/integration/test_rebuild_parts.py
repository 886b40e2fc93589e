"""A rebuild's own read of the log and its per-kind rows equal the general ones, on SQLite
and PostgreSQL: `read_facts` is `LogFacts.add` over the same events (older event versions
upcast), and `Kinds` gives each account the rows `account_rows` gives it and an index code
that reads back as its facts, whether its kind was seen before or not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from entitlements.application.engine import Engine
from entitlements.domain.commands import parse_command_file
from entitlements.domain.rules import Fact
from projections import log_reader, rebuild_writer, sql_views
from projections.check_index import MASK, CheckIndex, from_us, to_us
from projections.facts import LogFacts
from projections.log_reader import read_log
from projections.rebuild_read import read_facts, read_pages
from projections.rebuild_rows import Kinds, Written
from projections.sql_views import SqlReadModel, sql_engine
from projections.state_intervals import account_rows
from tests.conftest import scenario_file

FACTS_FIELDS = ("accounts", "regions", "region_of", "members", "stream_of", "position")


def the_scenario_and_alike_accounts(engine: Engine) -> None:
    """The china-2020 story (some of its accounts' rows quote their registration's times:
    rule 7), then accounts alike but for their times (a fan-out revokes the free ones,
    each under the fan-out's command_id), one of them with an event recorded after one
    it is effective before."""
    engine.apply_parsed(parse_command_file(scenario_file("china-2020.jsonl")))
    start = datetime(2021, 3, 1, tzinfo=UTC)
    commands: list[dict[str, Any]] = []
    for i in range(24):
        at = (start + timedelta(hours=i)).isoformat()
        plan = ("free", "pro", "free")[i % 3]
        commands.append(
            {
                "command": "register_account",
                "account_id": f"alike-{i:02d}",
                "region": "US",
                "plan": plan,
                "channel": "online",
                "effective_at": at,
                "command_id": f"reg-{i}",
            }
        )
    for at in ("2021-06-01", "2021-05-01"):  # recorded in this order, effective out of it
        commands.append(
            {
                "command": "revoke_hosting",
                "account_id": "alike-01",
                "reason": "audit",
                "effective_at": f"{at}T00:00:00+00:00",
            }
        )
    commands.append(
        {
            "command": "apply_region_rule",
            "region": "US",
            "rule": "free_hosting_suspended",
            "effective_at": "2021-04-01T00:00:00+00:00",
        }
    )
    results = engine.apply(commands)
    assert all(r.status == "applied" for r in results), [r.reason for r in results]


def logfacts(engine: Engine, stop: int) -> LogFacts:
    facts = LogFacts()
    for page in read_log(engine.app, 0, stop):
        facts.add(page)
    return facts


def seen_by(seen: list[tuple[int, int]]) -> Any:
    return lambda done, total: seen.append((done, total))


@pytest.mark.parametrize("page", [3, 1000])
def test_read_facts_equals_log_facts_add(
    engine: Engine, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    the_scenario_and_alike_accounts(engine)
    monkeypatch.setattr(log_reader, "PAGE", page)
    head = engine.position()
    for stop in (head, head - 7):
        seen: list[tuple[int, int]] = []
        got, expected = read_facts(engine.app, stop, seen_by(seen)), logfacts(engine, stop)
        for name in FACTS_FIELDS:
            assert getattr(got, name) == getattr(expected, name), name
        assert got.newest_recorded_at == expected.newest_recorded_at
        assert seen[-1] == (got.position, stop) and len(seen) >= stop // page
    assert read_facts(engine.app, 0).position == 0


@pytest.mark.parametrize("page", [3, 1000])
def test_the_rest_read_by_the_other_process_as_json_pages_gives_the_same_facts(
    engine: Engine, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other process's part of the log, as it crosses the pipe (JSON of Fact rows),
    taken in after this process's own: the same LogFacts as reading it all here, wherever
    the split falls (inside a stream, before its first event, at either end)."""
    the_scenario_and_alike_accounts(engine)
    monkeypatch.setattr(log_reader, "PAGE", page)
    head = engine.position()
    expected = logfacts(engine, head)
    for split in (0, 1, head // 3, head // 2 + 1, head - 1, head):
        wire = [json.loads(rebuild_writer.dumps(p)) for p in read_pages(engine.app, split, head)]
        got = read_facts(engine.app, head, rest=(split, wire))
        for name in FACTS_FIELDS:
            assert getattr(got, name) == getattr(expected, name), (split, name)
        assert got.newest_recorded_at == expected.newest_recorded_at


def test_an_unknown_stream_is_refused_as_log_facts_refuses_it(engine: Engine) -> None:
    the_scenario_and_alike_accounts(engine)
    stored = engine.app.recorder.select_notifications(start=1, limit=10**6)
    revoked = [n for n in stored if n.topic.endswith("HostingRevoked")][-1]  # the newest
    stray = StoredEvent(uuid4(), revoked.originator_version, revoked.topic, revoked.state)
    engine.app.recorder.insert_events([stray])  # its stream never opened
    head = engine.app.recorder.max_notification_id() or 0
    with pytest.raises(ValueError, match="HostingRevoked v2 of an unknown stream"):
        logfacts(engine, head)
    with pytest.raises(ValueError, match="HostingRevoked v2 of an unknown stream"):
        read_facts(engine.app, head)


@pytest.mark.parametrize("now_offset_days", [0, -365 * 3])
def test_kinds_give_each_account_its_own_rows_and_index_code(
    engine: Engine, store_url: str, now_offset_days: int
) -> None:
    the_scenario_and_alike_accounts(engine)
    facts = read_facts(engine.app, engine.position())
    now = datetime.now(UTC) + timedelta(days=now_offset_days)  # now before or after the times
    when = SqlReadModel(sql_engine(store_url)).when
    kinds = Kinds(CheckIndex(), now, when)
    reference = CheckIndex()
    for account_id in sorted(facts.accounts):
        account_facts: list[Fact] = facts.accounts[account_id]
        region = facts.region_of[account_id]
        got = kinds.rows(account_id, region, account_facts)
        assert got == account_rows(account_id, region, account_facts, now, when), account_id
        code = kinds.codes[account_id]
        assert kinds.index.store.facts(account_id, code) == account_facts, account_id
        template_id, times, _ = reference.interner.encode(account_facts)
        template = kinds.index.interner.templates[code & MASK]
        assert template.events == reference.interner.templates[template_id].events
        offset = code >> 32
        assert list(kinds.index.store.times[offset : offset + template.slots]) == times
    assert len(kinds) < len(facts.accounts) - 15  # the alike accounts shared their kinds


def test_rows_that_quote_their_times_are_worked_out_account_by_account() -> None:
    """An event effective before the registration (the engine refuses one, an older log
    may hold it): rule 7's reason names the registration's times, its own per account."""
    now = datetime(2030, 1, 1, tzinfo=UTC)
    kinds = Kinds(CheckIndex(), now)
    for day in (1, 2, 3):
        registered = datetime(2021, 5, day, tzinfo=UTC)
        account_id = f"early-{day}"
        facts = [
            Fact(
                f"account:{account_id}",
                "HostingRevoked",
                2,
                registered - timedelta(days=30),
                registered,
                {"reason": "audit"},
            ),
            Fact(
                f"account:{account_id}",
                "AccountRegistered",
                1,
                registered,
                registered,
                {"region": "US", "plan": "free", "channel": "online", "partner": None},
            ),
        ]
        rows = kinds.rows(account_id, "US", facts)
        assert rows == account_rows(account_id, "US", facts, now)
        assert any(registered.date().isoformat() in str(row[2]) for row in rows[1])
        assert kinds.index.store.facts(account_id, kinds.codes[account_id]) == facts


def test_a_kind_names_the_content_of_data_exactly() -> None:
    """Equal content, one kind (any command_id alike); 1 is not True, key order counts,
    values marshal refuses (times) are named too."""
    content = Kinds(CheckIndex(), datetime(2030, 1, 1, tzinfo=UTC))._content
    at = datetime(2021, 1, 1, tzinfo=UTC)
    assert content({"a": 1, "command_id": "x"}) == content({"a": 1, "command_id": "y"})
    assert content({"a": 1}) != content({"a": True}) != content({"a": 1.0})
    assert content({"a": 1, "b": 2}) != content({"b": 2, "a": 1})
    assert content({"a": {"b": [1]}}) == content({"a": {"b": [1]}}) != content({"a": {"b": [2]}})
    assert content({"at": at}) == content({"at": at}) != content({"at": at + timedelta(1)})
    assert content(None) == -1


@pytest.mark.parametrize(
    "t",
    [
        datetime(2020, 1, 1, 0, 0, 5, tzinfo=UTC),
        datetime(2020, 1, 1, 0, 0, 5, 123456, tzinfo=timezone(timedelta(hours=2))),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
        datetime(999, 1, 1, tzinfo=UTC),
        None,
    ],
)
def test_sqlite_times_are_written_as_before(t: datetime | None) -> None:
    """The fast text of a time is the strftime text the SQLite rows always had."""
    expected = None if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    assert sql_views._sqlite_time(t) == expected


def test_written_times_are_those_when_writes_remembered_or_not(monkeypatch: Any) -> None:
    """Shared times are written once while remembered, and every time is written as `when`
    writes it, before and after the remembered ones are dropped."""
    calls: list[datetime] = []

    def when(t: datetime | None) -> Any:
        assert t is not None
        calls.append(t)
        return sql_views._sqlite_time(t)

    monkeypatch.setattr(Written, "KEEP", 5)
    written = Written(when)
    shared = to_us(datetime(2020, 6, 1, 12, 0, 0, 250, tzinfo=UTC))
    for i in range(20):
        own = to_us(datetime(2021, 1, 1, tzinfo=UTC) + timedelta(seconds=i))
        us = [own, shared, own + 1]
        assert written(us) == [sql_views._sqlite_time(from_us(u)) for u in us]
    assert 40 < len(calls) < 60  # the shared time written again only after a drop
    assert Written()([shared]) == [from_us(shared)]  # no `when`: the datetime itself


def registered(account_id: str, at: datetime, **data: Any) -> Fact:
    """An account's registration (with `data` for its data), effective when recorded."""
    return Fact(f"account:{account_id}", "AccountRegistered", 1, at, at, data)


def test_a_kind_is_the_content_of_its_data_and_causes_exactly() -> None:
    """Accounts of one kind have equal data and causes, value for value and type for type
    (1, True, 1.0 and "1" are four kinds), in the same key order; any command_id alike;
    values marshal refuses (times) named too. Each reads back as its own facts."""
    now = datetime(2030, 1, 1, tzinfo=UTC)
    kinds = Kinds(CheckIndex(), now)
    at = datetime(2021, 1, 1, tzinfo=UTC)
    base = {"region": "US", "plan": "free", "channel": "online"}
    cause = {"rule": "r", "rule_event": {"stream": "region:US", "version": 2}}
    revoked = {"reason": "audit"}
    variants: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]] = [
        ({**base, "partner": 1}, revoked, None),
        ({**base, "partner": True}, revoked, None),
        ({**base, "partner": 1.0}, revoked, None),
        ({**base, "partner": "1"}, revoked, None),
        ({"plan": "free", **base, "partner": 1}, revoked, None),  # another key order
        ({**base, "partner": 1}, revoked, cause),
        ({**base, "partner": 1}, revoked, {**cause, "rule_event": {"stream": "region:US"}}),
        ({**base, "partner": 1, "command_id": "x"}, revoked, None),
        ({**base, "partner": 1}, {**revoked, "seen": at}, None),  # marshal refuses a time
        ({**base, "partner": 1}, {**revoked, "seen": at + timedelta(1)}, None),
    ]
    met = []
    for n, (data, revocation, why) in enumerate(variants):
        for copy in range(2):  # the second of each like the first: one kind
            account_id = f"a{n}-{copy}"
            them = {**data, "command_id": f"c{copy}"} if "command_id" in data else data
            facts = [
                registered(account_id, at + timedelta(hours=copy), **them),
                Fact(
                    f"account:{account_id}",
                    "HostingRevoked",
                    2,
                    at + timedelta(days=30),
                    at + timedelta(days=30),
                    revocation,
                    why,
                ),
            ]
            kind, _ = kinds.place(account_id, "US", facts)
            assert kind is not None
            met.append(kind.number)
            back = kinds.index.store.facts(account_id, kinds.codes[account_id])
            assert back == facts
            assert [type(v) for v in back[0].data.values()] == [type(v) for v in them.values()]
    assert met == [n for n in range(len(variants)) for _ in range(2)]


def test_facts_out_of_version_order_keep_each_command_id_to_its_version() -> None:
    """A later-recorded event effective before an earlier one: the facts (in effective
    order) are not in version order, and the index keeps command_ids by version."""
    now = datetime(2030, 1, 1, tzinfo=UTC)
    kinds = Kinds(CheckIndex(), now)
    numbers = []
    for n in range(3):
        account_id = f"late-{n}"
        at = datetime(2021, 1, 1, tzinfo=UTC) + timedelta(days=n)
        stream = f"account:{account_id}"
        facts = [
            registered(account_id, at, region="US", plan="free", channel="online"),
            Fact(stream, "HostingRestored", 3, at + timedelta(5), at + timedelta(20),
                 {"reason": "back", "command_id": f"restore-{n}"}),
            Fact(stream, "HostingRevoked", 2, at + timedelta(10), at + timedelta(10),
                 {"reason": "audit", "command_id": f"revoke-{n}"}),
        ]  # fmt: skip
        kind, _ = kinds.place(account_id, "US", facts)
        assert kind is not None
        numbers.append(kind.number)
        assert kinds.index.store.facts(account_id, kinds.codes[account_id]) == facts
        assert kinds.rows(account_id, "US", facts) == account_rows(account_id, "US", facts, now)
    assert numbers == [0, 0, 0]
