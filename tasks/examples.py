"""Example tasks with simulated work, used by the demo and the tests.

Each takes `duration` (seconds of simulated work) and `fail_rate` (0..1) so that traffic
can be shaped without code changes.
"""

from __future__ import annotations

import random
import time

from rq import Retry
from rqscope.tasks.registry import task


class ReportError(RuntimeError):
    """The report's data source returned something unusable."""


class MailDeliveryError(ConnectionError):
    """The mail relay refused or dropped the message."""


class CorruptUploadError(ValueError):
    """The uploaded file could not be parsed."""


def _work(duration: float, fail_rate: float, error: Exception) -> None:
    time.sleep(max(0.0, min(float(duration), 600.0)))
    if random.random() < fail_rate:
        raise error


@task(queue="low", queues=("default",), timeout=300)
def generate_report(report_id: int, pages: int = 10, duration: float = 0.2, fail_rate: float = 0.05) -> dict:
    """Render a report of `pages` pages."""
    _work(duration, fail_rate, ReportError(f"report {report_id}: source query returned no rows"))
    return {"report_id": report_id, "pages": pages, "bytes": pages * 2048}


@task(queue="high", queues=("default",), timeout=60, retry=Retry(max=2, interval=1))
def send_email(to: str, subject: str = "", duration: float = 0.05, fail_rate: float = 0.1) -> str:
    """Hand a message to the mail relay."""
    _work(duration, fail_rate, MailDeliveryError(f"relay refused message to {to}"))
    return f"sent to {to}"


@task(queue="default", queues=("low",), timeout=120)
def process_upload(upload_id: str, size_bytes: int = 1024, duration: float = 0.1, fail_rate: float = 0.1) -> dict:
    """Parse and store an uploaded file."""
    _work(duration, fail_rate, CorruptUploadError(f"upload {upload_id}: bad header at byte 0"))
    return {"upload_id": upload_id, "size_bytes": size_bytes, "rows": max(1, size_bytes // 64)}
