"""Redis keys of the alert engine; every script names all of its keys in KEYS."""

from __future__ import annotations

LEASE_KEY = "rqscope:alerts:leader"
STATE_KEY = "rqscope:alerts:state"
HISTORY_KEY = "rqscope:alerts:history"
# what a process evaluated or could not send during an outage, for whoever leads once Redis is back
HANDOVER_KEY = "rqscope:alerts:handover"
HANDOVER_DELIVERIES_KEY = "rqscope:alerts:handover:deliveries"
OUTBOX_KEY = "rqscope:alerts:outbox"  # zset: id -> sequence, the order notifications were queued in
ENTRIES_KEY = "rqscope:alerts:outbox:entries"  # hash: id -> the delivery's JSON
META_KEY = "rqscope:alerts:outbox:meta"  # hash: id -> "<queued ms>|<alert fingerprint>|<receiver>"
DUE_KEY = "rqscope:alerts:outbox:due"  # hash: id -> ms from when it may be tried (backoff, or a claim's end)
CLAIMS_KEY = "rqscope:alerts:outbox:claims"  # hash: id -> the process sending it now
SEQUENCE_KEY = "rqscope:alerts:outbox:sequence"
FINISHED_KEY = "rqscope:alerts:outbox:finished"  # zset: id -> ms it was sent or dropped; a replay is a no-op
DEAD_KEY = "rqscope:alerts:dead"  # list, newest first: notifications that can never be delivered
COUNTS_KEY = "rqscope:alerts:notifications"  # hash: "<receiver>\n<result>" -> count

RESULTS = ("sent", "retried", "dropped")


def count_field(receiver: str, result: str) -> str:
    return f"{receiver}\n{result}"
