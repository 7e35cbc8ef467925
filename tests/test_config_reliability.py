"""The retry, backoff and body-cap settings: defaults from the issue, clear errors for bad values."""

from __future__ import annotations

import pytest

from dessert_mcp.config import ConfigError, Settings


def test_the_reliability_defaults_are_three_attempts_half_a_second_one_mebibyte_and_25_s() -> None:
    settings = Settings.from_env({})
    assert (settings.max_attempts, settings.backoff_s, settings.max_body_bytes, settings.timeout_s) == (
        3,
        0.5,
        1024 * 1024,
        25.0,
    )


def test_the_reliability_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {"DESSERT_MAX_ATTEMPTS": "5", "DESSERT_BACKOFF_S": "0", "DESSERT_MAX_BODY_BYTES": "2048"}
    )
    assert (settings.max_attempts, settings.backoff_s, settings.max_body_bytes) == (5, 0.0, 2048)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DESSERT_MAX_ATTEMPTS", "0"),
        ("DESSERT_MAX_ATTEMPTS", "11"),
        ("DESSERT_MAX_ATTEMPTS", "three"),
        ("DESSERT_BACKOFF_S", "-1"),
        ("DESSERT_BACKOFF_S", "inf"),
        ("DESSERT_MAX_BODY_BYTES", "10"),
        ("DESSERT_MAX_BODY_BYTES", "1.5"),
    ],
)
def test_bad_reliability_settings_are_config_errors_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
