"""The rules of the domain: plans, limits, region rules, and what a state may do.

Pure functions over recorded facts, no I/O. The aggregates (account.py, region.py)
use them to validate commands; the projections use them to answer checks; both see
the same rules, evaluated at an effective time T with what was recorded by K.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any

from entitlements.domain import events as ev
from entitlements.domain.times import iso

PLANS = ("free", "pro", "business", "enterprise")
PAID_PLANS = ("pro", "business", "enterprise")
CHANNELS = ("online", "direct", "partner")
SALES_CHANNELS = ("direct", "partner")
REGION_RULES = (
    "registration_suspended",
    "free_hosting_suspended",
    "online_subscriptions_closed",
    "direct_sales_closed",
    "data_centre_isolated",
)
BOOLEAN_CAPABILITIES = (
    "join",
    "host",
    "subscribe_online",
    "purchase_direct",
    "purchase_via_partner",
)
LIMIT_CAPABILITIES = ("max_participants", "max_meeting_minutes")
CAPABILITIES = BOOLEAN_CAPABILITIES + LIMIT_CAPABILITIES
#: The capability family `route_via:R` (rule 10): one capability per region code R.
ROUTE_VIA = "route_via:"

LIMITS: Mapping[str, Mapping[str, int]] = {
    "free": {"max_participants": 100, "max_meeting_minutes": 40},
    "pro": {"max_participants": 100, "max_meeting_minutes": 1440},
    "business": {"max_participants": 300, "max_meeting_minutes": 1440},
    "enterprise": {"max_participants": 500, "max_meeting_minutes": 1440},
}

#: The region rule that closes a sales channel for new, renewed or upgraded products.
CHANNEL_CLOSED_BY = {"online": "online_subscriptions_closed", "direct": "direct_sales_closed"}

FREE_HOSTING_RULE = "free_hosting_suspended"
#: Rule 10: region R's data centres carry only the meetings of R's own accounts.
ISOLATION_RULE = "data_centre_isolated"


class Rejected(Exception):
    """A domain rule refused a command: nothing was recorded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownCapability(ValueError):
    """A capability name outside the spec's list."""

    def __init__(self, capability: str) -> None:
        shown = capability if len(capability) <= 40 else capability[:37] + "..."
        super().__init__(
            f"unknown capability {shown!r}: expected one of {', '.join(CAPABILITIES)}, "
            f"or {ROUTE_VIA}R with R a region code (two upper-case letters)"
        )
        self.capability = capability


def route_via_region(capability: str) -> str | None:
    """R of a capability `route_via:R` (R two upper-case ASCII letters), else None: the
    one place a capability name is read as a region."""
    if capability.startswith(ROUTE_VIA) and len(capability) == len(ROUTE_VIA) + 2:
        code = capability[len(ROUTE_VIA) :]
        if code.isascii() and code.isalpha() and code.isupper():
            return code
    return None


def check_capability(capability: str) -> str:
    """The capability if the rules answer it, else UnknownCapability (a ValueError)."""
    if capability in CAPABILITIES or route_via_region(capability) is not None:
        return capability
    raise UnknownCapability(capability)


def all_capabilities(regions: Iterable[str]) -> tuple[str, ...]:
    """What `capabilities` lists: the fixed ones, then `route_via:R` for each region R
    given (the regions the store knows), in code order."""
    return CAPABILITIES + tuple(ROUTE_VIA + r for r in sorted(set(regions)))


def capability_region(capability: str, account_region: str) -> str:
    """The region whose events a capability is answered from: R for `route_via:R` (its
    isolation), else the account's own region (rules 4-6)."""
    return route_via_region(capability) or account_region


#: Who asked for a command, kept with every event it records: {"actor": ..., "command_id": ...}.
Who = Mapping[str, str | None]
NOBODY: Who = {}
WHO_FIELDS = ("actor", "command_id")


def with_who(data: Mapping[str, Any], actor: str | None, command_id: str | None) -> dict[str, Any]:
    """An event's data with who asked, when known (events from before carry neither)."""
    who = {k: v for k, v in (("actor", actor), ("command_id", command_id)) if v is not None}
    return {**data, **who}


