"""The compact check index answers exactly what the rules say, reason and `because` included:
every decision equals `decide` over the folded facts, at every (T, K) where an answer can
change, through the `at` path and the "now" path, for the china-2020 story and a synthetic
world (accounts sharing templates)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from benchmarks.synthetic import world_facts, world_index
from entitlements.application.engine import Engine
from entitlements.domain.decisions import Decision
from entitlements.domain.rules import (
    CAPABILITIES,
    all_capabilities,
    decide,
    fold_account,
    fold_region,
)
from projections import check_index
from projections.check_index import CheckIndex, known_regions
from projections.facts import LogFacts
from tests.conftest import read_jsonl, scenario_file

TICK = timedelta(microseconds=1)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("index") / "story.db"
    with Engine(f"sqlite:///{path}") as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
        yield engine


def expected(facts: LogFacts, position: int, account_id: str, cap: str, t, k) -> Decision:  # type: ignore[no-untyped-def]
    region = facts.region_of[account_id]
    acc = fold_account(facts.accounts[account_id], t, k)
    reg = fold_region(region, facts.region_facts(region), t, k)
    return Decision.of(account_id, cap, decide(cap, acc, reg), position)


def grid(facts: LogFacts, account_id: str) -> tuple[list[datetime], list[datetime | None]]:
    mine = [*facts.accounts[account_id], *facts.region_facts(facts.region_of[account_id])]
    eff = {f.effective_at for f in mine}
    rec = {f.recorded_at for f in mine}
    times = sorted(eff | {t - TICK for t in eff} | {datetime(2019, 1, 1, tzinfo=UTC)})
    knowns: list[datetime | None] = [None, *sorted(rec | {k - TICK for k in rec})]
    return times, knowns


def test_every_answer_of_the_story_is_the_rules_answer(story: Engine) -> None:
    facts, index = story.facts, story.index
    compared = 0
    for account_id in facts.accounts:
        times, knowns = grid(facts, account_id)
        for t in times:
            for k in knowns:
                for cap in CAPABILITIES:
                    got = index.check(account_id, cap, t, k)
                    want = expected(facts, index.position, account_id, cap, t, k)
                    assert got == want, (account_id, cap, t, k)
                    assert got.as_dict() == want.as_dict()
                    compared += 1
    assert compared > 1000


def test_now_answers_are_the_rules_answers_now(story: Engine) -> None:
    facts, index = story.facts, story.index
    for account_id in facts.accounts:
        for _ in range(2):  # computed, then from the "now" cache
            for cap in CAPABILITIES:
                got = index.check(account_id, cap)
                want = expected(facts, got.position, account_id, cap, datetime.now(UTC), None)
                assert got == want, (account_id, cap)
    listed = all_capabilities(known_regions(index))  # route_via:R for every region known
    assert listed[: len(CAPABILITIES)] == CAPABILITIES and "route_via:CN" in listed
    assert index.capabilities("cn-ent-02") == [index.check("cn-ent-02", cap) for cap in listed]


def test_accounts_that_differ_only_in_times_share_one_template() -> None:
    facts = world_facts(400)
    index = world_index(facts)
    index.encode_all()
    # four regions x five plans (two of them free), CN free accounts with their revocation
    assert len(index.interner.templates) <= 20
    position = index.position
    for account_id in list(facts.accounts)[:60]:
        times, knowns = grid(facts, account_id)
        for t in times:
            for k in knowns:
                for cap in ("host", "max_meeting_minutes", "subscribe_online"):
                    want = expected(facts, position, account_id, cap, t, k)
                    assert index.check(account_id, cap, t, k) == want


def test_rule_7_is_kept_per_account_and_never_answers_for_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Accounts sharing a template, asked before their registration takes effect: rule 7's
    reason names each account's own registration times, so its memo is per account. Asked
    twice (the second from the memo), every answer is the rules' own; the memo stays within
    its bound, and a replaced index forgets it."""
    monkeypatch.setattr(check_index, "NOT_YET_SIZE", 8)
    facts = world_facts(60)
    index = world_index(facts)
    early = datetime(2019, 1, 1, tzinfo=UTC)
    reasons = set()
    for _ in range(2):
        for account_id in facts.accounts:
            for cap in ("host", "join"):
                want = expected(facts, index.position, account_id, cap, early, None)
                assert "registration" in want.reason
                assert index.check(account_id, cap, early) == want
                reasons.add(want.reason)
            assert len(index._not_yet) <= 8
    assert len(reasons) > 2  # (the accounts' registration times differ)
    index.replace({}, {}, 0)
    assert index._not_yet == {}


