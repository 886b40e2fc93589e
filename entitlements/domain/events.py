"""The names of the events, each written once: the aggregates declare their `@event`s
with them, and the rules, the application and the projections compare with them.

A name is also the stored form: an event's topic is `topic(name)`
("entitlements:AccountRegistered"), and stores already written hold those, so a name
here never changes. (Plain strings, not an enum: a Fact's type is the text read back
from the log, and a check index's templates are marshalled, which takes only `str`.)
"""

from __future__ import annotations

from typing import Final
from uuid import NAMESPACE_URL, UUID, uuid5

# -- an account's events (entitlements.domain.account) ----------------------------------
ACCOUNT_REGISTERED: Final = "AccountRegistered"
REGISTRATION_SUSPENDED: Final = "RegistrationSuspended"
REGISTRATION_APPROVED: Final = "RegistrationApproved"
SUBSCRIPTION_OPENED: Final = "SubscriptionOpened"
SUBSCRIPTION_CLOSED: Final = "SubscriptionClosed"
MOVED_TO_PARTNER: Final = "MovedToPartner"
HOSTING_REVOKED: Final = "HostingRevoked"
HOSTING_RESTORED: Final = "HostingRestored"
ACCOUNT_SUSPENDED: Final = "AccountSuspended"
ACCOUNT_REINSTATED: Final = "AccountReinstated"
DATA_REGIONS_CHOSEN: Final = "DataRegionsChosen"

# -- a region's events (entitlements.domain.region) -------------------------------------
REGION_OPENED: Final = "RegionOpened"
REGION_RULE_APPLIED: Final = "RegionRuleApplied"
REGION_RULE_LIFTED: Final = "RegionRuleLifted"
PARTNER_AUTHORIZED: Final = "PartnerAuthorized"

# -- the command records (entitlements.domain.command_log) ------------------------------
COMMAND_APPLIED: Final = "CommandApplied"
COMMAND_REJECTED: Final = "CommandRejected"
FAN_OUT_COMPLETED: Final = "FanOutCompleted"

# -- kinds of event the rules and projections treat alike --------------------------------
#: Events that set an account's plan and channel (rule 3's "free").
PLAN_SETTERS = (ACCOUNT_REGISTERED, REGISTRATION_APPROVED, SUBSCRIPTION_OPENED, SUBSCRIPTION_CLOSED)
#: A region rule switched on or off.
RULE_SWITCHES = (REGION_RULE_APPLIED, REGION_RULE_LIFTED)
#: An account's hosting revoked or restored (by hand, or by a region rule: then with a cause).
HOSTING_EVENTS = (HOSTING_REVOKED, HOSTING_RESTORED)
REGION_EVENTS = (REGION_OPENED, REGION_RULE_APPLIED, REGION_RULE_LIFTED, PARTNER_AUTHORIZED)
#: Who asked for what, and how it ended: records, not an account's or a region's events.
COMMAND_RECORDS = frozenset({COMMAND_APPLIED, COMMAND_REJECTED, FAN_OUT_COMPLETED})

#: What a stored topic starts with (explicit, stable topics: modules can move, the log stays).
TOPIC_PREFIX: Final = "entitlements:"


def topic(name: str) -> str:
    """The stored topic of the event (or aggregate) `name`."""
    return TOPIC_PREFIX + name


def stable_id(kind: str, key: str) -> UUID:
    """The id of the aggregate that `key` names (`kind`: account, region, command or
    conflict): derived, never drawn, so every process finds the same aggregate by its key.
    Stores already written hold these ids, so the form never changes."""
    return uuid5(NAMESPACE_URL, f"entitlements:{kind}:{key}")


def name_of(stored_topic: str) -> str:
    """An event's name from its stored topic (`topic`'s inverse; of a class's own topic,
    "Account.Created", the last part)."""
    return stored_topic.removeprefix(TOPIC_PREFIX).rsplit(".", 1)[-1]


COMMAND_TOPICS = frozenset(topic(name) for name in COMMAND_RECORDS)
