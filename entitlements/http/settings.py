"""What `entitlements serve` hands its worker processes through the environment (besides
the store's URL, store.ENV_VAR), and the defaults. Imports nothing: the server's parent
process reads it before any worker starts, and must not import prometheus_client before
setting its folder (the library picks its multiprocess mode when first imported, and the
workers are forked from the parent)."""

MAX_STALENESS_VAR = "ENTITLEMENTS_MAX_STALENESS"
HEARTBEAT_VAR = "ENTITLEMENTS_HEARTBEAT"  # seconds between comment lines on an idle stream
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for it

MAX_STALENESS = 10.0  # seconds `/healthz` stays 200 while the store cannot be read
HEADER_TIMEOUT = 10.0  # seconds to send a request's headers, or to keep a connection idle
POLL = 0.005  # seconds between two reads of an SQLite log (PostgreSQL pushes: LISTEN/NOTIFY)
