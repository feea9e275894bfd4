"""Flag splitting of ``python -m stator.vllm``: stator's flags vs vLLM's pass-through."""

from __future__ import annotations

import pytest

from stator.errors import ConfigError
from stator.runtime.address import model_endpoint_name
from stator.vllm.config import parse_config, split_args


def test_vllm_flags_pass_through_in_order() -> None:
    argv = [
        "--model",
        "m",
        "--max-model-len",
        "512",
        "--namespace",
        "ns",
        "--block-size",
        "32",
        "-O3",
        "--enable-prefix-caching",
        "--hf-overrides",
        '{"a": 1}',
        "--dtype=float32",
    ]
    args, rest = split_args(argv)
    assert args.namespace == "ns"
    assert rest == [
        "--max-model-len",
        "512",
        "--block-size",
        "32",
        "-O3",
        "--enable-prefix-caching",
        "--hf-overrides",
        '{"a": 1}',
        "--dtype=float32",
    ]


def test_engine_argv_gets_model_tokenizer_and_served_name() -> None:
    cfg = parse_config(
        ["--model", "/m", "--tokenizer", "/t", "--served-model-name", "tiny", "--max-num-seqs", "4"]
    )
    assert cfg.engine_argv == (
        "--model",
        "/m",
        "--tokenizer",
        "/t",
        "--served-model-name",
        "tiny",
        "--max-num-seqs",
        "4",
    )
    assert cfg.served_model_name == "tiny"


def test_no_prefix_abbreviation_steals_vllm_flags() -> None:
    # "--enable-kv" would abbreviate stator's --enable-kv-events if abbreviations were allowed.
    _, rest = split_args(["--model", "m", "--enable-kv", "--namespace-x", "1"])
    assert rest == ["--enable-kv", "--namespace-x", "1"]


def test_aggregated_worker_serves_model_specific_endpoint() -> None:
    cfg = parse_config(["--model", "Qwen/Qwen2.5-7B-Instruct"])
    assert cfg.role == "aggregated"
    assert str(cfg.endpoint) == "dyn://dynamo.backend.generate_qwen_qwen2_5-7b-instruct_0311af13"
    assert str(cfg.dump_endpoint) == "dyn://dynamo.backend.kv_dump"


def test_served_name_decides_the_endpoint() -> None:
    cfg = parse_config(["--model", "/models/x", "--served-model-name", "tiny", "--namespace", "n"])
    assert cfg.endpoint.endpoint == model_endpoint_name("tiny")
    assert cfg.endpoint.namespace == "n"


@pytest.mark.parametrize(
    ("flags", "expected", "role"),
    [
        (["--is-prefill-worker"], "dyn://dynamo.prefill.generate", "prefill"),
        (["--is-decode-worker"], "dyn://dynamo.backend.generate", "decode"),
        (["--is-decode-worker", "--component-name", "dec"], "dyn://dynamo.dec.generate", "decode"),
        (["--endpoint-name", "gen", "--component-name", "c"], "dyn://dynamo.c.gen", "aggregated"),
        (["--endpoint", "dyn://a.b.c", "--is-prefill-worker"], "dyn://a.b.c", "prefill"),
    ],
)
def test_endpoint_by_role_and_overrides(flags: list[str], expected: str, role: str) -> None:
    cfg = parse_config(["--model", "m", *flags])
    assert str(cfg.endpoint) == expected
    assert cfg.role == role


def test_prefill_and_decode_conflict() -> None:
    with pytest.raises(ConfigError, match="--is-prefill-worker"):
        parse_config(["--model", "m", "--is-prefill-worker", "--is-decode-worker"])


def test_bad_endpoint_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--endpoint"):
        parse_config(["--model", "m", "--endpoint", "dyn://a.b"])
    with pytest.raises(ConfigError, match="--component-name"):
        parse_config(["--model", "m", "--component-name", "bad name"])


def test_store_kv_alias_and_publisher_type() -> None:
    cfg = parse_config(["--model", "m", "--store-kv", "mem", "--kv-events-publisher-type", "nats"])
    assert cfg.runtime.discovery_backend == "mem"
    assert cfg.runtime.event_plane == "nats"


def test_worker_defaults() -> None:
    cfg = parse_config(["--model", "m"])
    assert cfg.enable_kv_events and cfg.health_check
    assert cfg.metrics_port is None
    assert parse_config(["--model", "m", "--no-enable-kv-events"]).enable_kv_events is False
    assert parse_config(["--model", "m", "--metrics-port", "0"]).metrics_port == 0


def test_model_is_required() -> None:
    with pytest.raises(SystemExit):
        split_args(["--max-model-len", "5"])


def test_env_sets_stator_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATOR_COMPONENT_NAME", "envcomp")
    assert parse_config(["--model", "m"]).endpoint.component == "envcomp"
