"""Local evaluation for the meeting service: `Client` holds its own copy of the check index,
follows the server's push stream, and keeps answering when the server is away. It reads no
store and imports nothing of the write side (`pip install entitlements[client]`)."""

from entitlements.client.client import Client, ClientError, Stale, Status
from entitlements.client.local_copy import Refused

__all__ = ["Client", "ClientError", "Refused", "Stale", "Status"]