def check_jurisdiction(jurisdiction: str | None, region: str, account_id: str) -> None:
    """A government request never reaches outside its own jurisdiction: a command filed
    under a region code other than the account's region is rejected, whatever it asks."""
    if jurisdiction is not None and jurisdiction != "platform" and jurisdiction != region:
        raise Rejected(
            f"jurisdiction {jurisdiction} does not reach account {account_id} in {region}: "
            "a government request never reaches outside its own jurisdiction"
        )


@dataclass(frozen=True, slots=True)
class Fact:
    """One recorded event, as the rules see it: what, when effective, when known, why."""

    stream: str  # "account:<id>" or "region:<code>"
    type: str
    version: int
    effective_at: datetime
    recorded_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    cause: Mapping[str, Any] | None = None

    @property
    def order(self) -> tuple[datetime, int]:
        """Events apply in effective order; equal effective times keep recorded order."""
        return (self.effective_at, self.version)

    def ref(self) -> dict[str, Any]:
        """A short citation of this event, for causes."""
        return {"stream": self.stream, "type": self.type, "version": self.version}

    def __getitem__(self, key: str) -> Any:
        """Read like its JSON form (`because[0]["type"]`), which `check --json` prints."""
        return self.as_dict()[key]

    def keys(self) -> Iterable[str]:
        return self.as_dict().keys()

    def as_dict(self) -> dict[str, Any]:
        """The event as `because` and `history` show it."""
        return {
            "stream": self.stream,
            "type": self.type,
            "version": self.version,
            "effective_at": iso(self.effective_at),
            "recorded_at": iso(self.recorded_at),
            "cause": dict(self.cause) if self.cause else None,
            **{k: v for k, v in self.data.items() if v is not None},
        }


def in_force(facts: Iterable[Fact], at: datetime | None, known: datetime | None) -> Iterable[Fact]:
    """Facts (sorted by `order`) effective by `at` and recorded by `known` (None: no limit)."""
    for f in facts:
        if at is not None and f.effective_at > at:
            break
        if known is not None and f.recorded_at > known:
            continue
        yield f


@dataclass(frozen=True, slots=True, eq=False)
class AccountState:
    """What an account's own events say at (T, K). A field holding a Fact is 'in force'.
    Compared and hashed by identity (fast memo keys); `same_as` compares values."""

    registration: Fact | None = None
    not_yet: Fact | None = None  # a registration that exists but is not in force / not known
    region: str = ""
    plan: str = "free"
    channel: str = "online"
    partner: str | None = None
    plan_set_by: Fact | None = None
    registration_suspended: Fact | None = None
    manual_revocation: Fact | None = None
    rule_revocation: Fact | None = None
    suspension: Fact | None = None
    last_restore: Fact | None = None
    data_regions: Fact | None = None  # the last DataRegionsChosen in force (rule 10)

    def same_as(self, other: object) -> bool:
        return type(other) is type(self) and _fields_of(self) == _fields_of(other)


def _fields_of(state: AccountState | RegionState) -> tuple[Any, ...]:
    """All fields at once (C-level), for value comparison of states."""
    return _GETTERS[type(state)](state)


def fold_account(
    facts: Iterable[Fact], at: datetime | None = None, known: datetime | None = None
) -> AccountState:
    """The account's state at effective time `at` as known at `known`."""
    s: dict[str, Any] = {}
    all_facts = list(facts)
    for f in in_force(all_facts, at, known):
        t = f.type
        if t == ev.ACCOUNT_REGISTERED:
            s.update(registration=f, region=f.data["region"])
        if t in ev.PLAN_SETTERS:
            s.update(
                plan=f.data.get("plan", "free"),
                channel=f.data.get("channel", "online"),
                partner=f.data.get("partner"),
                plan_set_by=f,
            )
        _fold_standing(s, f)
    if "registration" not in s:
        s["not_yet"] = next((f for f in all_facts if f.type == ev.ACCOUNT_REGISTERED), None)
    return AccountState(**s)


