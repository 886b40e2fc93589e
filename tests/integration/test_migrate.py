"""`entitlements migrate`: SQLite -> PostgreSQL and back, interrupted between batches at
random points and resumed, every china-2020 check equal on both stores and both `audit
verify` receipts equal; the target a writer goes on with; hostile targets refused with
nothing changed."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from entitlements import open_engine
from entitlements.adapters.store import StoreError
from entitlements.application.access import open_tokens
from entitlements.application.migrate import NotVerified, OtherHistory, migrate, open_log
from entitlements.domain.commands import parse_command_file
from tests.conftest import (
    CLI,
    postgres_available,
    postgres_or_skip,
    read_jsonl,
    registrations,
    scenario_file,
)
from tests.e2e.cli_runner import entitlements
from tests.integration.tamper import Tamper

EXPECTED_ROWS = read_jsonl(scenario_file("china-2020.expected.jsonl"))
ACCOUNTS = sorted({row["account_id"] for row in EXPECTED_ROWS})


class Stopped(Exception):
    """The injected failure between two batches."""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (cli_runner.py); the run killed halfway is a process."""
    return entitlements(*args)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The china-2020 story on an SQLite file, with two API tokens (one revoked); the
    tests copy the file before changing it."""
    folder = tmp_path_factory.mktemp("migrate-source")
    url = f"sqlite:///{folder / 'store.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENTITLEMENTS_CACHE", str(folder / "cache"))
        with open_engine(url) as engine:  # as `apply FILE` does: each line's id derived
            engine.apply_parsed(parse_command_file(scenario_file("china-2020.jsonl")))
            head = engine.position()
    with open_tokens(url) as tokens:
        secret = tokens.create("meetings-svc", "checker")
        tokens.create("old-ops", "admin")
        tokens.revoke("old-ops")
    return {"url": url, "file": folder / "store.db", "head": head, "secret": secret}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))


def copy_of(source: dict[str, Any], folder: Path) -> str:
    shutil.copyfile(source["file"], folder / "copy.db")
    return f"sqlite:///{folder / 'copy.db'}"


def answers(url: str) -> list[Any]:
    """Every scenario check, and every scenario account's history, as the store answers."""
    with open_engine(url) as engine:
        checks = [
            engine.check(r["account_id"], r["capability"], r["at"], r.get("as_known_at"))
            for r in EXPECTED_ROWS
        ]
        for row, d in zip(EXPECTED_ROWS, checks, strict=True):  # the oracle, as test_scenario
            if "allowed" in row:
                assert d.allowed is row["allowed"], (url, row, d.reason)
            if "value" in row:
                assert d.value == row["value"], (url, row, d.reason)
        return [*checks, *(engine.history(a) for a in ACCOUNTS), engine.position()]


def receipt(url: str) -> dict[str, Any]:
    """`audit verify --json`'s head, through the console script (exit 0: intact)."""
    done = cli("audit", "verify", "--json", "--db", url)
    assert done.returncode == 0, done.stderr
    head: dict[str, Any] = json.loads(done.stdout)["head"]
    assert head["hash"]
    return head


def migrate_with_stops(source: str, target: str, rng: random.Random, total: int) -> int:
    """Migrate in batches of a random size, stopped after a random batch each time (an
    injected failure between batches), until it completes; returns the runs it took. Each
    run goes on from where the last one stopped, and the last copies only the rest: nothing
    twice, nothing lost."""
    batch = rng.randint(3, 17)
    reached, runs = 0, 0
    while True:
        runs += 1
        stop_after = rng.randint(1, 4)
        seen: list[int] = []

        def between(position: int, seen: list[int] = seen, stop_after: int = stop_after) -> None:
            seen.append(position)
            if len(seen) == stop_after:
                raise Stopped(position)

        try:
            done = migrate(source, target, batch=batch, after_batch=between)
        except Stopped as stopped:
            assert stopped.args[0] == min(total, reached + len(seen) * batch)  # whole batches
            reached = stopped.args[0]
            with open_log(target, must_exist=True) as app:
                assert app.recorder.max_notification_id() == reached
            continue
        assert done.resumed_from == reached
        assert done.copied == total - reached
        assert done.receipt["position"] == total
        return runs


@pytest.mark.postgres
def test_sqlite_to_postgres_and_back_stopped_at_random_points(
    source: dict[str, Any], tmp_path: Path
) -> None:
    rng = random.Random(os.environ.get("MIGRATE_SEED", "20"))
    pg = postgres_or_skip()
    assert migrate_with_stops(source["url"], pg, rng, source["head"]) > 1
    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert migrate_with_stops(pg, back, rng, source["head"]) > 1
    expected = answers(source["url"])
    assert answers(pg) == expected
    assert answers(back) == expected
    assert receipt(pg) == receipt(source["url"]) == receipt(back)


