"""One request inside the simulated engine: its tokens, progress and KV blocks.

Token counts follow vLLM: ``num_tokens`` = prompt + generated tokens. The newest generated token
is not computed yet (it is the next step's input), so a decoding request has
``num_computed_tokens == num_tokens - 1``; a step that computes every known token emits one new
token. Output token ids are drawn when the request is added, so a request's tokens do not depend
on how steps are batched.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import xxhash

from stator.errors import InvalidRequestError
from stator.kv.block_pool import CachedBlock
from stator.kv.hashing import HASH_SEED, block_sequence_hashes, extend_sequence_hash
from stator.protocols.engine import FinishReason, PreprocessedRequest

TokenArray = npt.NDArray[np.uint32]


@dataclass(slots=True)
class EngineRequest:
    """A request as the engine core takes it.

    ``token_ids``: the prompt (tokens, non-empty). ``max_tokens``: output tokens to generate at
    most (None = the engine's default). ``ignore_eos``: never stop early on ``stop_token_ids``
    (random output ids otherwise end the request when they hit one, after ``min_tokens``).
    """

    request_id: str
    token_ids: TokenArray
    max_tokens: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def from_preprocessed(cls, request: PreprocessedRequest) -> EngineRequest:
        """Convert a wire request (its ``eos_token_ids`` and ``stop_token_ids`` both stop)."""
        stop = request.stop_conditions
        stops = set(request.eos_token_ids) | set(stop.stop_token_ids or ())
        return cls(
            request_id=request.request_id,
            token_ids=np.asarray(request.token_ids, dtype=np.uint32),
            max_tokens=stop.max_tokens,
            ignore_eos=stop.ignore_eos,
            min_tokens=stop.min_tokens or 0,
            stop_token_ids=frozenset(stops),
        )


class SeqStatus(enum.Enum):
    """Where a request is: queued, scheduled each step, or done."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """A request's state in the engine.

    ``block_hashes``: sequence hashes of its full blocks known so far (prompt blocks at start,
    extended as generated tokens fill blocks). ``blocks``: its cached blocks (a prefix of its
    block table); ``num_private_blocks``: the rest of its allocated blocks.
    ``num_cached_tokens``: prompt tokens found in the prefix cache at first admission;
    ``max_cached_tokens``: the most tokens (prompt and, after a preemption, output) found cached
    at any admission.
    """

    __slots__ = (
        "arrival_ms",
        "block_hashes",
        "block_size",
        "blocks",
        "finish_reason",
        "max_cached_tokens",
        "max_output_tokens",
        "num_cached_tokens",
        "num_computed_tokens",
        "num_output_tokens",
        "num_preemptions",
        "num_private_blocks",
        "num_prompt_tokens",
        "output_ids",
        "prompt_ids",
        "request_id",
        "status",
        "stop_at",
    )

    def __init__(
        self,
        request_id: str,
        prompt_ids: TokenArray,
        output_ids: TokenArray,
        block_size: int,
        *,
        stop_at: int | None = None,
        arrival_ms: float = 0.0,
        block_hashes: list[int] | None = None,
    ) -> None:
        if len(prompt_ids) == 0:
            raise InvalidRequestError("the prompt is empty", param="token_ids")
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.output_ids = output_ids
        self.block_size = block_size
        self.num_prompt_tokens = len(prompt_ids)
        self.max_output_tokens = len(output_ids)
        self.stop_at = stop_at
        self.arrival_ms = arrival_ms
        self.block_hashes = (
            block_hashes
            if block_hashes is not None
            else block_sequence_hashes(prompt_ids, block_size)
        )
        self.num_output_tokens = 0
        self.num_computed_tokens = 0
        self.blocks: list[CachedBlock] = []
        self.num_private_blocks = 0
        self.status = SeqStatus.WAITING
        self.num_cached_tokens: int | None = None
        self.max_cached_tokens = 0
        self.num_preemptions = 0
        self.finish_reason: FinishReason | None = None

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def num_blocks(self) -> int:
        """Blocks allocated to it (cached + private)."""
        return len(self.blocks) + self.num_private_blocks

    @property
    def is_decoding(self) -> bool:
        """Generating: it has output and only its newest token is uncomputed."""
        return self.num_output_tokens > 0 and self.num_computed_tokens == self.num_tokens - 1

    def tokens(self, start: int, end: int) -> TokenArray:
        """Token ids ``[start, end)`` of prompt + output (a view when it lies in one part)."""
        p = self.num_prompt_tokens
        if end <= p:
            return self.prompt_ids[start:end]
        if start >= p:
            return self.output_ids[start - p : end - p]
        return np.concatenate((self.prompt_ids[start:], self.output_ids[: end - p]))

    def block_hash(self, index: int) -> int:
        """Sequence hash of full block ``index`` (computing and remembering generated blocks).

        Raises:
            IndexError: block ``index`` is not full yet, or blocks before it are unknown.
        """
        hashes = self.block_hashes
        if index < len(hashes):
            return hashes[index]
        if index != len(hashes) or (index + 1) * self.block_size > self.num_tokens:
            raise IndexError(f"block {index} of request {self.request_id} is not full")
        bs = self.block_size
        data = np.ascontiguousarray(self.tokens(index * bs, (index + 1) * bs), dtype="<u4")
        local = xxhash.xxh3_64_intdigest(data.tobytes(), seed=HASH_SEED)
        value = extend_sequence_hash(hashes[-1] if hashes else None, local)
        hashes.append(value)
        return value


def draw_outputs(
    rng: np.random.Generator,
    max_tokens: int,
    vocab_size: int,
    stop_token_ids: Collection[int],
    min_tokens: int,
) -> tuple[TokenArray, int | None]:
    """Random output token ids in ``[0, vocab_size)`` and where generation stops early.

    Returns ``(ids, stop_at)``: ``stop_at`` is the index of the first id in ``stop_token_ids`` at
    or after ``min_tokens`` (that token ends the request and is not returned), or None.
    """
    ids = rng.integers(0, vocab_size, size=max_tokens, dtype=np.uint32)
    if not stop_token_ids:
        return ids, None
    hits = np.flatnonzero(np.isin(ids[min_tokens:], np.fromiter(stop_token_ids, dtype=np.int64)))
    if len(hits) == 0:
        return ids, None
    return ids, int(hits[0]) + min_tokens
