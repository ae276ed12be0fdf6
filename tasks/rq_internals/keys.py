"""RQ's key layout under its key prefix (`RQ_KEY_PREFIX` from rq 3.0 on, `rq` before)."""

from __future__ import annotations

from dataclasses import dataclass


def rq_key_prefix() -> str:
    """The prefix of every RQ key, as RQ itself reads it (RQ_KEY_PREFIX from 3.0 on, `rq` before)."""
    from rq import defaults

    return str(getattr(defaults, "RQ_KEY_PREFIX", "rq"))


def rq_reads_prefix() -> bool:
    """Whether this RQ takes its key prefix from RQ_KEY_PREFIX (3.0 on); before, every key starts `rq:`."""
    from rq import defaults

    return hasattr(defaults, "RQ_KEY_PREFIX")


@dataclass(frozen=True)
class Keys:
    """RQ's key names under one prefix."""

    prefix: str = "rq"

    @property
    def own_prefix(self) -> str:
        """Where rqscope's own keys start: `rqscope:` under RQ's default `rq`, `<prefix>:rqscope:` otherwise."""
        # kept bare under `rq` so that an upgrade keeps every counter, alert state and session; under
        # any other prefix they share its hash tag, and so the Redis Cluster slot of the RQ keys they describe
        return "rqscope:" if self.prefix == "rq" else f"{self.prefix}:rqscope:"

    def own(self, name: str) -> str:
        """The name of one of rqscope's own keys under this prefix."""
        return self.own_prefix + name

    def for_format(self) -> Keys:
        """The same keys with the prefix's braces doubled, for templates filled with str.format."""
        return Keys(self.prefix.replace("{", "{{").replace("}", "}}"))

    @property
    def queues(self) -> str:
        return f"{self.prefix}:queues"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def queue_prefix(self) -> str:
        return f"{self.prefix}:queue:"

    @property
    def worker_prefix(self) -> str:
        return f"{self.prefix}:worker:"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}:job:"

    @property
    def executions_prefix(self) -> str:
        """A job's execution registry is this prefix plus the job id."""
        return f"{self.prefix}:executions:"

    @property
    def group_prefix(self) -> str:
        return f"{self.prefix}:group:"

    @property
    def groups(self) -> str:
        return f"{self.prefix}:groups"

    @property
    def suspended(self) -> str:
        return f"{self.prefix}:suspended"

    @property
    def cron_schedulers(self) -> str:
        return f"{self.prefix}:cron_schedulers"

    @property
    def cron_jobs(self) -> str:
        """RQ 3's registry of cron job names, scored by their last enqueue (absent before 3.0)."""
        return f"{self.prefix}:cron_jobs"

    def cron_scheduler(self, name: str) -> str:
        """A CronScheduler's hash: hostname, pid, created_at and its cron jobs as JSON."""
        return f"{self.prefix}:cron_scheduler:{name}"

    def cron_job_history(self, name: str) -> str:
        """The ids of the jobs a cron job enqueued, scored by their enqueue time."""
        return f"{self.prefix}:cron_job:{name}:jobs"

    @property
    def rate_limit_keys(self) -> str:
        return f"{self.prefix}:rl-keys"

    def rate_limit_config(self, key: str) -> str:
        return f"{self.prefix}:rl:{key}"

    def rate_limit(self, key: str, state: str) -> str:
        return f"{self.prefix}:rl:{key}:{state}"

    def queue(self, name: str) -> str:
        return self.queue_prefix + name

    def worker(self, name: str) -> str:
        return self.worker_prefix + name

    def worker_executions(self, name: str) -> str:
        """RQ 3's set of a worker's running executions, as `job_id:execution_id` members."""
        return f"{self.worker(name)}:executions"

    def execution(self, composite: str) -> str:
        return f"{self.prefix}:execution:{composite}"

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def intermediate(self, queue: str) -> str:
        return f"{self.queue(queue)}:intermediate"

    def results(self, job_id: str) -> str:
        return f"{self.prefix}:results:{job_id}"

    def dependents(self, job_id: str) -> str:
        """The set of ids of the jobs that wait on this one."""
        return f"{self.job(job_id)}:dependents"

    def group(self, name: str) -> str:
        """The set of ids of an RQ job group."""
        return self.group_prefix + name

    def workers_of(self, queue: str) -> str:
        return f"{self.prefix}:workers:{queue}"

    def scheduler_lock(self, queue: str) -> str:
        return f"{self.prefix}:scheduler-lock:{queue}"

    def registry(self, state: str, queue: str) -> str:
        return f"{self.prefix}:{REGISTRY_NAMES[state]}:{queue}"


# job state -> the word in its registry's key (RQ names the started registry `wip`)
# (`ready`, from rq 3.0 on, holds dependents whose dependencies finished, waiting for a rate limit slot;
# before 3.0 it is always empty)
REGISTRY_NAMES = {
    "started": "wip",
    "deferred": "deferred",
    "ready": "ready",
    "scheduled": "scheduled",
    "finished": "finished",
    "failed": "failed",
    "canceled": "canceled",
}

KEYS = Keys(rq_key_prefix())
OWN = KEYS.own_prefix  # the start of every rqscope key in this process
# rqscope's key templates filled with str.format: the prefix's braces doubled
OWN_FORMAT = KEYS.for_format().own_prefix