@pytest.mark.postgres
def test_the_tokens_come_along_and_a_writer_goes_on_after_the_copy(
    source: dict[str, Any], tmp_path: Path
) -> None:
    pg = postgres_or_skip()
    done = migrate(source["url"], pg)
    assert (done.tokens_copied, done.copied) == (2, source["head"])
    import psycopg

    with psycopg.connect(pg) as conn:  # the clock guard, off only inside each batch, is on
        enabled = conn.execute(
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'recorded_at_never_decreases'"
        ).fetchall()
    assert enabled == [("O",)]
    with open_tokens(pg) as tokens:
        assert tokens.authenticate(source["secret"]).name == "meetings-svc"  # type: ignore[union-attr]
        listed = {t["name"]: t for t in tokens.list()}
    assert listed["old-ops"]["revoked_at"] is not None
    with open_engine(pg) as engine:  # positions go on from the copied head
        once_more = tmp_path / "first-line.jsonl"
        once_more.write_text(scenario_file("china-2020.jsonl").read_text().splitlines()[0])
        [first] = engine.apply_parsed(parse_command_file(once_more))
        assert first.duplicate, "the command records came along: a repeat is a duplicate"
        assert engine.position() == source["head"]
        [result] = engine.apply(registrations(["after-the-move"]))
        assert result.status == "applied"
        assert result.position > source["head"]
        assert engine.check("after-the-move", "host").allowed
    assert receipt(pg)["position"] == result.position
    again = cli("migrate", "--db", source["url"], "--to", pg)  # the target moved on: not ours
    assert again.returncode == 2
    assert again.stderr.startswith("error: --to: the target holds another history")


def test_sqlite_to_sqlite_resumes_and_a_second_run_copies_nothing(
    source: dict[str, Any], tmp_path: Path
) -> None:
    target = f"sqlite:///{tmp_path / 'target.db'}"
    rng = random.Random(7)
    migrate_with_stops(source["url"], target, rng, source["head"])
    done = cli("migrate", "--db", source["url"], "--to", target, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["copied"], summary["resumed_from"]) == (0, source["head"])
    assert summary["receipt"] == receipt(source["url"]) == receipt(target)
    assert answers(target) == answers(source["url"])


