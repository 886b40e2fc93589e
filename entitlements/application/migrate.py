"""`migrate`: one store's history copied into another (the embedded SQLite file into
PostgreSQL, or back), for a user who outgrows one machine.

What moves: the log, every record at its own position with its topic and stored state as
they are (so the integrity chain, the command records that make commands exactly-once, and
every position a receipt or a reader names stay valid), and the API tokens. What does not:
the read models and snapshots, which are derived (`entitlements rebuild` on the target).

1. the source's head P is taken (what this run copies: a record appended later is not);
   from PARALLEL_FROM records a second process starts walking the source's chain (5.)
   while this one copies: the two run at once on two cores;
2. the target is checked: empty, or holding a prefix of this very log (its last record is
   the source's record at that position, chain hash included; a kill left it so), and no
   token of the same name that is another token; anything else is refused, nothing written;
3. the records after the target's head up to P are copied in batches, each one transaction
   (a kill loses at most the batch under way; run again, it goes on from the target's head
   and copies nothing twice), under the target's writer lock (no `apply` interleaves); from
   SQLite they are read straight from the recorder's table (store_copy.read_sqlite_rows),
   from PostgreSQL through the one pager (log_reader.read_stored);
4. the tokens the target lacks are added;
5. verified: the source's chain is recomputed (`audit verify`, against the receipt at P),
   digesting on the way every row it reads up to P (store_copy.RowDigest: position,
   stream, version, topic and state bytes, each unambiguously encoded, SHA-256 in chunks
   of positions); the target's rows are digested the same way (PostgreSQL computes it in
   the server); the two digests must be equal, else NotVerified (exit 6). A source whose
   own chain is broken is copied as it is, and said so (exit 6): the copy holds the same
   break, nothing the source did not.

Why equal digests prove what a second `audit verify` of the copy proved (the copy's head
receipt is the source's record at P, and its chain intact). `verify` is a function of the
rows its recorder lists: (position, stream, version, topic, state bytes), in order, and the
mapper that decodes the states (the same for both stores: one configuration, one code).
Equal digests mean (SHA-256 being collision resistant, the encoding unambiguous: fixed
widths, lengths before the variable parts; a row that cannot be encoded never matches)
that the target holds exactly the rows the source's walk read up to P, byte for byte, at
the same positions, no row more or less: every row counts, a row after P too. So
the copy's walk would read the same rows as the source's walk up to P, and find what it
found there: no break (a break anywhere in the source is already NotVerified), and at P the
chain the source's walk recomputed, which must equal the receipt (the hash the record at P
carries) or the source's verdict is NotVerified; so the copy's head receipt is the receipt.
Conversely a target row altered in any way (any column, any byte of the state, a row
added, removed or moved) changes its chunk's digest: NotVerified, exit 6, and only then is
the copy walked, to say where its chain breaks in `audit verify`'s words (or, when its chain
still verifies, that its bytes differ: a change the chain does not cover, such as the
state's JSON spelled otherwise, is refused too). The digest is taken of what the walk read,
not of what the copy read, so a source changed between the two is caught as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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
    DIGEST_CHUNK,
    Chunks,
    LogRow,
    RowDigest,
    append_rows,
    is_postgres,
    read_sqlite_rows,
    read_tokens,
    row_at,
    stored_digest,
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
    walk: SourceWalk | None = None
    try:
        until = src.recorder.max_notification_id() or 0
        receipt = {"position": until, "hash": stored_hash(src, until)}  # verified at the end
        walk = SourceWalk(source, src, receipt)  # from PARALLEL_FROM: walking while we copy
        dst = open_log(target, must_exist=False)
        done = _copy_under_lock((source, src), (target, dst), receipt, batch, progress, after_batch)
        timings = done.seconds
        if verifying is not None:
            verifying(until)
        start = time.perf_counter()
        _verify_both(walk, dst, receipt)
        timings["verify"] = time.perf_counter() - start
        moved = src.recorder.max_notification_id() or 0
        done.source_moved_to = moved if moved > until else None
        return done
    finally:
        if walk is not None:
            walk.stop()
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


class SourceWalk:
    """The source's chain recomputed (`audit verify`) and its rows up to the receipt's
    position digested on the way (store_copy.RowDigest): from PARALLEL_FROM records in a
    process of its own, started before the copy so that the two run at once on two cores;
    below that here, when asked."""

    def __init__(self, source: str, src: Application[Any], receipt: dict[str, Any]) -> None:
        self.src, self.until, self.held = src, receipt["position"], _as_tuple(receipt)
        self.child: subprocess.Popen[str] | None = None
        if self.until >= PARALLEL_FROM:
            given = [f"{self.held[0]}@{self.held[1]}"] if self.held else []
            self.child = subprocess.Popen(
                [sys.executable, "-m", __name__, source, str(self.until), *given],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

    def result(self) -> tuple[dict[str, Any], Chunks]:
        """What `audit verify --json` says of the source, and the digest of its rows."""
        if self.child is None:
            return walk_source(self.src, self.until, self.held)
        out, err = self.child.communicate()
        if self.child.returncode != 0:  # its last line is the error (a traceback's end)
            last = (err.strip().splitlines() or [f"exit {self.child.returncode}"])[-1]
            raise NotVerified(f"the source could not be verified: {last[:200]}")
        found = json.loads(out)
        return found["report"], [(k, n, h) for k, n, h in found["digest"]]

    def stop(self) -> None:
        """The second process ended, if it still runs (the copy failed meanwhile)."""
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.wait()


def walk_source(
    app: Application[Any], until: int, receipt: tuple[str, int] | None
) -> tuple[dict[str, Any], Chunks]:
    """`app`'s log verified against `receipt`, and the digest of its rows up to `until`."""
    digest = RowDigest(until, side="source")
    report = verify(app, receipt, digest.notification).as_dict()
    return report, digest.result()


