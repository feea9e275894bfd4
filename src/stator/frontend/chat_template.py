"""Chat-template rendering compatible with Hugging Face ``transformers``' ``apply_chat_template``.

The template is compiled in jinja2's ``ImmutableSandboxedEnvironment`` with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension and a ``{% generation %}`` block tag, a
``tojson`` filter that keeps non-ASCII characters and key order, and the globals
``raise_exception(message)`` and ``strftime_now(format)``: the environment ``transformers``
builds (``transformers.utils.chat_template_utils._compile_jinja_template``). The template sees
``messages``, ``tools``, ``documents``, ``add_generation_prompt`` and the tokenizer's special
tokens (``bos_token``, ``eos_token``, ... — only those that are set, as ``transformers`` passes
``special_tokens_map``), plus any ``template_kwargs``.

Before rendering, messages are normalised the way vLLM does for text-only models: a content list
of ``{"type": "text", "text": ...}`` parts becomes one string (parts joined with
:data:`TEXT_PART_SEPARATOR`), and a tool call's ``function.arguments`` JSON string becomes a
mapping, since templates write it with ``tojson``.

Every failure (a template that does not compile, a bad message, ``raise_exception`` in the
template, any error while rendering) raises :class:`stator.errors.InvalidRequestError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from stator.errors import InvalidRequestError

TEXT_PART_SEPARATOR = "\n"
"""Joins the text parts of a list content (vLLM's choice for string-content templates)."""


class ChatTemplate:
    """A compiled chat template; :meth:`render` turns messages into the prompt string.

    ``special_tokens`` maps names (``bos_token``, ``eos_token``, ...) to token strings and is
    passed to the template; ``None`` values are left out (the template sees them undefined).

    Raises:
        InvalidRequestError: ``source`` does not compile (``param="chat_template"``).
    """

    def __init__(self, source: str, *, special_tokens: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise InvalidRequestError(
                f"chat template does not compile: {exc.message} (line {exc.lineno})",
                param="chat_template",
            ) from exc

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, *, special_tokens: Mapping[str, Any] | None = None
    ) -> ChatTemplate | None:
        """The model's chat template (see :func:`load_chat_template_source`), or ``None``."""
        source = load_chat_template_source(model_dir)
        return None if source is None else cls(source, special_tokens=special_tokens)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """Render ``messages`` (OpenAI chat messages as plain dicts) into the prompt text.

        ``tools`` are OpenAI tool definitions, passed to the template unchanged (``None`` when
        absent, as ``transformers`` does). ``template_kwargs`` (e.g. a request's
        ``chat_template_kwargs``) become extra template variables; they cannot replace
        ``messages``, ``tools`` or ``add_generation_prompt``.

        Raises:
            InvalidRequestError: a message is malformed (``param="messages[i]..."``), or the
                template raised or failed while rendering (``param="messages"``).
        """
        context: dict[str, Any] = {**self.special_tokens, **(template_kwargs or {})}
        context.update(
            messages=normalize_messages(messages),
            tools=None if tools is None else [dict(t) for t in tools],
            documents=context.get("documents"),
            add_generation_prompt=add_generation_prompt,
        )
        try:
            return self._template.render(**context)
        except jinja2.TemplateError as exc:
            raise InvalidRequestError(f"chat template error: {exc}", param="messages") from exc
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            raise InvalidRequestError(
                f"chat template failed on these messages: {type(exc).__name__}: {exc}",
                param="messages",
            ) from exc


def load_chat_template_source(model_dir: str | Path) -> str | None:
    """Read a model directory's chat template text, or ``None`` if it has none.

    Looked up in the order ``transformers`` uses: ``chat_template.jinja``, then
    ``tokenizer_config.json``'s ``chat_template`` (a string, or a list of ``{"name",
    "template"}`` from which ``"default"`` is taken), then ``chat_template.json``.

    Raises:
        InvalidRequestError: a ``chat_template`` field of an unexpected shape.
    """
    root = Path(model_dir)
    jinja_file = root / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.json"):
        path = root / name
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
            if value is not None:
                return _pick_template(value, path.name)
    return None


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copy ``messages`` for the template: content lists flattened, tool-call arguments parsed.

    Raises:
        InvalidRequestError: ``messages`` is not a list of objects, a message has no string
            ``role``, or a content part is not a text part.
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidRequestError("messages must be a list of message objects", param="messages")
    return [_normalize_message(m, i) for i, m in enumerate(messages)]


def flatten_content(content: Any, *, param: str = "content") -> str | None:
    """A message content as one string: ``None`` and strings unchanged, text parts joined.

    Raises:
        InvalidRequestError: a part that is not ``{"type": "text", "text": str}``, or content
            of another type; ``param`` names the field in the message.
    """
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, Sequence):
        raise InvalidRequestError("content must be a string or a list of parts", param=param)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, Mapping) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise InvalidRequestError(
                f"content part type {kind!r} is not supported: only 'text' parts are served",
                param=f"{param}[{j}]",
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequestError("a text part needs a string 'text'", param=f"{param}[{j}]")
        texts.append(text)
    return TEXT_PART_SEPARATOR.join(texts)


def _normalize_message(message: Any, index: int) -> dict[str, Any]:
    param = f"messages[{index}]"
    if not isinstance(message, Mapping):
        raise InvalidRequestError("each message must be an object", param=param)
    if not isinstance(message.get("role"), str):
        raise InvalidRequestError("each message needs a string 'role'", param=f"{param}.role")
    out = dict(message)
    if "content" in out:
        out["content"] = flatten_content(out["content"], param=f"{param}.content")
    if isinstance(out.get("tool_calls"), Sequence):
        out["tool_calls"] = [_parse_tool_call(call) for call in out["tool_calls"]]
    return out


def _parse_tool_call(call: Any) -> Any:
    """A tool call whose ``function.arguments`` JSON-object string is parsed into a dict."""
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    function = dict(call["function"])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            function["arguments"] = parsed
    return {**call, "function": function}


def _pick_template(value: Any, file_name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        template = named.get("default")
        if isinstance(template, str):
            return template
    raise InvalidRequestError(
        f"{file_name}: chat_template must be a string or a list with a 'default' entry",
        param="chat_template",
    )


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker): renders
    its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """transformers' ``tojson``: unlike jinja2's, no HTML escaping and keys keep their order."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)