def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_target_with_another_history_is_refused_and_left_as_it_was(
    source: dict[str, Any], tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    with open_engine(f"sqlite:///{other}") as engine:
        engine.apply(registrations(["someone-else"]))
    before = fingerprint(other)
    done = cli("migrate", "--db", source["url"], "--to", str(other))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(
        "error: --to: the target holds another history: its record at position"
    )
    assert fingerprint(other) == before


def test_a_token_name_taken_by_another_token_is_refused_before_any_record(
    source: dict[str, Any], tmp_path: Path
) -> None:
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with open_tokens(target) as tokens:
        tokens.create("meetings-svc", "admin")
    with pytest.raises(OtherHistory, match="its token 'meetings-svc' is another token"):
        migrate(source["url"], target)
    with open_log(target, must_exist=True) as app:
        assert not app.recorder.max_notification_id()


def test_a_target_past_the_source_is_refused(source: dict[str, Any], tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'target.db'}"
    migrate(source["url"], target)
    with open_engine(target) as engine:
        engine.apply(registrations(["only-on-the-target"]))
    with pytest.raises(OtherHistory, match="past the source's head"):
        migrate(source["url"], target)


@pytest.mark.parametrize(
    ("to", "said"),
    [
        ("postgresql://u@127.0.0.1:99999/x", "error: --to: not a store URL: "),
        ("mysql://u@host/x", "error: --to: unsupported store 'mysql'"),
        ("memory://", "error: --to: memory:// keeps the log in the memory of one process"),
        ("sqlite:///:memory:", "error: --to: an SQLite store needs a file path"),
    ],
)
def test_a_bad_target_url_is_one_line_exit_2(source: dict[str, Any], to: str, said: str) -> None:
    done = cli("migrate", "--db", source["url"], "--to", to)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(said), done.stderr
    assert done.stderr.count("\n") == 1


def test_the_store_itself_and_a_missing_source_are_refused(
    source: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="the target is the store itself"):
        migrate(source["url"], str(source["file"]))
    done = cli("migrate", "--db", str(tmp_path / "typo.db"), "--to", str(tmp_path / "t.db"))
    assert done.returncode == 4
    assert done.stderr.startswith("store error: the store does not exist")
    assert not (tmp_path / "t.db").exists()


def test_a_source_that_does_not_verify_is_exit_6_naming_its_break(
    source: dict[str, Any], tmp_path: Path
) -> None:
    url = copy_of(source, tmp_path)
    with open_engine(url) as engine:
        tamper = Tamper(engine)
        state = tamper.row(5)[4]
        tamper.set_state(5, {**state, "reason": "edited behind the engine's back"})
    target = tmp_path / "target.db"
    done = cli("migrate", "--db", url, "--to", str(target))
    assert done.returncode == 6
    assert done.stderr.startswith("not verified: the source does not verify: at position 5")
    assert done.stderr.count("\n") == 1
    again = cli("audit", "verify", "--db", str(target))  # the copy holds the same break
    assert again.returncode == 6
    assert "at position 5" in again.stdout


def test_a_copy_that_does_not_verify_is_exit_6(
    source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from entitlements.application import migrate as migration

    def damaging(recorder: Any, rows: list[Any]) -> None:
        """The rows written, but the record at position 3 altered on the way."""
        altered = [
            r._replace(state=r.state.replace(b"CN", b"HK")) if r.position == 3 else r for r in rows
        ]
        append(recorder, altered)

    from entitlements.adapters.store_copy import append_rows as append

    monkeypatch.setattr(migration, "append_rows", damaging)
    with pytest.raises(NotVerified, match="the copy does not verify: at position 3"):
        migrate(source["url"], f"sqlite:///{tmp_path / 'target.db'}")


def head_of(url: str) -> int:
    with open_log(url, must_exist=True) as app:
        return app.recorder.max_notification_id() or 0


def killed_and_resumed(source: str, target: str, kill_at: int, batch: int) -> int:
    """`entitlements migrate` in a process of its own, SIGKILLed once the target reaches
    `kill_at`, then run again to the end; returns the target's head when it was killed."""
    process = subprocess.Popen(
        [CLI, "migrate", "--db", source, "--to", target, "--batch", str(batch)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if head_of(target) >= kill_at:
                    break
            except Exception:  # noqa: BLE001 - the target's table is not there yet
                pass
            time.sleep(0.002)
        process.kill()
    finally:
        process.wait()
    head = head_of(target)
    done = cli("migrate", "--db", source, "--to", target, "--batch", str(batch), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed_from"] == head
    assert head + summary["copied"] == summary["receipt"]["position"]
    return head


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timing
def test_a_killed_process_resumes_both_ways(tmp_path: Path) -> None:
    """A real process killed mid-copy at a random position, SQLite -> PostgreSQL and back:
    the target holds whole batches only, the next run copies the rest, and the three
    stores verify to one receipt."""
    rng = random.Random(os.environ.get("MIGRATE_SEED", "20"))
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with open_engine(source) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
        engine.apply(registrations([f"u-{i}" for i in range(3000)]))
        total = engine.position()
    pg, back = postgres_or_skip(), f"sqlite:///{tmp_path / 'back.db'}"
    batch = 10
    for target, origin in ((pg, source), (back, pg)):
        head = killed_and_resumed(origin, target, rng.randint(1, total // 2), batch)
        assert 0 < head < total, "killed before it started or after it ended"
        assert head % batch == 0, "a batch was left half written"
    assert receipt(source) == receipt(pg) == receipt(back)
    assert answers(back) == answers(pg) == answers(source)


@pytest.mark.parametrize("tampered", [False, True])
def test_the_source_walked_in_a_process_of_its_own(
    source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tampered: bool
) -> None:
    """From PARALLEL_FROM records the source's chain is walked by a second process (here
    from the first): the same verdicts as in process."""
    from entitlements.application import migrate as migration

    monkeypatch.setattr(migration, "PARALLEL_FROM", 1)
    url = copy_of(source, tmp_path)
    if tampered:
        with open_engine(url) as engine:
            tamper = Tamper(engine)
            tamper.set_state(9, {**tamper.row(9)[4], "plan": "enterprise"})
    target = f"sqlite:///{tmp_path / 'target.db'}"
    if tampered:
        with pytest.raises(NotVerified, match="the source does not verify: at position 9"):
            migrate(url, target)
    else:
        assert migrate(url, target).receipt == receipt(url) == receipt(target)


def test_a_revocation_after_the_copy_reaches_the_target_on_the_next_run(
    source: dict[str, Any], tmp_path: Path
) -> None:
    url = copy_of(source, tmp_path)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    migrate(url, target)
    with open_tokens(url) as tokens:
        tokens.revoke("meetings-svc")
    done = migrate(url, target)
    assert (done.copied, done.tokens_copied, done.tokens_revoked) == (0, 0, 1)
    with open_tokens(target) as tokens:
        assert tokens.authenticate(source["secret"]) is None


def test_records_appended_to_the_source_meanwhile_are_said_and_copied_by_the_next_run(
    source: dict[str, Any], tmp_path: Path
) -> None:
    url = copy_of(source, tmp_path)
    target = f"sqlite:///{tmp_path / 'target.db'}"

    def a_writer_goes_on(position: int) -> None:
        if position == 10:
            with open_engine(url) as engine:
                engine.apply(registrations(["late-comer"]))

    done = migrate(url, target, batch=10, after_batch=a_writer_goes_on)
    assert done.receipt["position"] == source["head"]
    assert done.source_moved_to == source["head"] + 2  # the sign-up and its command record
    again = migrate(url, target)
    assert (again.resumed_from, again.copied) == (source["head"], 2)
    assert receipt(url) == receipt(target)


def test_a_source_walk_that_fails_to_run_is_exit_6_in_one_line(
    source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from entitlements.application import migrate as migration

    monkeypatch.setattr(migration, "PARALLEL_FROM", 1)
    monkeypatch.setattr(sys, "executable", shutil.which("false"))
    with pytest.raises(NotVerified, match=r"^the source could not be verified: exit 1$"):
        migrate(source["url"], f"sqlite:///{tmp_path / 'target.db'}")


@pytest.mark.postgres
def test_postgres_to_postgres(source: dict[str, Any]) -> None:
    """From one PostgreSQL database into another (a new server, say): the same receipt."""
    from tests.conftest import postgres_template

    pg = postgres_or_skip()
    migrate(source["url"], pg)
    copied: list[Any] = []
    name = postgres_template(lambda url: copied.append(migrate(pg, url)))
    assert copied[0].copied == source["head"]
    other = pg.rsplit("/", 1)[0] + "/" + name
    assert receipt(other) == receipt(pg) == receipt(source["url"])


def _respelled(tamper: Tamper, position: int) -> None:
    """The record's state as the same JSON spelled otherwise (a space after its first
    comma): the same decoded state, so the same chain, other bytes."""
    state = tamper.raw(position)[3]
    tamper.set_column(position, "state", state.replace(b",", b", ", 1))


TARGET_EDITS: dict[
    str, tuple[Callable[[Tamper], None], str]
] = {  # an edit of the copy between the copy and its verification -> the message
    "state edited": (
        lambda t: t.set_state(7, {**t.row(7)[4], "plan": "enterprise"}),
        "the copy does not verify: at position 7",
    ),
    "state respelled": (
        lambda t: _respelled(t, 7),
        r"the copy does not hold the source's records as they are: positions 1\.\.10000 differ",
    ),
    "topic changed": (
        lambda t: t.set_column(7, "topic", t.raw(7)[2] + "x"),
        "the copy does not verify: at position 7",
    ),
    "last row deleted": (
        lambda t: t.delete(t.rows()[-1][0]),
        "the copy does not give the source's head receipt",
    ),
}


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("edit", sorted(TARGET_EDITS))
def test_a_copy_altered_after_it_was_written_is_not_verified(
    source: dict[str, Any], tmp_path: Path, kind: str, edit: str
) -> None:
    """The copy is not walked again when its rows' digest equals the source's: an edit of
    any of its rows after the copy (its chain broken, or bytes the chain does not cover)
    makes the digests differ, and the copy's walk says where."""
    target = f"sqlite:///{tmp_path / 'target.db'}" if kind == "sqlite" else postgres_or_skip()
    change, said = TARGET_EDITS[edit]

    def behind_its_back(_: int) -> None:
        with open_engine(target) as engine:
            change(Tamper(engine))

    with pytest.raises(NotVerified, match=said):
        migrate(source["url"], target, verifying=behind_its_back)


def test_the_rows_digest_is_the_same_whoever_computes_it(
    source: dict[str, Any], tmp_path: Path
) -> None:
    """The source's walk, the SQLite target read here and a PostgreSQL target digested by
    the server give one digest of the same rows."""
    from entitlements.adapters.store_copy import stored_digest
    from entitlements.application.migrate import walk_source

    targets = [f"sqlite:///{tmp_path / 'target.db'}"]
    if not postgres_available():
        targets.append(postgres_or_skip())
    digests = []
    with open_log(source["url"], must_exist=True) as app:
        digests.append(walk_source(app, source["head"], None)[1])
    for target in targets:
        migrate(source["url"], target)
        with open_log(target, must_exist=True) as app:
            digests.append(stored_digest(app.recorder))
    assert digests[0] and all(d == digests[0] for d in digests)
