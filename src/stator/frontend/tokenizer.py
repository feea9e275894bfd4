"""A model's tokenizer as the frontend needs it, loaded from a Hugging Face model directory.

Reads ``tokenizer.json`` (HF ``tokenizers``), ``tokenizer_config.json`` (special tokens,
``model_max_length``), ``special_tokens_map.json`` (fallback for special tokens), ``config.json``
(context length, EOS ids) and ``generation_config.json`` (EOS ids). Only ``tokenizer.json`` is
required.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from stator.errors import ConfigError

SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
CONTEXT_LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "max_sequence_length",
)
"""``config.json`` keys that hold the context length, in the order they are tried."""
_NO_LIMIT = 10**12
"""``transformers`` writes ``model_max_length`` ≈ 1e30 when a tokenizer has no limit."""


@dataclass(frozen=True, eq=False)
class Tokenizer:
    """Encode and decode text for one model; token counts are in tokens.

    ``vocab_size``: tokens the tokenizer knows, added tokens included; valid ids are
    ``0 <= id < vocab_size``. ``eos_token_ids``: every id that ends generation (``config.json``,
    ``generation_config.json`` and the tokenizer's ``eos_token``). ``context_length``: the model's
    maximum sequence length in tokens, or ``None`` if the files do not say.
    ``special_tokens_map``: ``bos_token``/``eos_token``/... → token string (only those set), plus
    ``additional_special_tokens``; this is what chat templates receive.
    """

    hf: HFTokenizer
    vocab_size: int
    eos_token_ids: frozenset[int]
    context_length: int | None
    special_tokens_map: dict[str, Any] = field(default_factory=dict)
    special_token_ids: frozenset[int] = frozenset()

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> Tokenizer:
        """Load the tokenizer of the model in ``model_dir``.

        Raises:
            ConfigError: ``tokenizer.json`` is missing or unreadable, or a JSON file is invalid
                (``flag="tokenizer_path"``, the message names the file).
        """
        root = Path(model_dir)
        hf = _load_hf(root / "tokenizer.json")
        tok_config = _read_json(root / "tokenizer_config.json")
        special = _special_tokens(tok_config, _read_json(root / "special_tokens_map.json"))
        model_config = _read_json(root / "config.json")
        eos_ids = _eos_ids(model_config) | _eos_ids(_read_json(root / "generation_config.json"))
        eos_token_id = hf.token_to_id(special.get("eos_token", ""))
        if eos_token_id is not None:
            eos_ids.add(int(eos_token_id))
        return cls(
            hf=hf,
            vocab_size=hf.get_vocab_size(with_added_tokens=True),
            eos_token_ids=frozenset(eos_ids),
            context_length=_context_length(model_config, tok_config),
            special_tokens_map=special,
            special_token_ids=frozenset(
                i for i, t in hf.get_added_tokens_decoder().items() if t.special
            )
            | frozenset(eos_ids),
        )

    @property
    def bos_token(self) -> str | None:
        """The BOS token string, or ``None``."""
        value = self.special_tokens_map.get("bos_token")
        return value if isinstance(value, str) else None

    @property
    def eos_token(self) -> str | None:
        """The EOS token string, or ``None``."""
        value = self.special_tokens_map.get("eos_token")
        return value if isinstance(value, str) else None

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``. Special-token strings in ``text`` (e.g. ``<|im_start|>``)
        become their ids. ``add_special_tokens`` runs the tokenizer's post-processor (e.g. a
        BOS); pass ``False`` for a rendered chat template, which already holds them (as
        ``transformers`` and vLLM do)."""
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``token_ids``; an incomplete UTF-8 sequence decodes to U+FFFD. For streaming
        use :class:`stator.frontend.detokenizer.IncrementalDetokenizer` instead."""
        return str(self.hf.decode(list(token_ids), skip_special_tokens=skip_special_tokens))

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary token string, or ``None``."""
        token_id = self.hf.token_to_id(token)
        return None if token_id is None else int(token_id)

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary string of ``token_id`` (byte-level form, e.g. ``Ġthe``), or ``None``."""
        token = self.hf.id_to_token(token_id)
        return None if token is None else str(token)

    def invalid_token_ids(self, token_ids: Sequence[int]) -> list[int]:
        """The ids in ``token_ids`` outside ``[0, vocab_size)`` (empty if all are valid)."""
        if not token_ids or (min(token_ids) >= 0 and max(token_ids) < self.vocab_size):
            return []
        return [t for t in token_ids if not 0 <= t < self.vocab_size]


def _load_hf(path: Path) -> HFTokenizer:
    try:
        return HFTokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for any load failure
        raise ConfigError("tokenizer_path", f"cannot load {path.name}: {exc}") from exc


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("tokenizer_path", f"cannot read {path.name}: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError("tokenizer_path", f"{path.name} is not a JSON object")
    return value


def _token_text(value: Any) -> str | None:
    """A special token given as a string or as an ``AddedToken`` dict (``{"content": ...}``)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _special_tokens(tok_config: dict[str, Any], tokens_map: dict[str, Any]) -> dict[str, Any]:
    special: dict[str, Any] = {}
    for name in SPECIAL_TOKEN_NAMES:
        text = _token_text(tok_config.get(name, tokens_map.get(name)))
        if text is not None:
            special[name] = text
    extra = tok_config.get("additional_special_tokens", tokens_map.get("additional_special_tokens"))
    if isinstance(extra, list):
        special["additional_special_tokens"] = [t for t in map(_token_text, extra) if t]
    return special


def _eos_ids(config: dict[str, Any]) -> set[int]:
    value = config.get("eos_token_id")
    if value is None:
        value = config.get("text_config", {}).get("eos_token_id")
    if isinstance(value, int):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, int)}
    return set()


def _context_length(model_config: dict[str, Any], tok_config: dict[str, Any]) -> int | None:
    for config in (model_config, model_config.get("text_config") or {}):
        for key in CONTEXT_LENGTH_KEYS:
            value = config.get(key)
            if isinstance(value, int) and value > 0:
                return value
    value = tok_config.get("model_max_length")
    if isinstance(value, int | float) and 0 < value < _NO_LIMIT:
        return int(value)
    return None
