"""The writer's command book (command_book.py) as a process holds it: built when a command
first needs it, from its file beside the index snapshot when that file is of this very log
and on record in the store, then the command records after it; saved again at close."""

from __future__ import annotations

import os
from pathlib import Path

from entitlements.application.command_book import CommandBook
from entitlements.application.store_app import EntitlementsApplication
from entitlements.domain.events import COMMAND_TOPICS
from projections import snapshot_digests
from projections.log_reader import read_log
from projections.projector import SNAPSHOT_EVERY, Projector


class CommandBooks:
    """The command book of one process, and its file."""

    def __init__(self, app: EntitlementsApplication, projector: Projector) -> None:
        self.app = app
        self.projector = projector
        self.built: CommandBook | None = None  # built by the first command (see `book`)
        self.saved = 0  # the position of the book's file
        self.refused = False  # its file was refused: replace it at `save`

    @property
    def book(self) -> CommandBook:
        """The writer's memory of the command log, built when a command first needs it (a
        process that only checks never holds one): from its file, if that is of this very
        log, then the command records after it, then kept level by the projector."""
        if self.built is None:
            with self.projector.lock:
                loaded = self.load()
                book = loaded or CommandBook()
                self.saved = book.position  # what its file holds already
                stop = self.projector.log.position
                if book.position < stop:
                    for page in read_log(self.app, book.position, stop, topics=COMMAND_TOPICS):
                        book.take(page, page[-1][0])
                book.position = stop
                self.projector.on_records.append(book.take)
                self.built = book
        return self.built

    def adopt(self, book: CommandBook) -> None:
        """Start from `book` (of this very log, to its position) instead of building one."""
        with self.projector.lock:
            self.saved = book.position
            self.projector.on_records.append(book.take)
            self.built = book

    def path(self) -> Path | None:
        """The book's file: beside the index snapshot (none when the process keeps none)."""
        index = self.projector.snapshot_file
        return index.with_suffix(".commands") if index is not None else None

    def load(self) -> CommandBook | None:
        """The book in its file, if the file is of this very log and on record in the store
        (see snapshot_digests.py); anything else is ignored (said on stderr, counted)."""
        path = self.path()
        if path is None or not path.exists():
            return None
        loaded = CommandBook.load(path)
        if loaded is None:
            snapshot_digests.refuse("commands", path, "not a command book of this schema")
            self.refused = True
            return None
        book, head, digest = loaded
        position = self.projector.log.position
        why = (
            f"past the log's position {position}"
            if book.position > position
            else self.projector.unbound("commands", book.position, digest, head)
        )
        if why is not None:
            snapshot_digests.refuse("commands", path, why)
            self.refused = True
            return None
        return book

    def save(self) -> None:
        """Write the book to its file (bound to the store) when it moved on by a snapshot's
        worth since its file, or its file was refused."""
        path, book = self.path(), self.built
        if path is None or book is None:
            return
        if not self.refused and book.position - self.saved < SNAPSHOT_EVERY:
            return
        with self.projector.lock:
            head = self.projector.fingerprint(book.position)
            bind = self.projector.bind("commands", head)
            book.save(path, head, f".tmp{os.getpid()}", bind)
            self.refused = False
