from __future__ import annotations

import pytest

from dessert_mcp.cli import settings
from dessert_mcp.config import DEFAULT_BASE_URL, ConfigError, Secret, Settings
from tests.support.api import CANARY_KEY
from tests.support.settings import settings_the_code_reads


def test_defaults_apply_when_the_environment_is_empty() -> None:
    settings = Settings.from_env({})
    assert settings.api_key is None
    assert settings.api_key_problem is None
    assert settings.base_url == DEFAULT_BASE_URL
    assert settings.tool_names == "auto"
    assert settings.timeout_s == 25.0


def test_the_key_is_read_trimmed_from_the_environment() -> None:
    settings = Settings.from_env({"DESSERT_API_KEY": f"  {CANARY_KEY}\n"})
    assert settings.api_key is not None
    assert settings.api_key.get() == CANARY_KEY


@pytest.mark.parametrize("value", ["${user_config.api_key}", "${user_config.dessert_api_key}", "", "   "])
def test_an_unfilled_host_placeholder_or_blank_value_counts_as_unset(value: str) -> None:
    settings = Settings.from_env(
        {"DESSERT_API_KEY": value, "DESSERT_API_BASE_URL": value, "DESSERT_MCP_TOOL_NAMES": value}
    )
    assert settings.api_key is None
    assert settings.base_url == DEFAULT_BASE_URL
    assert settings.tool_names == "auto"


def test_a_key_with_inner_spaces_is_reported_as_a_problem_without_stopping_start_up() -> None:
    settings = Settings.from_env({"DESSERT_API_KEY": "abc def"})
    assert settings.api_key is None
    assert settings.api_key_problem is not None
    assert "DESSERT_API_KEY" in settings.api_key_problem
    assert "abc" not in settings.api_key_problem


def test_the_secret_never_shows_in_repr_or_str() -> None:
    settings = Settings.from_env({"DESSERT_API_KEY": CANARY_KEY})
    assert CANARY_KEY not in repr(settings)
    assert CANARY_KEY not in str(settings.api_key)
    assert CANARY_KEY not in f"{settings.api_key!r}"