def test_a_rule_7_verdict_decided_on_a_code_no_longer_the_accounts_is_not_kept() -> None:
    """A check that read an account's code just before the index moved on (the account
    re-encoded, or a store replaced whose codes name other accounts) answers once, but
    keeps nothing under that code: the next account to hold it would be cited wrongly."""
    facts = world_facts(4)
    index = world_index(facts)
    account_id = next(iter(facts.accounts))
    code = index.code(account_id)
    template = index.interner.templates[code & check_index.MASK]
    region = index.regions[template.region].state_at(0, None)
    index.accounts[account_id] = code + 1  # (what the index holds for it now)
    decision = index._decide(account_id, "host", code, template, None, region)
    assert not decision.allowed
    assert index._not_yet == {}
    index.accounts[account_id] = code
    index._decide(account_id, "host", code, template, None, region)
    assert len(index._not_yet) == 1


def test_a_decision_keeps_citing_what_decided_it_after_the_account_changes(story: Engine) -> None:
    fresh = CheckIndex()
    facts = story.facts
    fresh.update(facts, _all(facts))
    before = fresh.check("cn-ent-02", "host", "2020-10-01")
    cited = before.because
    fresh.encode_all()
    fresh.update(facts, _all(facts))  # every account re-encoded on its next check
    fresh.check("cn-ent-02", "host", "2020-10-01")
    assert before.because == cited


def _all(facts: LogFacts):  # type: ignore[no-untyped-def]
    from projections.facts import Changed

    return Changed(accounts=set(facts.accounts), regions=set(facts.regions))


def test_an_index_snapshot_loads_back_to_the_same_answers(story: Engine, tmp_path: Path) -> None:
    from projections import snapshot
    from projections.timeline import region_timeline

    for facts in (story.facts, world_facts(300)):
        index = CheckIndex()
        index.update(facts, _all(facts))
        path = tmp_path / "index.json.gz"
        snapshot.write_index(path, index, facts, facts.members, {"head": 1}, ".tmp")
        loaded, head = snapshot.read_index(path)
        assert head == {"head": 1}
        assert loaded.position == facts.position
        assert loaded.members == facts.members
        assert loaded.regions == facts.regions
        again = CheckIndex()
        regions = {c: region_timeline(c, fs) for c, fs in loaded.regions.items()}
        again.replace(dict(loaded.accounts), regions, loaded.position, loaded.store)
        for account_id in facts.accounts:
            assert again.facts(account_id) == facts.accounts[account_id]
            times, knowns = grid(facts, account_id)
            for t in times[::3]:
                for k in knowns[::2]:
                    for cap in CAPABILITIES:
                        want = expected(facts, facts.position, account_id, cap, t, k)
                        assert again.check(account_id, cap, t, k) == want
        # an account met after the load shares the templates the snapshot brought
        before = len(again.interner.templates)
        first = next(iter(facts.accounts))
        again.accounts[first] = list(facts.accounts[first])
        again.check(first, "host", "2020-06-01")
        assert len(again.interner.templates) == before


# -- random histories: any events, any clocks, accounts that share templates -------------

_DAY0 = datetime(2020, 1, 1, tzinfo=UTC)
_ACCOUNT_EVENTS = [
    ("RegistrationSuspended", {}, {"rule": "registration_suspended"}),
    ("RegistrationApproved", {"plan": "pro", "channel": "partner", "partner": "P"}, None),
    ("SubscriptionOpened", {"plan": "business", "channel": "direct"}, None),
    ("SubscriptionClosed", {"plan": "free", "channel": "online"}, None),
    ("MovedToPartner", {"partner": "P"}, None),
    ("HostingRevoked", {"reason": "audit"}, None),
    ("HostingRevoked", {"reason": "rule"}, {"rule": "free_hosting_suspended"}),
    ("HostingRevoked", {"reason": "rule"}, {"rule": "free_hosting_suspended", "trigger": "own"}),
    ("HostingRestored", {"reason": "ok"}, None),
    ("HostingRestored", {"reason": "lifted"}, {"rule": "free_hosting_suspended"}),
    ("AccountSuspended", {"jurisdiction": "CN", "reason": "order"}, None),
    ("AccountReinstated", {}, None),
]


def _histories() -> Any:
    from hypothesis import strategies as st

    day = st.integers(min_value=0, max_value=12)
    event = st.tuples(st.integers(0, len(_ACCOUNT_EVENTS) - 1), day, day, st.integers(0, 5))
    account = st.tuples(day, day, st.sampled_from(["free", "pro"]), st.lists(event, max_size=4))
    rule = st.tuples(st.sampled_from(["RegionRuleApplied", "RegionRuleLifted"]), day, day)
    return st.tuples(st.lists(account, min_size=1, max_size=6), st.lists(rule, max_size=3))


