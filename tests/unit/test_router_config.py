import argparse

import pytest

from stator.errors import ConfigError
from stator.router.config import (
    RouterConfig,
    add_router_args,
    parse_router_config,
    router_config_from_args,
)


def test_defaults_follow_dynamo() -> None:
    cfg = parse_router_config([])
    assert cfg == RouterConfig()
    assert cfg.router_mode == "round-robin"
    assert cfg.router_kv_overlap_score_weight == 1.0
    assert cfg.router_temperature == 0.0
    assert cfg.router_kv_events is True
    assert cfg.router_ttl_secs == 120.0
    assert cfg.active_decode_blocks_threshold is None
    assert cfg.active_prefill_tokens_threshold is None


def test_all_flags_parse() -> None:
    cfg = parse_router_config(
        [
            "--router-mode",
            "kv",
            "--router-kv-overlap-score-weight",
            "2",
            "--router-temperature",
            "0.5",
            "--no-router-kv-events",
            "--router-ttl-secs",
            "30",
            "--router-queue-policy",
            "wspt",
            "--router-max-queue-size",
            "64",
            "--active-decode-blocks-threshold",
            "0.85",
            "--active-prefill-tokens-threshold",
            "8192",
            "--kv-cache-block-size",
            "64",
        ]
    )
    assert cfg == RouterConfig("kv", 2.0, 0.5, False, 30.0, "wspt", 64, 0.85, 8192, 64)


@pytest.mark.parametrize(
    ("old", "new", "dest", "value"),
    [
        (
            ["--kv-overlap-score-weight", "3"],
            "--router-kv-overlap-score-weight",
            "router_kv_overlap_score_weight",
            3.0,
        ),
        (["--no-kv-events"], "--no-router-kv-events", "router_kv_events", False),
        (["--router-ttl", "9"], "--router-ttl-secs", "router_ttl_secs", 9.0),
        (
            ["--busy-threshold", "0.7"],
            "--active-decode-blocks-threshold",
            "active_decode_blocks_threshold",
            0.7,
        ),
    ],
)
def test_old_spellings_warn_naming_the_new_flag(
    old: list[str], new: str, dest: str, value: object, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = parse_router_config(old)
    assert getattr(cfg, dest) == value
    assert f"use {new}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--router-mode", "fastest"], "--router-mode"),
        (["--router-kv-overlap-score-weight", "-1"], "--router-kv-overlap-score-weight"),
        (["--router-temperature", "abc"], "--router-temperature"),
        (["--active-decode-blocks-threshold", "1.5"], "--active-decode-blocks-threshold"),
        (["--router-ttl-secs", "0"], "--router-ttl-secs"),
        (["--kv-cache-block-size", "0"], "--kv-cache-block-size"),
    ],
)
def test_bad_value_fails_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_router_config(argv)
    assert flag in capsys.readouterr().err


def test_env_var_sets_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATOR_ROUTER_MODE", "kv")
    monkeypatch.setenv("STATOR_ROUTER_KV_EVENTS", "false")
    cfg = parse_router_config([])
    assert (cfg.router_mode, cfg.router_kv_events) == ("kv", False)


def test_programmatic_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="--router-temperature"):
        RouterConfig(router_temperature=-0.1)
    with pytest.raises(ConfigError, match="--router-mode"):
        RouterConfig(router_mode="nope")  # type: ignore[arg-type]


def test_flags_combine_with_other_parsers() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, default=8000)
    add_router_args(parser)
    args = parser.parse_args(["--router-mode", "random", "--http-port", "1"])
    assert router_config_from_args(args).router_mode == "random"
