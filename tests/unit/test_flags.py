import argparse

import pytest

from stator.flags import add_bool_flag, add_flag, bounded, env_name
from stator.runtime.config import add_runtime_args, runtime_config_from_args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_flag(p, "--router-kv-overlap-score-weight", default=1.0, type=bounded(float, lo=0.0),
             deprecated=["--kv-overlap-score-weight"])
    add_bool_flag(p, "--enable-prefix-caching", default=True)
    return p


def test_env_name() -> None:
    assert env_name("--router-mode") == "STATOR_ROUTER_MODE"


def test_env_var_sets_default_and_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATOR_ROUTER_KV_OVERLAP_SCORE_WEIGHT", "2.5")
    assert _parser().parse_args([]).router_kv_overlap_score_weight == 2.5
    args = _parser().parse_args(["--router-kv-overlap-score-weight", "3"])
    assert args.router_kv_overlap_score_weight == 3.0


def test_bad_value_names_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["--router-kv-overlap-score-weight", "-1"])
    assert "--router-kv-overlap-score-weight" in capsys.readouterr().err


def test_bad_env_value_names_env_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATOR_ROUTER_KV_OVERLAP_SCORE_WEIGHT", "abc")
    with pytest.raises(SystemExit) as info:
        _parser()
    assert "STATOR_ROUTER_KV_OVERLAP_SCORE_WEIGHT" in str(info.value)
    assert "--router-kv-overlap-score-weight" in str(info.value)


def test_deprecated_spelling_warns_and_sets_new(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["--kv-overlap-score-weight", "0.5"])
    assert args.router_kv_overlap_score_weight == 0.5
    assert "use --router-kv-overlap-score-weight" in capsys.readouterr().err


def test_bool_flag_negation_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _parser().parse_args(["--no-enable-prefix-caching"]).enable_prefix_caching is False
    monkeypatch.setenv("STATOR_ENABLE_PREFIX_CACHING", "false")
    assert _parser().parse_args([]).enable_prefix_caching is False


def test_runtime_config_from_args() -> None:
    p = argparse.ArgumentParser()
    add_runtime_args(p)
    cfg = runtime_config_from_args(
        p.parse_args(["--discovery-backend", "mem", "--etcd-endpoints", "http://a:1, http://b:2"])
    )
    assert cfg.discovery_backend == "mem"
    assert cfg.etcd_endpoints == ("http://a:1", "http://b:2")
    assert cfg.namespace == "dynamo"


def test_store_kv_alias(capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser()
    add_runtime_args(p)
    assert p.parse_args(["--store-kv", "etcd"]).discovery_backend == "etcd"