#: Who asked, as an event's data may say it: nothing, an id, an actor and an id (the
#: engine's order), an actor alone, and ones a template keeps (not texts, separators, an
#: order of its own).
_WHO: list[dict[str, Any]] = [
    {},
    {"command_id": "cmd-{v}"},
    {"actor": "user:{a}", "command_id": "auto:{a}{v}"},
    {"actor": "ops@example"},
    {"actor": "bad\x1factor", "command_id": 7},
    {"command_id": "first-{v}", "reason": "who first"},
]


def _who(a: str, v: int, which: int) -> dict[str, Any]:
    return {k: x.format(a=a, v=v) if isinstance(x, str) else x for k, x in _WHO[which].items()}


def _cause(cause: dict[str, Any] | None, a: str) -> dict[str, Any] | None:
    """A trigger names the account's own registration (as the engine's corrections do)."""
    if cause is None or "trigger" not in cause:
        return cause
    return {
        **cause,
        "trigger": {"stream": f"account:{a}", "type": "AccountRegistered", "version": 1},
    }


def _world(accounts, rules) -> LogFacts:  # type: ignore[no-untyped-def]
    from entitlements.domain.rules import Fact

    facts = LogFacts()
    region = [Fact("region:CN", "RegionOpened", 1, _DAY0, _DAY0, {"region": "CN"})]
    for n, (kind, eff, rec) in enumerate(rules, 2):
        at, known = _DAY0 + timedelta(days=eff), _DAY0 + timedelta(days=rec)
        region.append(
            Fact("region:CN", kind, n, at, known, {"rule": "online_subscriptions_closed"})
        )
    facts.regions["CN"] = sorted(region, key=lambda f: f.order)
    for i, (eff, rec, plan, events) in enumerate(accounts):
        a = f"a{i}"
        data = {"region": "CN", "plan": plan, "channel": "online", "partner": None}
        data |= _who(a, 1, i % len(_WHO))  # one per command: kept beside the template
        stream = [
            Fact(
                f"account:{a}",
                "AccountRegistered",
                1,
                _DAY0 + timedelta(days=eff),
                _DAY0 + timedelta(days=rec),
                data,
            )
        ]
        for v, (which, e, r, who) in enumerate(events, 2):
            ty, d, cause = _ACCOUNT_EVENTS[which]
            at, known = _DAY0 + timedelta(days=e, hours=v), _DAY0 + timedelta(days=r)
            data = d | _who(a, v, who)
            stream.append(Fact(f"account:{a}", ty, v, at, known, data, _cause(cause, a)))
        facts.accounts[a] = sorted(stream, key=lambda f: f.order)
        facts.region_of[a] = "CN"
        facts.members.setdefault("CN", []).append(a)
    facts.position = 1000
    return facts


def _twin(facts: list[Any], name: str, shift: timedelta) -> list[Any]:
    """The account's events as another account's, times shifted, who asked its own."""
    old, new = facts[0].stream, f"account:{name}"
    a = old.split(":", 1)[1]
    return [
        type(f)(
            new,
            f.type,
            f.version,
            f.effective_at + shift,
            f.recorded_at + shift,
            {k: x.replace(a, name) if isinstance(x, str) else x for k, x in f.data.items()},
            _cause(f.cause, name) if f.cause and "trigger" in f.cause else f.cause,
        )
        for f in facts
    ]


def test_random_histories_decide_as_the_rules_do(tmp_path: Path) -> None:
    """Every answer, `because` and the facts read back, from the index and from its
    snapshot; twins (times shifted, who asked their own) share their template; a twin whose
    times straddle now answers now as the rules do, beside one that has them all past."""
    from hypothesis import given, settings

    from projections import snapshot
    from projections.check_index import MASK
    from projections.timeline import region_timeline

    @settings(max_examples=60, deadline=None)
    @given(_histories())
    def check(history) -> None:  # type: ignore[no-untyped-def]
        facts = _world(*history)
        later = datetime.now(UTC).replace(microsecond=0) - _DAY0 - timedelta(days=6)
        for a in list(facts.accounts):  # times straddling now: some events not yet effective
            facts.accounts[a + "-later"] = _twin(facts.accounts[a], a + "-later", later)
            facts.region_of[a + "-later"] = "CN"
        index = CheckIndex()
        index.update(facts, _all(facts))
        originals = [a for a in facts.accounts if not a.endswith("-later")]
        for a in originals:  # a twin of every account, times shifted: same template
            index.accounts[a + "-twin"] = _twin(facts.accounts[a], a + "-twin", timedelta(100))
        index.encode_all()
        for a in originals:
            assert index.code(a) & MASK == index.code(a + "-twin") & MASK, a
        path = tmp_path / "random.index"
        snapshot.write_index(path, index, facts, facts.members, None, ".tmp")
        loaded, _ = snapshot.read_index(path)
        again = CheckIndex()
        again.replace(
            dict(loaded.accounts),
            {c: region_timeline(c, fs) for c, fs in loaded.regions.items()},
            loaded.position,
            loaded.store,
        )
        for a in originals:
            assert again.facts(a + "-twin") == index.facts(a + "-twin")
        for a in facts.accounts:
            assert again.facts(a) == facts.accounts[a]
            times, knowns = grid(facts, a)
            for t in times:
                for k in knowns:
                    for cap in ("host", "max_participants", "subscribe_online", "join"):
                        want = expected(facts, facts.position, a, cap, t, k)
                        assert index.check(a, cap, t, k) == want, (a, cap, t, k)
                        assert again.check(a, cap, t, k) == want, (a, cap, t, k)
        for _ in range(2):  # decided, then from the template's "now" answers
            for a in facts.accounts:
                for cap in CAPABILITIES:
                    for ix in (index, again):
                        got = ix.check(a, cap)
                        want = expected(facts, got.position, a, cap, datetime.now(UTC), None)
                        assert got == want, (a, cap)

    check()


