"""The notification system's settings: retention and the webhook networks read,
defaulted and refused with the variable named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysdesign.platform.errors import ConfigurationError
from sysdesign.systems.notifications.config import NotifyConfig


def read(tmp_path: Path, **env: str) -> NotifyConfig:
    return NotifyConfig.from_env(tmp_path, {f"SYSDESIGN_NOTIFY_{k}": v for k, v in env.items()})


def test_retention_defaults(tmp_path: Path) -> None:
    config = read(tmp_path)
    assert config.retention_days == 30
    assert config.inbox_retention_days == 90
    assert config.retention_seconds == 3600
    assert config.webhook_allow_networks == ()
    assert config.webhook_host_concurrency == 8
    assert read(tmp_path, WEBHOOK_HOST_CONCURRENCY="32").webhook_host_concurrency == 32


def test_retention_values_are_read(tmp_path: Path) -> None:
    config = read(tmp_path, RETENTION_DAYS="7", INBOX_RETENTION_DAYS="0.5",
                  RETENTION_SECONDS=" 60 ")  # fmt: skip
    assert (config.retention_days, config.inbox_retention_days) == (7, 0.5)
    assert config.retention_seconds == 60
    forever = read(tmp_path, RETENTION_DAYS="0", INBOX_RETENTION_DAYS="0")
    assert (forever.retention_days, forever.inbox_retention_days) == (0, 0)
    assert read(tmp_path, RETENTION_DAYS="").retention_days == 30  # empty: the default


@pytest.mark.parametrize(
    ("key", "raw", "says"),
    [
        ("RETENTION_DAYS", "-1", "at least 0"),
        ("RETENTION_DAYS", "a month", "must be a number"),
        ("RETENTION_DAYS", "nan", "finite"),
        ("RETENTION_DAYS", "1e9", "at most 36500"),
        ("INBOX_RETENTION_DAYS", "-0.5", "at least 0"),
        ("INBOX_RETENTION_DAYS", "inf", "finite"),
        ("RETENTION_SECONDS", "0", "at least 0.01"),
        ("RETENTION_SECONDS", "hourly", "must be a number"),
        ("WEBHOOK_HOST_CONCURRENCY", "0", "at least 1"),
        ("WEBHOOK_HOST_CONCURRENCY", "many", "must be a number"),
    ],
)
def test_bad_retention_values_name_the_variable(
    tmp_path: Path, key: str, raw: str, says: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        read(tmp_path, **{key: raw})
    assert f"SYSDESIGN_NOTIFY_{key}" in str(caught.value)
    assert says in str(caught.value) and repr(raw) in str(caught.value)


def test_webhook_allow_networks_are_read_once_each(tmp_path: Path) -> None:
    config = read(
        tmp_path, WEBHOOK_ALLOW_NETWORKS=" 10.0.0.0/8, 127.0.0.1,,::1, fd00::/8 ,10.0.0.0/8"
    )
    assert [str(n) for n in config.webhook_allow_networks] == [
        "10.0.0.0/8", "127.0.0.1/32", "::1/128", "fd00::/8"
    ]  # fmt: skip
    assert read(tmp_path, WEBHOOK_ALLOW_NETWORKS=" , ").webhook_allow_networks == ()


@pytest.mark.parametrize(
    "entry", ["10.0.0.0/33", "localhost", "300.1.1.1", "10.0.0.0/8/8", "10.1.2.3/8"]
)
def test_a_bad_network_names_the_variable_and_the_entry(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        read(tmp_path, WEBHOOK_ALLOW_NETWORKS=f"127.0.0.1,{entry}")
    assert "SYSDESIGN_NOTIFY_WEBHOOK_ALLOW_NETWORKS" in str(caught.value)
    assert repr(entry) in str(caught.value)