def test_masking_shows_only_the_first_and_last_four_characters() -> None:
    assert Secret(CANARY_KEY).masked() == f"{CANARY_KEY[:4]}…{CANARY_KEY[-4:]}"
    assert Secret("short").masked() == "*****"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://api.dessert.dev/", "https://api.dessert.dev"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://localhost:9", "http://localhost:9"),
        ("http://[::1]:9", "http://[::1]:9"),
        ("https://proxy.example.com/dessert/", "https://proxy.example.com/dessert"),
    ],
)
def test_base_urls_are_accepted_and_normalized(value: str, expected: str) -> None:
    assert Settings.from_env({"DESSERT_API_BASE_URL": value}).base_url == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("api.dessert.dev", "must look like"),
        ("ftp://api.dessert.dev", "must look like"),
        ("https://user:pw@api.dessert.dev", "credentials"),
        ("https://api.dessert.dev/?x=1", "query"),
        ("http://api.dessert.dev", "plain http"),
        ("http://10.0.0.5:8080", "plain http"),
    ],
)
def test_unusable_base_urls_are_rejected_with_the_variable_named(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env({"DESSERT_API_BASE_URL": value})
    assert "DESSERT_API_BASE_URL" in str(info.value)


@pytest.mark.parametrize("style", ["auto", "dotted", "underscore", "UNDERSCORE"])
def test_tool_name_styles_are_read_case_insensitively(style: str) -> None:
    assert Settings.from_env({"DESSERT_MCP_TOOL_NAMES": style}).tool_names == style.lower()


def test_an_unknown_tool_name_style_is_rejected() -> None:
    with pytest.raises(ConfigError, match="DESSERT_MCP_TOOL_NAMES must be one of auto, dotted, underscore"):
        Settings.from_env({"DESSERT_MCP_TOOL_NAMES": "dots"})


def test_command_line_overrides_win_over_the_environment() -> None:
    settings = Settings.from_env({"DESSERT_MCP_TOOL_NAMES": "dotted"}, tool_names="underscore", log_level=None)
    assert settings.tool_names == "underscore"
    assert settings.log_level == "INFO"


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf"])
def test_timeouts_must_be_positive_finite_numbers(value: str) -> None:
    with pytest.raises(ConfigError, match="DESSERT_TIMEOUT_S"):
        Settings.from_env({"DESSERT_TIMEOUT_S": value})


def test_an_unknown_log_level_is_rejected() -> None:
    with pytest.raises(ConfigError, match="DESSERT_MCP_LOG_LEVEL"):
        Settings.from_env({"DESSERT_MCP_LOG_LEVEL": "verbose"})


def test_the_log_format_is_text_unless_json_is_asked_for() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"DESSERT_MCP_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="DESSERT_MCP_LOG_FORMAT"):
        Settings.from_env({"DESSERT_MCP_LOG_FORMAT": "logfmt"})


def test_the_answer_cache_is_off_unless_a_ttl_is_given() -> None:
    assert Settings.from_env({}).cache_ttl_s == 0
    assert Settings.from_env({"DESSERT_CACHE_TTL_S": "2.5"}).cache_ttl_s == 2.5


@pytest.mark.parametrize("value", ["-1", "3601", "soon", "nan", "inf"])
def test_an_unusable_cache_ttl_is_rejected_with_the_variable_named(value: str) -> None:
    with pytest.raises(ConfigError, match="DESSERT_CACHE_TTL_S"):
        Settings.from_env({"DESSERT_CACHE_TTL_S": value})


def test_the_per_account_concurrency_limit_defaults_to_four_and_is_bounded() -> None:
    assert Settings.from_env({}).account_concurrency == 4
    assert Settings.from_env({"DESSERT_MCP_ACCOUNT_CONCURRENCY": "2"}).account_concurrency == 2
    for bad in ("0", "65", "many"):
        with pytest.raises(ConfigError, match="DESSERT_MCP_ACCOUNT_CONCURRENCY"):
            Settings.from_env({"DESSERT_MCP_ACCOUNT_CONCURRENCY": bad})


def test_the_ledger_poller_is_on_with_bounds_of_10_and_300_seconds_unless_told_otherwise() -> None:
    default = Settings.from_env({})
    assert (default.ledger_poll, default.ledger_poll_min_s, default.ledger_poll_max_s) == (True, 10.0, 300.0)
    assert default.ledger_poll_recent_s == 86400.0
    told = Settings.from_env(
        {
            "DESSERT_LEDGER_POLL": "OFF",
            "DESSERT_LEDGER_POLL_MIN_S": "2",
            "DESSERT_LEDGER_POLL_MAX_S": "60",
            "DESSERT_LEDGER_POLL_RECENT_S": "3600",
        }
    )
    assert (told.ledger_poll, told.ledger_poll_min_s, told.ledger_poll_max_s) == (False, 2.0, 60.0)
    assert told.ledger_poll_recent_s == 3600.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DESSERT_LEDGER_POLL": "sometimes"}, "DESSERT_LEDGER_POLL must be one of on, off; got 'sometimes'."),
        ({"DESSERT_LEDGER_POLL_MIN_S": "0"}, "DESSERT_LEDGER_POLL_MIN_S must be a number of seconds above 0"),
        (
            {"DESSERT_LEDGER_POLL_MIN_S": "30", "DESSERT_LEDGER_POLL_MAX_S": "20"},
            "DESSERT_LEDGER_POLL_MAX_S (20) must be at least DESSERT_LEDGER_POLL_MIN_S (30) seconds.",
        ),
        ({"DESSERT_LEDGER_POLL_MIN_S": "600"}, "DESSERT_LEDGER_POLL_MAX_S (300) must be at least"),
        ({"DESSERT_LEDGER_POLL_RECENT_S": "soon"}, "DESSERT_LEDGER_POLL_RECENT_S must be a number of seconds"),
    ],
)
def test_unusable_poller_settings_are_refused_in_one_line_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_every_variable_the_code_names_is_declared_once_as_a_setting() -> None:
    variables = [setting.env for setting in settings() if setting.env]
    assert len(variables) == len(set(variables))
    assert set(variables) == settings_the_code_reads()
    assert all(setting.help for setting in settings())
