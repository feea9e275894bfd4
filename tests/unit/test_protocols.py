import json
import subprocess
import sys

import msgspec

from stator.protocols import PROTOCOL_VERSION
from stator.protocols.engine import (
    LLMEngineOutput,
    PreprocessedRequest,
    StopConditions,
    TopLogprob,
)
from stator.protocols.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEventBatch,
)
from stator.protocols.schema import wire_schema


def test_engine_request_round_trips_msgpack() -> None:
    req = PreprocessedRequest(
        token_ids=[1, 2, 3],
        request_id="r1",
        stop_conditions=StopConditions(max_tokens=5, ignore_eos=True),
        priority=2,
    )
    data = msgspec.msgpack.encode(req)
    back = msgspec.msgpack.decode(data, type=PreprocessedRequest)
    assert back == req
    assert back.version == PROTOCOL_VERSION


def test_engine_output_defaults_are_omitted() -> None:
    out = LLMEngineOutput(token_ids=[4])
    assert msgspec.json.decode(msgspec.json.encode(out)) == {"token_ids": [4]}


def test_top_logprobs_encode_as_pairs() -> None:
    out = LLMEngineOutput(token_ids=[4], top_logprobs=[[TopLogprob(4, -0.1)]])
    assert msgspec.json.decode(msgspec.json.encode(out))["top_logprobs"] == [[[4, -0.1]]]


def test_kv_event_batch_is_tagged_union() -> None:
    batch = KvEventBatch(
        worker_id=7,
        event_id=3,
        events=[
            BlockStored(block_hashes=[2**64 - 1], parent_block_hash=None, token_ids=[1, 2],
                        block_size=2),
            BlockRemoved(block_hashes=[5]),
            AllBlocksCleared(),
        ],
    )
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(batch), type=KvEventBatch)
    assert back == batch
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode(batch))
    assert [e["type"] for e in raw["events"]] == ["BlockStored", "BlockRemoved",
                                                  "AllBlocksCleared"]


def test_schema_names_every_wire_type_and_version() -> None:
    schema = wire_schema()
    assert schema["version"] == PROTOCOL_VERSION
    for name in ("PreprocessedRequest", "LLMEngineOutput", "KvEventBatch", "BlockStored",
                 "LoadMetrics", "ModelCard"):
        assert name in schema["$defs"]
    props = schema["$defs"]["PreprocessedRequest"]["properties"]
    assert {"token_ids", "sampling_options", "stop_conditions", "disaggregated_params"} <= set(
        props
    )


def test_stator_schema_command_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stator.cli", "schema", "--compact"],
        check=True, capture_output=True, text=True,
    ).stdout
    assert json.loads(out)["title"] == "stator wire protocol"
