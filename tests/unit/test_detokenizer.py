"""Incremental detokenization: multi-byte characters split across byte-level BPE tokens."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stator.frontend.detokenizer import IncrementalDetokenizer
from stator.frontend.tokenizer import Tokenizer

SAMPLES = [
    "héllo",
    "中文字符",
    "🙂👍🏽 ok",
    "a\u0301 ß Ω €",
    "mixed 中 and 🙂!",
    "\U0001d518\U0001d52b\U0001d526",
]  # last: 4-byte letters


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model_dir)


def _byte_to_char() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map used by byte-level BPE vocabularies."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _byte_ids(tokenizer: Tokenizer, data: bytes) -> list[int]:
    """One token per byte: every byte-level BPE vocabulary has the 256 single-byte tokens."""
    table = _byte_to_char()
    ids = [tokenizer.token_to_id(table[b]) for b in data]
    assert None not in ids
    return [i for i in ids if i is not None]


def _stream(detok: IncrementalDetokenizer, chunks: Sequence[Sequence[int]]) -> list[str]:
    return [detok.step(chunk) for chunk in chunks] + [detok.flush()]


@pytest.mark.parametrize("text", SAMPLES)
def test_every_byte_boundary_emits_whole_characters_as_soon_as_complete(
    tokenizer: Tokenizer, text: str
) -> None:
    detok = IncrementalDetokenizer(tokenizer)
    emitted, done = "", ""
    for char in text:
        encoded = char.encode()
        for n, token_id in enumerate(_byte_ids(tokenizer, encoded)):
            emitted += detok.step([token_id])
            assert emitted == (done + char if n == len(encoded) - 1 else done)
        done += char
    assert emitted == text
    assert detok.flush() == ""


@pytest.mark.parametrize("text", SAMPLES)
def test_bpe_tokens_stream_to_the_full_decode(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    pieces = _stream(IncrementalDetokenizer(tokenizer), [[i] for i in ids])
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)


def test_incomplete_character_at_end_is_flushed_as_replacement(tokenizer: Tokenizer) -> None:
    ids = _byte_ids(tokenizer, "ok中".encode()[:-1])
    detok = IncrementalDetokenizer(tokenizer)
    assert "".join(detok.step([i]) for i in ids) == "ok"
    assert detok.flush() == "\ufffd"
    assert detok.flush() == ""


def test_invalid_bytes_are_emitted_once_followed_by_valid_text(tokenizer: Tokenizer) -> None:
    ids = _byte_ids(tokenizer, b"a\x80\xffb")
    pieces = _stream(IncrementalDetokenizer(tokenizer), [[i] for i in ids])
    assert "".join(pieces) == tokenizer.decode(ids) == "a\ufffd\ufffdb"


def test_special_tokens_skipped_or_kept(tokenizer: Tokenizer) -> None:
    ids = [*tokenizer.encode("hi"), tokenizer.token_to_id("<|im_end|>") or 0]
    assert "".join(_stream(IncrementalDetokenizer(tokenizer), [[i] for i in ids])) == "hi"
    kept = IncrementalDetokenizer(tokenizer, skip_special_tokens=False)
    assert "".join(_stream(kept, [[i] for i in ids])) == "hi<|im_end|>"


def test_prompt_context_does_not_leak_into_output(tokenizer: Tokenizer) -> None:
    prompt = tokenizer.encode("def main():\n    print(")
    output = tokenizer.encode('"héllo 中")')
    detok = IncrementalDetokenizer(tokenizer, prompt_token_ids=prompt)
    assert "".join(_stream(detok, [[i] for i in output])) == '"héllo 中")'


def test_empty_steps_are_harmless(tokenizer: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tokenizer)
    assert detok.step([]) == ""
    assert detok.step(tokenizer.encode("x")) == "x"
    assert detok.step([]) == ""
    assert detok.flush() == ""


class _SentencePieceLike:
    """Decodes like a Metaspace tokenizer: ``▁`` is a space, and a leading space is dropped."""

    vocab = ("▁Hello", "▁world", "!", "▁")

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return "".join(self.vocab[i] for i in token_ids).replace("▁", " ").removeprefix(" ")


def test_leading_space_of_later_tokens_is_kept() -> None:
    ids = [0, 1, 2, 3, 0]
    pieces = _stream(IncrementalDetokenizer(_SentencePieceLike()), [[i] for i in ids])
    assert pieces == ["Hello", " world", "!", " ", " Hello", ""]
    assert "".join(pieces) == _SentencePieceLike().decode(ids) == "Hello world!  Hello"


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_ids_in_any_chunks_stream_to_the_full_decode(
    tokenizer: Tokenizer, data: st.DataObject
) -> None:
    ids = data.draw(st.lists(st.integers(0, tokenizer.vocab_size - 1), max_size=40))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ids)), max_size=10)))
    chunks = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(ids)], strict=True)]
    skip = data.draw(st.booleans())
    pieces = _stream(IncrementalDetokenizer(tokenizer, skip_special_tokens=skip), chunks)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=skip)
    assert not any(p.endswith("\ufffd") for p in pieces[:-1] if p)  # only flush may end in U+FFFD


@settings(max_examples=100, deadline=None)
@given(text=st.text(st.characters(exclude_categories=["Cs"]), max_size=30), data=st.data())
def test_any_text_split_at_any_byte_streams_back_exactly(
    tokenizer: Tokenizer, text: str, data: st.DataObject
) -> None:
    ids = _byte_ids(tokenizer, text.encode())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ids)), max_size=8)))
    chunks = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(ids)], strict=True)]
    pieces = _stream(IncrementalDetokenizer(tokenizer), chunks)
    assert "".join(pieces) == text
