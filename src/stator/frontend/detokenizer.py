"""Incremental detokenization: stream text from a growing list of token ids.

Decoding each new token on its own is wrong in two ways: a multi-byte UTF-8 character can be
split across byte-level BPE tokens (alone, each part decodes to U+FFFD), and SentencePiece
tokenizers drop a token's leading space when it is decoded first. The fix, used by HF TGI and
vLLM (``vllm/transformers_utils/detokenizer_utils.py::detokenize_incrementally``), keeps two
offsets into the ids: text is decoded over a window starting at ``prefix_offset`` (context
already emitted), and the new text is the part beyond ``decode(ids[prefix_offset:read_offset])``.
While the window's text ends in U+FFFD the character may still be incomplete, so nothing is
emitted until a later token completes it (or the stream ends: :meth:`flush`).

For a byte-level BPE the concatenation of everything emitted equals ``decode(all ids)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

REPLACEMENT_CHAR = "\ufffd"
PROMPT_CONTEXT_TOKENS = 5
"""Prompt tokens kept as decoding context for the first output tokens (vLLM uses 5)."""


class Decoder(Protocol):
    """What the detokenizer needs: :class:`stator.frontend.tokenizer.Tokenizer` provides it."""

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``token_ids``."""
        ...


class IncrementalDetokenizer:
    """Turns the output token ids of one sequence into text deltas, one :meth:`step` at a time.

    ``prompt_token_ids``: the prompt, whose last :data:`PROMPT_CONTEXT_TOKENS` tokens give
    context (needed by SentencePiece tokenizers; optional for byte-level BPE).
    ``skip_special_tokens``: leave special tokens (e.g. EOS) out of the text.

    Cost per step: two decodes of a window of a few tokens; memory holds only the window.
    """

    def __init__(
        self,
        decoder: Decoder,
        *,
        prompt_token_ids: Sequence[int] = (),
        skip_special_tokens: bool = True,
    ) -> None:
        self._decoder = decoder
        self._skip_special_tokens = skip_special_tokens
        self._ids = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:]) if prompt_token_ids else []
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def step(self, token_ids: Sequence[int]) -> str:
        """Add new output ids (a delta, possibly empty); return the text they complete.

        May return ``""`` while a character is incomplete; the held text comes out with a
        later step or :meth:`flush`. Never returns a partial character's U+FFFD.
        """
        self._ids.extend(token_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """End of stream: return any held text (an incomplete character becomes U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        if self._read_offset >= len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text):
            return ""
        if not final and new_text.endswith(REPLACEMENT_CHAR):
            return ""
        del self._ids[: self._read_offset]  # the old read offset is the new prefix offset
        self._prefix_offset, self._read_offset = 0, len(self._ids)
        return new_text[len(prefix_text) :]

    def _decode(self, token_ids: Sequence[int]) -> str:
        if not token_ids:
            return ""
        return self._decoder.decode(token_ids, skip_special_tokens=self._skip_special_tokens)
