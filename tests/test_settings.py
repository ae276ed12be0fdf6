from __future__ import annotations

import pytest
from rqscope.monitor.settings import DEFAULT_PORT, Settings, from_env, redact_url
from rqscope.tasks.errors import SettingsError


def test_defaults_when_nothing_is_set() -> None:
    settings = from_env({})
    assert settings == Settings()
    assert settings.host == "127.0.0.1" and settings.port == DEFAULT_PORT == 9190
    assert settings.redis_url is None


def test_reads_every_kind_of_value() -> None:
    settings = from_env(
        {
            "RQSCOPE_REDIS_URL": "rediss://alice:s3cret@redis.internal:6380/2",
            "RQSCOPE_PORT": "8080",
            "RQSCOPE_HOST": "0.0.0.0",
            "RQSCOPE_SNAPSHOT_TTL": "2.5",
            "RQSCOPE_LOG_LEVEL": "debug",
            "RQSCOPE_API_TOKEN": "x" * 32,
            "RQSCOPE_TASK_MODULES": "a.b, c ,",
            "UNRELATED": "ignored",
        }
    )
    assert settings.port == 8080 and settings.host == "0.0.0.0"
    assert settings.snapshot_ttl == 2.5 and settings.log_level == "DEBUG"
    assert settings.task_modules == ("a.b", "c")
    assert settings.redis_url == "rediss://alice:s3cret@redis.internal:6380/2"
    assert "s3cret" not in repr(settings)
    assert "x" * 32 not in repr(settings)


@pytest.mark.parametrize("url", ["redis://localhost", "rediss://u:p@h:1/0", "unix:///run/redis.sock?db=1"])
def test_accepts_redis_url_schemes(url: str) -> None:
    assert from_env({"RQSCOPE_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RQSCOPE_REDIS_URL": "http://localhost"}, "RQSCOPE_REDIS_URL"),
        ({"RQSCOPE_REDIS_URL": "redis://"}, "RQSCOPE_REDIS_URL"),
        ({"RQSCOPE_REDIS_URL": "redis://h:99999"}, "RQSCOPE_REDIS_URL"),
        ({"RQSCOPE_REDIS_URL": "unix://"}, "RQSCOPE_REDIS_URL"),
        ({"RQSCOPE_PORT": "0"}, "RQSCOPE_PORT"),
        ({"RQSCOPE_PORT": "http"}, "RQSCOPE_PORT"),
        ({"RQSCOPE_SNAPSHOT_TTL": "-1"}, "RQSCOPE_SNAPSHOT_TTL"),
        ({"RQSCOPE_SNAPSHOT_TTL": "nan"}, "RQSCOPE_SNAPSHOT_TTL"),
        ({"RQSCOPE_REDIS_TIMEOUT": "0"}, "RQSCOPE_REDIS_TIMEOUT"),
        ({"RQSCOPE_LOG_LEVEL": "LOUD"}, "RQSCOPE_LOG_LEVEL"),
        ({"RQSCOPE_NO_AUTH": "maybe"}, "RQSCOPE_NO_AUTH"),
        ({"RQSCOPE_NO_AUTH": "1", "RQSCOPE_HOST": "0.0.0.0"}, "RQSCOPE_NO_AUTH"),
        ({"RQSCOPE_API_TOKEN": "short"}, "RQSCOPE_API_TOKEN"),
        ({"RQSCOPE_MAX_BODY_BYTES": "10"}, "RQSCOPE_MAX_BODY_BYTES"),
        ({"RQSCOPE_MAX_BATCH": "0"}, "RQSCOPE_MAX_BATCH"),
        ({"RQSCOPE_MAX_BATCH": "1e9"}, "RQSCOPE_MAX_BATCH"),
        ({"RQSCOPE_MAX_BATCH_BYTES": "10"}, "RQSCOPE_MAX_BATCH_BYTES"),
        ({"RQSCOPE_MAX_DELAY": "0"}, "RQSCOPE_MAX_DELAY"),
        ({"RQSCOPE_MAX_DELAY": "a fortnight"}, "RQSCOPE_MAX_DELAY"),
        ({"RQSCOPE_MAX_DELAY": "9" * 5000}, "RQSCOPE_MAX_DELAY"),
        ({"RQSCOPE_SENTINEL_HOSTS": "a:1"}, "RQSCOPE_SENTINEL"),
        ({"RQSCOPE_SENTINEL_HOSTS": "nocolon", "RQSCOPE_SENTINEL_MASTER": "m"}, "RQSCOPE_SENTINEL_HOSTS"),
        ({"RQSCOPE_ALERT_INTERVAL": "-5"}, "RQSCOPE_ALERT_INTERVAL"),
        ({"RQSCOPE_ALERT_REPEAT": "soon"}, "RQSCOPE_ALERT_REPEAT"),
        ({"RQSCOPE_ALERT_WEBHOOK_URLS": "ftp://host/x"}, "RQSCOPE_ALERT_WEBHOOK_URLS"),
        ({"RQSCOPE_ALERT_SLACK_URLS": "https://"}, "RQSCOPE_ALERT_SLACK_URLS"),
        ({"RQSCOPE_PUBLIC_URL": "dashboard"}, "RQSCOPE_PUBLIC_URL"),
        ({"RQSCOPE_SMTP_HOST": "mail"}, "RQSCOPE_SMTP_HOST"),
        ({"RQSCOPE_SMTP_PORT": "0"}, "RQSCOPE_SMTP_PORT"),
        ({"RQSCOPE_PAGERDUTY_SEVERITIES": "loud"}, "RQSCOPE_PAGERDUTY_SEVERITIES"),
        ({"RQSCOPE_USERS": "alice:admin:scrypt:x"}, "RQSCOPE_USERS"),
        ({"RQSCOPE_USERS": "alice:viewer:plaintext"}, "RQSCOPE_USERS"),
        ({"RQSCOPE_USERS": "a:viewer:scrypt:1,a:operator:scrypt:2"}, "RQSCOPE_USERS"),
        ({"RQSCOPE_SECRET_KEY": "short"}, "RQSCOPE_SECRET_KEY"),
        ({"RQSCOPE_TRUSTED_PROXIES": "-1"}, "RQSCOPE_TRUSTED_PROXIES"),
        ({"RQSCOPE_TRUSTED_PROXIES": "99"}, "RQSCOPE_TRUSTED_PROXIES"),
        ({"RQSCOPE_TRUSTED_PROXIES": "one"}, "RQSCOPE_TRUSTED_PROXIES"),
        ({"RQSCOPE_ALLOWED_HOSTS": "ops.example.com,a b"}, "RQSCOPE_ALLOWED_HOSTS"),
        ({"RQSCOPE_ALLOWED_HOSTS": "evil.example/path"}, "RQSCOPE_ALLOWED_HOSTS"),
        ({"RQSCOPE_DISPLAY_PICKLE_TYPES": "os.system;rm"}, "RQSCOPE_DISPLAY_PICKLE_TYPES"),
        ({"RQSCOPE_DISPLAY_PICKLE_TYPES": "Decimal"}, "RQSCOPE_DISPLAY_PICKLE_TYPES"),
        ({"RQSCOPE_API_TOKEN": "x" * 20, "RQSCOPE_VIEWER_TOKEN": "x" * 20}, "RQSCOPE_VIEWER_TOKEN"),
    ],
)
def test_bad_values_fail_with_a_one_line_message_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as info:
        from_env(env)
    message = str(info.value)
    assert named in message and "\n" not in message