def _fold_standing(s: dict[str, Any], f: Fact) -> None:
    """One fact's part of `fold_account` beyond registration and plan: approval pending,
    the channel moved to a partner, hosting revoked or restored, the account suspended."""
    t = f.type
    if t == ev.REGISTRATION_SUSPENDED:
        s["registration_suspended"] = f
    elif t == ev.REGISTRATION_APPROVED:
        s["registration_suspended"] = None
    elif t == ev.MOVED_TO_PARTNER:
        s.update(channel="partner", partner=f.data["partner"])
    elif t == ev.HOSTING_REVOKED:
        s["rule_revocation" if f.cause else "manual_revocation"] = f
    elif t == ev.HOSTING_RESTORED:
        s["rule_revocation" if f.cause else "manual_revocation"] = None
        s["last_restore"] = f
    elif t == ev.ACCOUNT_SUSPENDED:
        s["suspension"] = f
    elif t == ev.ACCOUNT_REINSTATED:
        s["suspension"] = None
    elif t == ev.DATA_REGIONS_CHOSEN:
        s["data_regions"] = f


@dataclass(frozen=True, slots=True, eq=False)
class RegionState:
    """What a region's events say at (T, K): rules on, the last lift of each, partners.
    Compared and hashed by identity (fast memo keys); `same_as` compares values."""

    code: str
    rules_on: Mapping[str, Fact] = field(default_factory=dict)
    rules_lifted: Mapping[str, Fact] = field(default_factory=dict)
    partners: Mapping[str, Fact] = field(default_factory=dict)

    def same_as(self, other: object) -> bool:
        return type(other) is type(self) and _fields_of(self) == _fields_of(other)


def fold_region(
    code: str, facts: Iterable[Fact], at: datetime | None = None, known: datetime | None = None
) -> RegionState:
    """The region's rules and partners at effective time `at` as known at `known`."""
    on: dict[str, Fact] = {}
    lifted: dict[str, Fact] = {}
    partners: dict[str, Fact] = {}
    for f in in_force(facts, at, known):
        if f.type == ev.REGION_RULE_APPLIED:
            on[f.data["rule"]] = f
            lifted.pop(f.data["rule"], None)
        elif f.type == ev.REGION_RULE_LIFTED:
            on.pop(f.data["rule"], None)
            lifted[f.data["rule"]] = f
        elif f.type == ev.PARTNER_AUTHORIZED:
            partners[f.data["partner"]] = f
    return RegionState(code, on, lifted, partners)


