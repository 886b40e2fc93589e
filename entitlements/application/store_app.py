"""The event store as eventsourcing's `Application`: the library's recorders, with a mapper
that names the position of a stored event it cannot read, and the events it stores."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import ApplicationRecorder, Mapper

from entitlements.adapters.damaged import CheckedMapper

# The stored events register their topics ("entitlements:AccountRegistered", ...) when their
# classes are defined: an application opened in a process of its own (a rebuild's second
# process resolves this class by its topic) must define them to read the log.
from entitlements.domain import account, command_log, region  # noqa: F401


class EntitlementsApplication(Application[UUID]):
    """The event store of account and region aggregates."""

    name = "Entitlements"

    def construct_recorder(self) -> ApplicationRecorder:
        """The library's recorder; the mapper (a CheckedMapper: a stored event that cannot
        be read is a DamagedRecord naming its position) is given it to find positions."""
        recorder = super().construct_recorder()
        self.mapper.recorder = recorder  # type: ignore[attr-defined]
        return recorder

    def construct_mapper(self) -> Mapper[UUID]:
        return self.factory.mapper(self.construct_transcoder(), CheckedMapper)
