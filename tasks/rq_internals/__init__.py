"""Every place rqscope relies on RQ beyond its public API, in one package.

`verify_rq()` runs when a worker starts: a changed signature of any hooked method stops it with an
error naming the method and the rq version (tests/test_rq_internals.py checks each one). Each hook's
behaviour has a test on a real redis-server and RQ's forking Worker, run in CI against the lowest
and the highest supported rq (2.11 and 3.0; also verified with 2.12).

Hooks (what they rely on; why no public API does it; the test that breaks when RQ changes):
- `keys.Keys`: RQ's key layout under `RQ_KEY_PREFIX` (`rq` before 3.0). The sidecar reads every key
  in one Lua call, with no RQ objects. test_rq_internals::test_keys_are_rqs_own
- `worker.HookedWorker._shutdown`: RQ's warm-shutdown handler calls `_shutdown()` and the work loop
  reads `_stop_requested`. RQ's handler writes to Redis and raises from the signal handler.
  test_worker::test_a_stop_signal_landing_while_the_pool_lock_is_held_does_not_deadlock
- `dequeue_job_and_maintain_ttl` and `queue.StoppableQueue.dequeue_any`: the worker's dequeue goes
  through this classmethod with RQ's signature, and RQ's intermediate list (`<queue key>:intermediate`)
  is where RQ's maintenance looks for stuck jobs. RQ pops from several queues with BLPOP, which loses
  the job when the reply is lost; here a claim script moves it, and a stop request ends the wait.
  test_replay::test_a_dequeue_whose_reply_is_lost_keeps_the_job,
  test_chaos::test_warm_shutdown_at_random_moments
- `queue.CLAIM_SCRIPT` and `queue.PAUSED_KEY`: the claim reads RQ's suspension key (`rq suspend`) and
  rqscope's paused set in the same script, so a paused queue is skipped without a pop and a suspended
  worker claims nothing even mid-wait; RQ has no per-queue pause and checks suspension only between jobs.
  test_controls::test_a_paused_queue_keeps_its_job_while_the_worker_runs_its_other_queues,
  test_controls::test_suspended_workers_take_no_job_until_resumed
- `reorder_queues`: RQ calls it right after a job is dequeued; RQ has no "job dequeued" event.
  test_worker::test_a_stop_requested_between_jobs_takes_nothing_more_off_the_queues
- `prepare_execution`: a copy of RQ's (`Execution.create(worker_name=)`, state BUSY) that also takes
  the job off its claim (the intermediate list) in the same transaction; RQ leaves that to the horse.
  A retry after a lost reply undoes the earlier attempt with `Execution.delete(job, pipeline)`.
  test_replay::test_a_dequeue_whose_reply_is_lost_keeps_the_job
  test_chaos::test_horses_and_a_whole_worker_killed
- `fork_work_horse`, `main_work_horse`: the parent forks, the horse runs `main_work_horse`.
  test_worker::test_mixed_outcomes_are_counted_exactly_on_the_forking_worker
- `increment_successful_job_count(pipeline)`, `increment_failed_job_count(pipeline)`: called inside
  the pipeline that records a job's outcome; no outcome hook shares RQ's transaction.
  test_worker::test_instrumented_worker_writes_each_run_exactly_once
- `handle_job_failure(..., execution)` with `cleanup_execution(..., execution)`: the clean-up runs
  in the same pipeline as the failed status. test_worker::test_externally_killed_horse_is_counted_and_failed
- `monitor_work_horse(job, queue[, execution])`: the parent waits for the horse here; an outage while
  it waits would otherwise quit the worker. test_chaos::test_redis_restarted_mid_load
- `heartbeat`, `set_state`, `check_for_suspension`, `run_maintenance_tasks`: the parent's Redis steps;
  RQ quits on the first Redis error. test_worker::test_a_worker_waiting_out_a_redis_outage_still_stops_on_sigterm
- `maintain_heartbeats(job[, execution])`, `set_current_job_working_time` (rq 2 only): skipped
  during an outage. test_chaos::test_redis_restarted_mid_load
- `teardown`: RQ's `register_death` may meet a Redis outage; skipped then (the key expires).
  test_worker::test_a_worker_waiting_out_a_redis_outage_still_stops_on_sigterm
- `handle_job_failure` in the parent also runs for RQ's maintenance of a stuck intermediate list;
  only the horse's own, still-started job is failed with a run (`_parent_fails`).
  test_worker::test_a_job_stuck_in_a_dequeuing_list_is_failed_with_no_run_counted,
  test_worker::test_a_horse_that_recorded_a_retry_before_dying_is_not_failed_again
- `jobs.fail_job`: `FailedJobRegistry.add` and `Result.create_failure` in a caller's pipeline, as
  RQ's private `Job._handle_failure` does. test_rq_internals::test_fail_job_records_what_rq_records
- `jobs.schedule_job`: `Queue.schedule_job` on a queue whose connection is the caller's transaction,
  because rq before 3.0 sends the scheduled registry's ZADD outside the pipeline it is given.
  test_enqueue_batch::test_an_enqueue_and_its_audit_entry_are_one_round_trip,
  test_rq_internals::test_schedule_job_writes_nothing_outside_the_transaction
- `jobs.record_retried_attempt`, from `handle_job_failure` through `increment_failed_job_count(pipeline)`:
  RQ keeps no result for a failed run it retries; a `retried` result with the exception goes into RQ's own
  outcome pipeline, where the job is requeued. test_job_pages::test_every_attempt_of_a_retried_job_has_a_result
- `scripts.RETRY_SCRIPT`, `scripts.ENQUEUE_NOW_SCRIPT`, `scripts.rq_timestamp`: Lua that writes a job's
  hash and lists as RQ's requeue and RQ's scheduler do, in one atomic step; RQ's own do it in several
  round trips and lose the job on a crash in between.
  test_retry::test_retried_job_has_the_fields_rq_requeue_writes,
  test_rq_internals::test_enqueue_now_writes_what_rqs_scheduler_writes
- `jobs.promote_held`, `jobs.release_limit`, `jobs.failed_job_done` (rq 3 only): RQ's public
  `RateLimitRegistry` and `release_slot`, after a retry, a delete or a failure rqscope wrote itself.
  test_retry::test_a_retried_job_still_respects_its_concurrency_limit,
  test_delete::test_deleting_a_job_under_a_concurrency_limit_frees_its_slot
- `queue._drop_claim`: a claimed job whose hash RQ cannot load is failed field by field (status,
  exc_info, the failed registry). test_worker::test_a_job_rq_cannot_read_is_failed_not_claimed_by_every_restart
"""

from rqscope.tasks.rq_internals.checks import SUPPORTED, verify_rq, verify_worker
from rqscope.tasks.rq_internals.jobs import fail_job, failed_job_done, promote_held, release_limit, schedule_job
from rqscope.tasks.rq_internals.keys import KEYS, REGISTRY_NAMES, Keys, rq_key_prefix
from rqscope.tasks.rq_internals.queue import StoppableQueue
from rqscope.tasks.rq_internals.worker import STOP_GRACE_SECONDS, UNRECORDED, HookedWorker

__all__ = [
    "KEYS",
    "REGISTRY_NAMES",
    "STOP_GRACE_SECONDS",
    "SUPPORTED",
    "UNRECORDED",
    "HookedWorker",
    "Keys",
    "StoppableQueue",
    "fail_job",
    "failed_job_done",
    "promote_held",
    "release_limit",
    "schedule_job",
    "rq_key_prefix",
    "verify_rq",
    "verify_worker",
]