_GETTERS = {cls: attrgetter(*(f.name for f in fields(cls))) for cls in (AccountState, RegionState)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """A capability's answer before it is dressed as a Decision."""

    allowed: bool
    value: int | None
    reason: str
    because: tuple[Fact, ...]


def _blocked_by_registration(acc: AccountState) -> Verdict | None:
    if acc.registration_suspended is not None:
        f = acc.registration_suspended
        rule = (f.cause or {}).get("rule", "registration_suspended")
        return Verdict(
            False,
            None,
            f"registration suspended by {rule} in {acc.region}, pending sales approval",
            (f,),
        )
    return None


def decide_host(acc: AccountState) -> Verdict:
    """Rule 3: host unless registration suspended or a hosting revocation is in force."""
    blocked = _blocked_by_registration(acc)
    if blocked:
        return blocked
    reasons, because = [], []
    if acc.manual_revocation is not None:
        why = acc.manual_revocation.data.get("reason")
        reasons.append(f"hosting revoked: {why}" if why else "hosting revoked")
        because.append(acc.manual_revocation)
    if acc.rule_revocation is not None:
        rule = (acc.rule_revocation.cause or {}).get("rule", FREE_HOSTING_RULE)
        reasons.append(f"hosting revoked by {rule} in {acc.region} while on the free plan")
        because.append(acc.rule_revocation)
    if because:
        return Verdict(False, None, "; ".join(reasons), tuple(because))
    cited = tuple(f for f in (acc.plan_set_by, acc.last_restore) if f is not None)
    return Verdict(True, None, f"may host on the {acc.plan} plan", cited)


def decide(capability: str, acc: AccountState, region: RegionState) -> Verdict:
    """Rules 1-10 for one capability of one account, both states taken at the same (T, K).
    `region` is the state of the region the capability is answered from
    (`capability_region`): the account's own, or R's for `route_via:R`."""
    via = None
    if capability not in CAPABILITIES:
        via = route_via_region(capability)
        if via is None:
            raise UnknownCapability(capability)
    limit = capability in LIMIT_CAPABILITIES
    zero = 0 if limit else None
    if acc.registration is None:  # rule 7
        return _not_registered(acc.not_yet, zero)
    if acc.suspension is not None:  # rule 1
        s = acc.suspension
        return Verdict(
            False,
            zero,
            f"account suspended (jurisdiction {s.data.get('jurisdiction')}): {s.data.get('reason')}",
            (s,),
        )
    if via is not None:  # rule 10, after rules 1 and 7
        return decide_route_via(via, acc, region)
    if capability == "join":  # rule 2
        return Verdict(True, None, "may join meetings", (acc.registration,))
    if capability == "host":
        return decide_host(acc)
    if limit:  # rule 8
        host = decide_host(acc)
        if not host.allowed:
            return Verdict(False, 0, f"no hosting, so no limit: {host.reason}", host.because)
        value = LIMITS[acc.plan][capability]
        return Verdict(True, value, f"{acc.plan} plan limit", host.because)
    blocked = _blocked_by_registration(acc)  # rules 4-6 are also false while pending approval
    if blocked:
        return blocked
    if capability == "purchase_via_partner":  # rule 6
        return _decide_partner(acc, region)
    return _decide_channel(capability, acc, region)


def decide_route_via(via: str, acc: AccountState, isolation: RegionState) -> Verdict:
    """Rule 10 for a registered, unsuspended account: may its meetings be routed through
    data centres in `via`? Its own region always; no other region while that one is
    isolated (`isolation`: `via`'s state); else, on a paid plan with a choice in force,
    exactly the chosen regions; else (free, or no choice) any region."""
    if via == acc.region:
        own = (acc.registration,) if acc.registration is not None else ()
        return Verdict(True, None, f"{via} is the account's own region", own)
    isolated = isolation.rules_on.get(ISOLATION_RULE)
    if isolated is not None:
        return Verdict(
            False,
            None,
            f"{ISOLATION_RULE} in {via}: its data centres carry only {via}'s own accounts",
            (isolated,),
        )
    choice, paid = acc.data_regions, acc.plan in PAID_PLANS
    plan = (acc.plan_set_by,) if acc.plan_set_by is not None else ()
    if choice is not None and paid:
        chosen = ", ".join(choice.data["regions"])
        if via in choice.data["regions"]:
            return Verdict(
                True, None, f"{via} is among the chosen data regions: {chosen}", (choice, *plan)
            )
        return Verdict(
            False, None, f"{via} is not among the chosen data regions: {chosen}", (choice, *plan)
        )
    lifted = isolation.rules_lifted.get(ISOLATION_RULE)
    cited = (lifted,) if lifted is not None else ()
    if choice is not None:
        return Verdict(
            True,
            None,
            f"{via} is not isolated; the chosen data regions apply to paid plans only "
            f"(now on the {acc.plan} plan)",
            (choice, *plan, *cited),
        )
    return Verdict(True, None, f"{via} is not isolated and no data regions are chosen", cited)


def _not_registered(pending: Fact | None, zero: int | None) -> Verdict:
    """Rule 7: no registration in force at (T, K); when one is on file, when it takes
    effect and when it was recorded."""
    reason = "not registered at that time"
    if pending is not None:
        reason = (
            f"registration takes effect at {iso(pending.effective_at)}, "
            f"recorded at {iso(pending.recorded_at)}: not in force or not yet known"
        )
    return Verdict(False, zero, reason, (pending,) if pending else ())


def _decide_partner(acc: AccountState, region: RegionState) -> Verdict:
    """Rule 6: purchase via a partner while the region has an authorized one."""
    if region.partners:
        names = ", ".join(sorted(region.partners))
        return Verdict(
            True,
            None,
            f"authorized partners in {region.code}: {names}",
            tuple(region.partners.values()),
        )
    return Verdict(False, None, f"no authorized partner in {acc.region}", ())


def _decide_channel(capability: str, acc: AccountState, region: RegionState) -> Verdict:
    """Rules 4 and 5: subscribe online / buy direct unless the region closed the channel."""
    rule = CHANNEL_CLOSED_BY["online" if capability == "subscribe_online" else "direct"]
    if rule in region.rules_on:  # rules 4 and 5
        return Verdict(False, None, f"{rule} in {acc.region}", (region.rules_on[rule],))
    lifted = region.rules_lifted.get(rule)
    return Verdict(True, None, f"{rule} not in force in {acc.region}", (lifted,) if lifted else ())


def rule_cause(rule_event: Fact, trigger: Fact | None = None) -> dict[str, Any]:
    """How a rule-caused event names its cause: the rule, the region event that switched
    it, and (when different) the event that made the change necessary."""
    cause: dict[str, Any] = {
        "rule": rule_event.data["rule"],
        "region": rule_event.stream.split(":", 1)[1],
        "rule_event": rule_event.ref(),
    }
    if trigger is not None and trigger.ref() != rule_event.ref():
        cause["trigger"] = trigger.ref()
    return cause


def free_hosting_switches(region_facts: Iterable[Fact]) -> list[Fact]:
    """The region's switches of the free-hosting rule, in effective order."""
    return [
        f
        for f in region_facts
        if f.type in ev.RULE_SWITCHES and f.data["rule"] == FREE_HOSTING_RULE
    ]


def hosting_corrections(
    account_facts: list[Fact],
    region_facts: Iterable[Fact],
    recorded_at: datetime,
    switches: FreeHostingSwitches | None = None,
) -> list[Fact]:
    """The HostingRevoked / HostingRestored events that make an account's rule-caused
    revocations agree with rule 3 (revoked exactly while free and `free_hosting_suspended`
    is on) at every effective time. Empty when they already agree, so running it twice
    records nothing. Versions continue the account's own. The one implementation: the
    account aggregate validates with it, the fan-out records with it (passing the region's
    `switches`, prepared once for all its accounts)."""
    if switches is None:
        switches = FreeHostingSwitches(free_hosting_switches(region_facts))
    if len(account_facts) == 1 and account_facts[0].type == ev.ACCOUNT_REGISTERED:
        return switches.registration_only(account_facts[0], recorded_at)
    return switches.folded(account_facts, recorded_at)


def _correction(
    stream: str,
    version: int,
    t: datetime,
    recorded_at: datetime,
    words: tuple[str, str],
    cause: dict[str, Any],
) -> Fact:
    """A rule-caused HostingRevoked or HostingRestored: `words`, its type and reason
    (`_correction_words`)."""
    kind, reason = words
    return Fact(stream, kind, version, t, recorded_at, {"reason": reason}, cause)


def _correction_at(
    t: datetime,
    work: list[Fact],
    switches: list[Fact],
    region: str,
    version: int,
    recorded_at: datetime,
) -> Fact | None:
    """The correction (as `version`) an account's history needs at `t`, or None when its
    rule-caused revocation there already agrees with rule 3 (revoked exactly while
    registered, free and the rule on)."""
    rule_event = next((f for f in reversed(switches) if f.effective_at <= t), None)
    state = fold_account(work, at=t)
    rule_on = rule_event is not None and rule_event.type == ev.REGION_RULE_APPLIED
    truth = state.registration is not None and state.plan == "free" and rule_on
    if truth == (state.rule_revocation is not None):
        return None
    assert rule_event is not None  # a rule-caused revocation needs a rule switch
    cause = rule_cause(rule_event, _trigger_at(t, work, switches))
    words = _correction_words(truth, rule_on, region)
    return _correction(work[0].stream, version, t, recorded_at, words, cause)


def _trigger_at(t: datetime, work: Iterable[Fact], switches: Iterable[Fact]) -> Fact | None:
    """What made a correction at `t` necessary: the latest recorded of the account's and
    the rule's events taking effect at `t` (hosting corrections themselves aside)."""
    at_t = [
        f for f in (*work, *switches) if f.effective_at == t and not f.type.startswith("Hosting")
    ]
    return max(at_t, key=lambda f: f.recorded_at, default=None)


def _correction_words(revoke: bool, rule_on: bool, region: str) -> tuple[str, str]:
    """A hosting correction's event type and reason: revoked while free under the rule,
    else restored because the account left the free plan or the rule was lifted."""
    if revoke:
        return ev.HOSTING_REVOKED, f"{FREE_HOSTING_RULE} in {region}: free accounts may not host"
    reason = "the account left the free plan" if rule_on else f"{FREE_HOSTING_RULE} lifted"
    return ev.HOSTING_RESTORED, reason


class FreeHostingSwitches:
    """A region's free-hosting switches, prepared once (a fan-out prepares them once for all
    the region's accounts): for each distinct effective time, the rule event in force from
    then on, whether the rule is on, and the switches at that very time (the candidates for
    a correction's trigger)."""

    def __init__(self, switches: Sequence[Fact]) -> None:
        self.switches = list(switches)
        self.times = sorted({f.effective_at for f in switches})
        self.steps: list[tuple[Fact, bool, list[Fact]]] = []
        self.causes: list[dict[str, Any]] = []  # a correction at a switch time: one cause
        for t in self.times:
            rule_event = next(f for f in reversed(switches) if f.effective_at <= t)
            at_t = [f for f in switches if f.effective_at == t]
            self.steps.append((rule_event, rule_event.type == ev.REGION_RULE_APPLIED, at_t))
            self.causes.append(rule_cause(rule_event, max(at_t, key=lambda f: f.recorded_at)))

    def folded(self, account_facts: list[Fact], recorded_at: datetime) -> list[Fact]:
        """The corrections of any account: at each effective time where its facts or the
        rule change, its state folded and compared with rule 3."""
        switches = self.switches
        if not switches and not any(
            f.type.startswith("Hosting") and f.cause for f in account_facts
        ):
            return []
        work = list(account_facts)
        version = max(f.version for f in work)
        region = fold_account(work).region
        corrections: list[Fact] = []
        for t in sorted({f.effective_at for f in work} | {f.effective_at for f in switches}):
            fact = _correction_at(t, work, switches, region, version + 1, recorded_at)
            if fact is None:
                continue
            version += 1
            bisect.insort(work, fact, key=lambda f: f.order)
            corrections.append(fact)
        return corrections

    def registration_only(self, registered: Fact, recorded_at: datetime) -> list[Fact]:
        """`folded` for an account whose only fact is its registration, without folding
        (about 2 us instead of about 30): such an account is revoked exactly while it is
        registered, free and the rule is on, so its corrections follow the switches from its
        registration on (same facts, versions and causes;
        tests/unit/test_hosting_corrections.py compares the two)."""
        if not self.times or registered.data.get("plan", "free") != "free":
            return []
        stream, r = registered.stream, registered.effective_at
        region = registered.data["region"]
        corrections: list[Fact] = []
        revoked, version = False, registered.version
        i = bisect.bisect_right(self.times, r)  # the switches effective by the registration
        if i:
            rule_event, on, at_switch = self.steps[i - 1]
            if on:  # revoked from the registration on
                at_t = [registered, *at_switch] if self.times[i - 1] == r else [registered]
                cause = rule_cause(rule_event, max(at_t, key=lambda f: f.recorded_at))
                version += 1
                words = _correction_words(True, True, region)
                corrections.append(_correction(stream, version, r, recorded_at, words, cause))
                revoked = True
        for j in range(i, len(self.times)):
            on = self.steps[j][1]
            if on == revoked:
                continue
            version += 1
            words = _correction_words(on, on, region)  # the plan stays free: only the rule ends
            at = self.times[j]
            corrections.append(
                _correction(stream, version, at, recorded_at, words, dict(self.causes[j]))
            )
            revoked = on
        return corrections
