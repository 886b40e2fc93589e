"""`migrate`: one store's history copied into another (the embedded SQLite file into
PostgreSQL, or back), for a user who outgrows one machine.

What moves: the log, every record at its own position with its topic and stored state as
they are (so the integrity chain, the command records that make commands exactly-once, and
every position a receipt or a reader names stay valid), and the API tokens. What does not:
the read models and snapshots, which are derived (`entitlements rebuild` on the target).

1. the source's head P is taken (what this run copies: a record appended later is not);
2. the target is checked: empty, or holding a prefix of this very log (its last record is
   the source's record at that position, chain hash included; a kill left it so), and no
   token of the same name that is another token; anything else is refused, nothing written;
3. the records after the target's head up to P are copied in batches, each one transaction
   (a kill loses at most the batch under way; run again, it goes on from the target's head
   and copies nothing twice), under the target's writer lock (no `apply` interleaves);
4. the tokens the target lacks are added;
5. both chains are recomputed (`audit verify`; the source's in a process of its own from
   PARALLEL_FROM records, so the two walks take the time of one on two cores): the copy's
   head receipt must be the source's record at P, and the source must hold that receipt,
   else NotVerified (exit 6). A source whose own chain is broken is copied as it is, and
   said so: the copy holds the same break, nothing the source did not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.application import Application

from entitlements.adapters.integrity import Verification, parse_receipt, stored_hash
from entitlements.adapters.store import (
    StoreError,
    WriterLock,
    check_store,
    create_tables,
    eventsourcing_env,
    store_url,
)
from entitlements.adapters.store_copy import (
    LogRow,
    append_rows,
    read_tokens,
    row_at,
    write_tokens,
)
from entitlements.application.integrity_check import verify
from entitlements.application.store_app import EntitlementsApplication
from projections.log_reader import read_stored
from projections.sql_views import sql_engine

BATCH = 10_000  # records per transaction on the target
PARALLEL_FROM = 20_000  # records: from here the source's walk runs in a process of its own
TARGET_WAIT = 10.0  # seconds to wait for the target's writer lock (a writer busy there)

#: progress(copied so far, to copy in all); after_batch(target's head): a test's failure point
Progress = Callable[[int, int], None]


class OtherHistory(StoreError):
    """The target holds records (or tokens) that are not the source's: never overwritten."""


class NotVerified(Exception):
    """A chain that does not verify, or a copy whose head receipt is not the source's."""


@dataclass
class Migration:
    """What a migration did: the receipt both stores give, and what it copied."""

    source: str
    target: str
    receipt: dict[str, Any]  # {"position", "hash"}: the source's head, and now the target's
    resumed_from: int  # the target's head before this run (0: a fresh target)
    copied: int = 0  # records written by this run
    batches: int = 0
    tokens_copied: int = 0
    tokens_revoked: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    source_moved_to: int | None = None  # the source's head now, when it grew meanwhile

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "source": self.source,
            "target": self.target,
            "receipt": self.receipt,
            "resumed_from": self.resumed_from,
            "copied": self.copied,
            "batches": self.batches,
            "tokens_copied": self.tokens_copied,
            "tokens_revoked": self.tokens_revoked,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "source_moved_to": self.source_moved_to,
        }


def open_log(url: str, must_exist: bool) -> EntitlementsApplication:
    """The store's log through eventsourcing's recorder (no index, no projector: a
    migration reads and writes records, it decides nothing)."""
    check_store(url, must_exist)
    return EntitlementsApplication(env={**eventsourcing_env(url), "CREATE_TABLE": "n"})


