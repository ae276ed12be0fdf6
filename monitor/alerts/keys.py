"""Redis keys of the alert engine; every script names all of its keys in KEYS."""

from __future__ import annotations

LEASE_KEY = "rqscope:alerts:leader"
STATE_KEY = "rqscope:alerts:state"
VERSION_KEY = "rqscope:alerts:version"  # counts the state's committed writes; a write names the one it follows
HISTORY_KEY = "rqscope:alerts:history"
# what a process evaluated or could not send during an outage, for whoever leads once Redis is back
HANDOVER_KEY = "rqscope:alerts:handover"
HANDOVER_DELIVERIES_KEY = "rqscope:alerts:handover:deliveries"
OUTBOX_KEY = "rqscope:alerts:outbox"  # zset: id -> ms it was queued at
ENTRIES_KEY = "rqscope:alerts:outbox:entries"  # hash: id -> the delivery's JSON
META_KEY = "rqscope:alerts:outbox:meta"  # hash: id -> "<queued ms>|<alert fingerprint>|<receiver>"
CLAIMS_KEY = "rqscope:alerts:outbox:claims"  # hash: id -> the process sending it now
# one alert's notifications for one receiver (a lane) go in order: only the first waits in READY,
# each one names the next, and the lane's last is kept to append to
NEXT_KEY = "rqscope:alerts:outbox:next"  # hash: id -> the next id of its lane
TAILS_KEY = "rqscope:alerts:outbox:tails"  # hash: "<receiver>\n<fingerprint>" -> the lane's last id
READY_PREFIX = "rqscope:alerts:outbox:ready:"  # zset per receiver: id -> ms from when it may be tried
FINISHED_KEY = "rqscope:alerts:outbox:finished"  # zset: id -> ms it was sent or dropped; a replay is a no-op
DEAD_KEY = "rqscope:alerts:dead"  # list, newest first: notifications that can never be delivered
COUNTS_KEY = "rqscope:alerts:notifications"  # hash: "<receiver>\n<result>" -> count

RESULTS = ("sent", "retried", "dropped")


def count_field(receiver: str, result: str) -> str:
    return f"{receiver}\n{result}"


def ready_key(receiver: str) -> str:
    """Where one receiver's sendable entries wait, scored by when they may be tried."""
    # a receiver that is down keeps its entries in its own future, out of every other receiver's way
    return READY_PREFIX + receiver
