import sys
from pathlib import Path

import pytest

from stator.errors import ConfigError
from stator.serve.config import serve_config_from_argv, split_extra_flags
from stator.serve.graph import args_to_argv, graph_from_dict, load_graph


def _no_default() -> Path:
    raise AssertionError("default model must not be built when --model-path is given")


def test_args_to_argv_handles_bools_lists_and_scalars() -> None:
    argv = args_to_argv({"http-port": 8000, "foo": True, "bar": False, "x": [1, 2]}, "c")
    assert argv == ["--http-port", "8000", "--foo", "--no-bar", "--x", "1", "--x", "2"]


def test_args_to_argv_rejects_mapping() -> None:
    with pytest.raises(ConfigError, match=r"args\.bad"):
        args_to_argv({"bad": {"a": 1}}, "components[0]")


def test_graph_with_two_models() -> None:
    graph = graph_from_dict(
        {
            "components": [
                {"name": "fe", "kind": "frontend", "args": {"router-mode": "kv"}},
                {"name": "a", "kind": "mocker", "args": {"model-name": "a"}},
                {"name": "b", "kind": "mocker", "replicas": 2, "args": {"model-name": "b"}},
            ]
        }
    )
    assert graph.frontend.name == "fe"
    assert [c.replicas for c in graph.components] == [1, 1, 2]
    assert graph.components[1].module == "stator.mocker"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"components": [{"kind": "mocker"}]}, "exactly one frontend"),
        ({"components": [{"kind": "frontend"}, {"kind": "gpu"}]}, "kind must be one of"),
        ({"components": [{"kind": "frontend", "replicas": 0}]}, "replicas"),
        ({"components": [{"kind": "frontend"}, {"kind": "frontend"}]}, "duplicate"),
        ({"nodes": []}, "components"),
        ([], "components"),
    ],
)
def test_bad_graphs_fail_with_clear_message(data: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        graph_from_dict(data)


def test_load_graph_reports_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "g.yaml"
    bad.write_text("components: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_graph(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_graph(tmp_path / "missing.yaml")


def test_split_extra_flags_sends_router_flags_to_frontend() -> None:
    fe, eng = split_extra_flags(
        [
            "--router-temperature",
            "0.5",
            "--speedup-ratio",
            "10",
            "--no-router-kv-events",
            "--block-size",
            "16",
        ]
    )
    assert fe == ["--router-temperature", "0.5", "--no-router-kv-events"]
    assert eng == ["--speedup-ratio", "10", "--block-size", "16"]


def test_serve_flags_build_frontend_and_mocker(tiny_model_dir: Path) -> None:
    cfg = serve_config_from_argv(
        [
            "--model-path",
            str(tiny_model_dir),
            "--num-workers",
            "4",
            "--http-port",
            "8123",
            "--speedup-ratio",
            "10",
            "--router-temperature",
            "0.1",
        ],
        _no_default,
    )
    try:
        mocker = next(c for c in cfg.graph.components if c.kind == "mocker")
        assert "--speedup-ratio" in mocker.argv and "--num-workers" in mocker.argv
        assert "--router-temperature" in cfg.graph.frontend.argv
        assert cfg.http_url == "http://127.0.0.1:8123"
        assert cfg.private_dir is not None
        assert cfg.common_argv[cfg.common_argv.index("--discovery-dir") + 1] == cfg.private_dir
    finally:
        if cfg.private_dir:
            Path(cfg.private_dir).rmdir()


def test_serve_rejects_mem_discovery(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--discovery-backend"):
        serve_config_from_argv(
            ["--model-path", str(tmp_path), "--discovery-backend", "mem"], _no_default
        )


def test_graph_file_gets_http_port_from_flags(tmp_path: Path) -> None:
    g = tmp_path / "g.yaml"
    g.write_text("components:\n  - {kind: frontend}\n  - {kind: mocker, args: {model-name: a}}\n")
    cfg = serve_config_from_argv(
        [
            "-f",
            str(g),
            "--http-port",
            "9001",
            "--discovery-backend",
            "file",
            "--discovery-dir",
            str(tmp_path),
        ],
        _no_default,
    )
    assert cfg.http_url.endswith(":9001")
    assert cfg.num_models == 1
    assert cfg.private_dir is None


def test_default_model_is_the_tiny_model_with_a_short_name(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    cfg = serve_config_from_argv(["--discovery-dir", str(tmp_path)], lambda: tiny_model_dir)
    mocker = next(c for c in cfg.graph.components if c.kind == "mocker")
    argv = list(mocker.argv)
    assert argv[argv.index("--model-path") + 1] == str(tiny_model_dir)
    assert argv[argv.index("--model-name") + 1] == "stator-tiny-llama"


def test_bad_mocker_flag_is_rejected_before_start(tiny_model_dir: Path) -> None:
    with pytest.raises(SystemExit):
        serve_config_from_argv(
            ["--model-path", str(tiny_model_dir), "--block-size", "0"], _no_default
        )


def test_missing_model_dir_is_rejected_before_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--model-path"):
        serve_config_from_argv(["--model-path", str(tmp_path / "nope")], _no_default)


def test_vllm_engine_uses_its_own_interpreter(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = serve_config_from_argv(
        ["--engine", "vllm", "--model-path", str(tiny_model_dir), "--num-workers", "2",
         "--vllm-python", sys.executable, "--dtype", "float32"],
        _no_default,
    )  # fmt: skip
    vllm = next(c for c in cfg.graph.components if c.kind == "vllm")
    assert vllm.python == sys.executable and vllm.replicas == 2
    assert vllm.module == "stator.vllm" and "--dtype" in vllm.argv
    with pytest.raises(ConfigError, match="--vllm-python"):
        serve_config_from_argv(
            ["--engine", "vllm", "--model-path", str(tiny_model_dir), "--vllm-python",
             str(tmp_path / "nope")],
            _no_default,
        )  # fmt: skip


def test_graph_component_python_must_be_a_path() -> None:
    with pytest.raises(ConfigError, match="python"):
        graph_from_dict({"components": [{"kind": "frontend"}, {"kind": "vllm", "python": 3}]})