def test_bad_url_message_does_not_leak_the_password() -> None:
    with pytest.raises(SettingsError) as info:
        from_env({"RQSCOPE_REDIS_URL": "http://user:hunter2@host"})
    assert "hunter2" not in str(info.value)


def test_sentinel_settings() -> None:
    settings = from_env({"RQSCOPE_SENTINEL_HOSTS": "s1:26379, s2:26380", "RQSCOPE_SENTINEL_MASTER": "mymaster"})
    assert settings.sentinel_hosts == (("s1", 26379), ("s2", 26380))
    assert settings.sentinel_master == "mymaster"


def test_no_auth_is_allowed_on_loopback() -> None:
    assert from_env({"RQSCOPE_NO_AUTH": "true", "RQSCOPE_HOST": "::1"}).no_auth is True


@pytest.mark.parametrize(("raw", "seconds"), [("3600", 3600.0), ("90s", 90.0), ("45m", 2700.0), ("7d", 604800.0)])
def test_max_delay_takes_seconds_or_a_unit(raw: str, seconds: float) -> None:
    assert from_env({"RQSCOPE_MAX_DELAY": raw}).max_delay == seconds


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:pw@host/0", "redis://:***@host/0"),
        ("redis://host:6379", "redis://host:6379"),
        (None, ""),
    ],
)
def test_redact_url(url: str | None, shown: str) -> None:
    assert redact_url(url) == shown


def test_alert_and_receiver_settings() -> None:
    settings = from_env({
        "RQSCOPE_ALERT_INTERVAL": "30", "RQSCOPE_ALERT_WEBHOOK_URLS": "http://a/hook, https://b/hook",
        "RQSCOPE_SMTP_HOST": "mail", "RQSCOPE_SMTP_FROM": "rq@x", "RQSCOPE_SMTP_TO": "a@x,b@x",
        "RQSCOPE_PAGERDUTY_SEVERITIES": "critical,warning", "RQSCOPE_USERS": "ops:operator:scrypt:1$a$b",
    })  # fmt: skip
    assert settings.alert_interval == 30 and settings.alert_webhook_urls == ("http://a/hook", "https://b/hook")
    assert settings.smtp_to == ("a@x", "b@x") and settings.pagerduty_severities == ("critical", "warning")
    assert settings.users[0].name == "ops" and "scrypt" not in repr(settings)