def migrate(
    source: str,
    target: str,
    batch: int = BATCH,
    progress: Progress | None = None,
    after_batch: Callable[[int], None] | None = None,
    verifying: Callable[[int], None] | None = None,
) -> Migration:
    """Copy the store at `source` into the store at `target` (see the module's docstring);
    `verifying(records)` is told when the walks start (they say nothing until they end).
    Raises OtherHistory (nothing written), NotVerified, or the store's own errors."""
    source, target = store_url(source), store_url(target)
    if source == target:
        raise StoreError(f"--to: the target is the store itself: {target}")
    src = open_log(source, must_exist=True)
    dst: EntitlementsApplication | None = None
    try:
        until = src.recorder.max_notification_id() or 0
        receipt = {"position": until, "hash": stored_hash(src, until)}  # verified at the end
        dst = open_log(target, must_exist=False)
        done = _copy_under_lock((source, src), (target, dst), receipt, batch, progress, after_batch)
        timings = done.seconds
        if verifying is not None:
            verifying(until)
        start = time.perf_counter()
        _verify_both((source, src), dst, receipt)
        timings["verify"] = time.perf_counter() - start
        moved = src.recorder.max_notification_id() or 0
        done.source_moved_to = moved if moved > until else None
        return done
    finally:
        src.close()
        if dst is not None:
            dst.close()


Store = tuple[str, EntitlementsApplication]  # a store's URL and its log


def _copy_under_lock(
    source_store: Store,
    target_store: Store,
    receipt: dict[str, Any],
    batch: int,
    progress: Progress | None,
    after_batch: Callable[[int], None] | None,
) -> Migration:
    """Steps 2-4, holding the target's writer lock: no `apply` there interleaves."""
    (source, src), (target, dst) = source_store, target_store
    lock = WriterLock(target, timeout=TARGET_WAIT)
    try:
        with lock:
            create_tables(target, dst.recorder)
            head = _check_target(src, dst, receipt["position"])
            tokens = _token_plan(source, target)
            done = Migration(source, target, receipt, resumed_from=head)
            start = time.perf_counter()
            _copy(src, dst, head, receipt["position"], batch, done, progress, after_batch)
            done.tokens_copied, done.tokens_revoked = _write_tokens(target, tokens)
            done.seconds["copy"] = time.perf_counter() - start
            return done
    finally:
        lock.close()


