"""Redis keys of the alert engine; every script names all of its keys in KEYS."""

from __future__ import annotations

from rqscope.tasks.rq_internals.keys import OWN

LEASE_KEY = OWN + "alerts:leader"
STATE_KEY = OWN + "alerts:state"
VERSION_KEY = OWN + "alerts:version"  # counts the state's committed writes; a write names the one it follows
HISTORY_KEY = OWN + "alerts:history"
# what a process evaluated or could not send during an outage, for whoever leads once Redis is back
HANDOVER_KEY = OWN + "alerts:handover"
HANDOVER_DELIVERIES_KEY = OWN + "alerts:handover:deliveries"
OUTBOX_KEY = OWN + "alerts:outbox"  # zset: id -> ms it was queued at
ENTRIES_KEY = OWN + "alerts:outbox:entries"  # hash: id -> the delivery's JSON
META_KEY = OWN + "alerts:outbox:meta"  # hash: id -> "<queued ms>|<alert fingerprint>|<receiver>"
CLAIMS_KEY = OWN + "alerts:outbox:claims"  # hash: id -> the process sending it now
# one alert's notifications for one receiver (a lane) go in order: only the first waits in READY,
# each one names the next, and the lane's last is kept to append to
NEXT_KEY = OWN + "alerts:outbox:next"  # hash: id -> the next id of its lane
TAILS_KEY = OWN + "alerts:outbox:tails"  # hash: "<receiver>\n<fingerprint>" -> the lane's last id
READY_PREFIX = OWN + "alerts:outbox:ready:"  # zset per receiver: id -> ms from when it may be tried
FINISHED_KEY = OWN + "alerts:outbox:finished"  # zset: id -> ms it was sent or dropped; a replay is a no-op
DEAD_KEY = OWN + "alerts:dead"  # list, newest first: notifications that can never be delivered
COUNTS_KEY = OWN + "alerts:notifications"  # hash: "<receiver>\n<result>" -> count

RESULTS = ("sent", "retried", "dropped")


def count_field(receiver: str, result: str) -> str:
    return f"{receiver}\n{result}"


def ready_key(receiver: str) -> str:
    """Where one receiver's sendable entries wait, scored by when they may be tried."""
    # a receiver that is down keeps its entries in its own future, out of every other receiver's way
    return READY_PREFIX + receiver
