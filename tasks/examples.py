"""The task-service guide's example tasks, with its signatures, used by the demo and the tests.

Each also takes the keywords `duration` (seconds of simulated work) and `fail_rate` (0..1, default 0),
so that traffic can be shaped without code changes; a caller who passes neither gets a run that succeeds.
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
def generate_report(report_id: str, *, duration: float = 0.2, fail_rate: float = 0.0) -> dict:
    """Generate a report (a long-running task)."""
    _work(duration, fail_rate, ReportError(f"report {report_id}: source query returned no rows"))
    return {"report_id": report_id, "status": "completed", "url": f"/reports/{report_id}.pdf"}


@task(queue="high", queues=("default",), timeout=60, retry=Retry(max=2, interval=1))
def send_email(to: str, subject: str, body: str, *, duration: float = 0.05, fail_rate: float = 0.0) -> dict:
    """Hand a message to the mail relay."""
    _work(duration, fail_rate, MailDeliveryError(f"relay refused message to {to}"))
    return {"to": to, "subject": subject, "sent_at": time.time()}


@task(queue="default", queues=("low",), timeout=120)
def process_upload(file_path: str, *, duration: float = 0.1, fail_rate: float = 0.0) -> dict:
    """Read, validate, transform and store an uploaded file."""
    _work(duration, fail_rate, CorruptUploadError(f"upload {file_path}: bad header at byte 0"))
    return {"file_path": file_path, "processed": True, "records": 1000}