def _verify_both(walk: SourceWalk, dst: Application[Any], receipt: dict[str, Any]) -> None:
    """The source's walk must find its chain intact and holding `receipt`, and the target
    must hold exactly the rows that walk read up to the receipt (equal digests), no row
    more: then the copy's own walk would read the same rows and reach the same receipt
    (the module's docstring). Only when the digests differ is the copy walked, to say
    where it breaks."""
    try:
        ours: Chunks | None = stored_digest(dst.recorder)  # PostgreSQL: while the walk runs
    except Exception:  # noqa: BLE001 - rows the digest cannot read: the copy's walk says
        ours = None
    report, theirs = walk.result()
    _source_holds(report)
    if ours != theirs:
        _verified(dst, "the copy", receipt)  # where the copy breaks, when its chain does
        raise NotVerified(
            "the copy does not hold the source's records as they are: "
            f"{_first_difference(ours, theirs)} (its chain verifies: a change in bytes the "
            "chain does not cover)"
        )


def _first_difference(ours: Chunks | None, theirs: Chunks) -> str:
    """Where two digests part, in positions."""
    if ours is None:
        return "its rows cannot be read"
    for mine, source in zip(ours, theirs, strict=False):
        if mine != source:
            first = min(mine[0], source[0]) * DIGEST_CHUNK + 1
            if ":" in mine[2] or ":" in source[2]:  # a row that cannot be encoded
                return f"positions {first}..{first + DIGEST_CHUNK - 1}: {mine[2]}; {source[2]}"
            return f"positions {first}..{first + DIGEST_CHUNK - 1} differ"
    return f"it holds {sum(c[1] for c in ours)} records, the source {sum(c[1] for c in theirs)}"


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
    for rows in _rows(src, after, until, batch):
        append_rows(dst.recorder, rows)
        done.copied += len(rows)
        done.batches += 1
        if progress is not None:
            progress(rows[-1].position - after, total)
        if after_batch is not None:
            after_batch(rows[-1].position)


def _rows(src: Application[Any], after: int, until: int, page: int) -> Iterator[list[LogRow]]:
    """The source's records after `after` up to `until`, as stored, in pages."""
    if not is_postgres(src.recorder):
        yield from read_sqlite_rows(src.recorder, after, until, page)
        return
    for notifications in read_stored(src, after, until, page):
        yield [LogRow.of(n) for n in notifications]


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
    """`python -m entitlements.application.migrate URL UNTIL [HASH@POSITION]`: the source's
    walk as a process of its own; JSON on stdout: {"report": what `audit verify --json`
    prints, "digest": its rows' digest up to UNTIL}."""
    url, until = argv[0], int(argv[1])
    receipt = parse_receipt(argv[2]) if len(argv) > 2 else None
    with open_log(store_url(url), must_exist=True) as app:
        report, digest = walk_source(app, until, receipt)
    print(json.dumps({"report": report, "digest": digest}))


if __name__ == "__main__":
    main(sys.argv[1:])
