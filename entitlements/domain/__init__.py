"""The domain, pure: what users ask (commands), the rules, the aggregates that decide
(account, region), the command log's records, and the bitemporal reading of a decision.

No I/O here and no import of the store, the projections or a door (import-linter holds
it: pyproject.toml). The flow starts in `commands` and goes through `account` / `region`,
which decide with `rules`, to the events they record. What is read or written in one
place only: times (`times`), event names and topics (`events`), and an event's forms as a
`Fact` (`event_facts`).
"""