def _verify_both(source_store: Store, dst: Application[Any], receipt: dict[str, Any]) -> None:
    """Both chains recomputed (`audit verify`), at once when the log is long enough to pay
    for a second process: the copy's head must be `receipt`, and the source must hold it
    (the source may have grown since: its log up to the receipt is what counts)."""
    source, src = source_store
    held = _as_tuple(receipt)
    child = None
    if receipt["position"] >= PARALLEL_FROM:
        given = [f"{held[0]}@{held[1]}"] if held else []
        child = subprocess.Popen(
            [sys.executable, "-m", __name__, source, *given],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        try:
            _verified(dst, "the copy", receipt)
            copy_failed = None
        except NotVerified as e:  # said after the source's verdict: a broken source explains it
            copy_failed = e
        if child is None:
            report = verify(src, held).as_dict()
        else:
            out, err = child.communicate()
            if child.returncode != 0:  # its last line is the error (a traceback's end)
                last = (err.strip().splitlines() or [f"exit {child.returncode}"])[-1]
                raise NotVerified(f"the source could not be verified: {last[:200]}")
            report = json.loads(out)
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
    _source_holds(report)
    if copy_failed is not None:
        raise copy_failed


def _source_holds(report: dict[str, Any]) -> None:
    """NotVerified unless the source's walk found its chain intact and the receipt held."""
    broken, held = report.get("break"), report.get("receipt")
    if broken is not None:
        raise NotVerified(
            f"the source does not verify: at position {broken['position']}: "
            f"{broken['kind']}: {broken['reason']} (the copy holds what it held)"
        )
    if held is not None and not held["holds"]:
        raise NotVerified(f"the source does not give the copy's head receipt: {held['reason']}")


def _as_tuple(receipt: dict[str, Any]) -> tuple[str, int] | None:
    """A receipt to verify against; None when nothing is chained (no hash to hold)."""
    return (receipt["hash"], receipt["position"]) if receipt["hash"] else None


def _verified(app: Application[Any], which: str, expected: dict[str, Any]) -> None:
    """`app`'s log verified, its chain recomputed: its head receipt must be `expected`."""
    found: Verification = verify(app)
    if not found.ok:
        raise NotVerified(
            f"{which} does not verify: at position {found.position}: {found.kind}: {found.reason}"
        )
    head = {"position": found.position, "hash": found.hash}
    if head != expected:
        raise NotVerified(
            f"{which} does not give the source's head receipt: {_receipt(head)}, "
            f"not {_receipt(expected)}"
        )


def _receipt(head: dict[str, Any]) -> str:
    return f"{head['hash']}@{head['position']}" if head["hash"] else f"unchained@{head['position']}"


def _check_target(src: Application[Any], dst: Application[Any], until: int) -> int:
    """The target's head, when the target holds nothing or a prefix of the source's log up
    to `until` (its last record equal to the source's there: the chain hash in the state
    links it to every record before, which the final verification recomputes); else
    OtherHistory."""
    head = dst.recorder.max_notification_id() or 0
    if head == 0:
        return 0
    if head > until:
        raise OtherHistory(
            f"--to: the target holds another history: its log reaches position {head}, "
            f"past the source's head {until} (nothing was copied)"
        )
    theirs, ours = row_at(dst.recorder, head), row_at(src.recorder, head)
    if theirs is None or theirs != ours:
        raise OtherHistory(
            f"--to: the target holds another history: its record at position {head} is not "
            "the source's (nothing was copied)"
        )
    return head


def _copy(
    src: Application[Any],
    dst: Application[Any],
    after: int,
    until: int,
    batch: int,
    done: Migration,
    progress: Progress | None,
    after_batch: Callable[[int], None] | None,
) -> None:
    """The source's records after `after` up to `until`, a batch per transaction."""
    total = until - after
    for page in read_stored(src, after, stop=until, page=batch):
        rows = [LogRow.of(n) for n in page]
        append_rows(dst.recorder, rows)
        done.copied += len(rows)
        done.batches += 1
        if progress is not None:
            progress(rows[-1].position - after, total)
        if after_batch is not None:
            after_batch(rows[-1].position)


TokenPlan = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def _token_plan(source: str, target: str) -> TokenPlan:
    """The source's tokens the target lacks, and those revoked on the source but not yet on
    the target; a name the target gives to another token (another secret or role) is
    OtherHistory. Tokens only the target has are kept."""
    theirs, ours = _tokens(target), _tokens(source)
    new, revoked = [], []
    for name, row in sorted(ours.items()):
        there = theirs.get(name)
        if there is None:
            new.append(row)
        elif (there["token_hash"], there["role"]) != (row["token_hash"], row["role"]):
            raise OtherHistory(
                f"--to: the target holds another history: its token {name!r} is another "
                "token than the source's (nothing was copied)"
            )
        elif row["revoked_at"] is not None and there["revoked_at"] is None:
            revoked.append(row)
    return new, revoked


def _tokens(url: str) -> dict[str, dict[str, Any]]:
    engine = sql_engine(url)
    try:
        return read_tokens(engine)
    finally:
        engine.dispose()


def _write_tokens(target: str, plan: TokenPlan) -> tuple[int, int]:
    new, revoked = plan
    if new or revoked:
        engine = sql_engine(target)
        try:
            write_tokens(engine, new, revoked)
        finally:
            engine.dispose()
    return len(new), len(revoked)


def main(argv: list[str]) -> None:
    """`python -m entitlements.application.migrate URL [HASH@POSITION]`: the source's walk
    as a process of its own (JSON on stdout: what `audit verify --json` prints)."""
    url, receipt = argv[0], parse_receipt(argv[1]) if len(argv) > 1 else None
    with open_log(store_url(url), must_exist=True) as app:
        print(json.dumps(verify(app, receipt).as_dict()))


if __name__ == "__main__":
    main(sys.argv[1:])