def test_the_interner_keeps_one_dict_per_content_and_no_fewer() -> None:
    """Equal content (keys in the same order, values of the same types, nested included)
    is one dict; 1, True, 1.0 and "1", another key order, another nested value, a datetime
    inside, each stay their own, and read back with the types they had."""
    from uuid import UUID

    from projections.check_index import Interner

    interner = Interner()
    when = datetime(2020, 5, 19, tzinfo=UTC)
    distinct: list[dict[str, Any]] = [
        {"n": 1},
        {"n": True},
        {"n": 1.0},
        {"n": "1"},
        {"a": 1, "b": 2},
        {"b": 2, "a": 1},
        {"rule": "r", "rule_event": {"type": "RegionRuleApplied", "version": 2}},
        {"rule": "r", "rule_event": {"type": "RegionRuleApplied", "version": 3}},
        {"at": when},
        {"at": when + TICK},
        {"id": UUID(int=1)},
    ]
    kept = [interner.value(d) for d in distinct]
    assert len({id(d) for d in kept}) == len(distinct)
    for d, k in zip(distinct, kept, strict=True):
        assert k is d and list(k.items()) == list(d.items())
        assert [type(v) for v in k.values()] == [type(v) for v in d.values()]
    again = [interner.value({k: v for k, v in d.items()}) for d in distinct]  # equal copies
    assert all(a is k for a, k in zip(again, kept, strict=True))
    assert interner.value(None) is None


def test_now_takes_an_accounts_own_future_event_on_time_beside_one_of_its_template() -> None:
    """Rule 9 for an account's own event: its template's "now" answer (another account's,
    every time past) is not its answer while one of its times is ahead, nor its own kept
    answer once that time has come."""
    import time

    from entitlements.domain.rules import Fact
    from projections.check_index import MASK

    now = datetime.now(UTC)
    facts = LogFacts()
    for a, revoked in (("past", now - timedelta(days=30)), ("ahead", now + timedelta(seconds=1.5))):
        registered = revoked - timedelta(days=10)
        data = {"region": "US", "plan": "pro", "channel": "online", "partner": None}
        facts.accounts[a] = [
            Fact(f"account:{a}", "AccountRegistered", 1, registered, registered, data),
            Fact(f"account:{a}", "HostingRevoked", 2, revoked, registered, {"reason": "audit"}),
        ]
        facts.region_of[a] = "US"
    index = CheckIndex()
    index.update(facts, _all(facts))
    assert not index.check("past", "host").allowed  # its template's answer, kept
    assert index.code("past") & MASK == index.code("ahead") & MASK
    for _ in range(2):  # decided, then kept among the last checked
        assert index.check("ahead", "host").allowed
    time.sleep(max(0.0, (now + timedelta(seconds=1.6) - datetime.now(UTC)).total_seconds()))
    decision = index.check("ahead", "host")
    assert not decision.allowed and decision.because[0].type == "HostingRevoked"
    assert decision == expected(facts, decision.position, "ahead", "host", datetime.now(UTC), None)


def test_an_empty_index_writes_and_reads_back(tmp_path: Path) -> None:
    from projections import snapshot

    facts = LogFacts()
    path = tmp_path / "empty.index"
    snapshot.write_index(path, CheckIndex(), facts, {}, None, ".tmp")
    loaded, head = snapshot.read_index(path)
    assert (loaded.accounts, loaded.members, loaded.regions, head) == ({}, {}, {}, None)
