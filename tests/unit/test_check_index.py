"""The compact check index answers exactly what the rules say, reason and `because` included:
every decision equals `decide` over the folded facts, at every (T, K) where an answer can
change, through the `at` path and the "now" path, for the china-2020 story and a synthetic
world (accounts sharing templates)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks.synthetic import world_facts, world_index
from entitlements.decisions import Decision
from entitlements.engine import Engine
from entitlements.rules import CAPABILITIES, decide, fold_account, fold_region
from projections.check_index import CheckIndex
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
    assert index.capabilities("cn-ent-02") == [
        index.check("cn-ent-02", cap) for cap in CAPABILITIES
    ]


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
        again.replace(dict(loaded.accounts), regions, loaded.position, loaded.store)  # type: ignore[arg-type]
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
