"""The ChatML chat template of the tiny test model (Jinja, transformers-compatible).

Modelled on the ChatML format (``<|im_start|>{role}\\n{content}<|im_end|>\\n``) used by Qwen2.5's
templates, written from scratch. It supports ``add_generation_prompt``, ``tools`` (a system block
listing the tool schemas as JSON, Hermes-style ``<tool_call>`` blocks for assistant tool calls and
``<tool_response>`` blocks for ``tool`` messages), message content given as a string or as a list
of ``{"type": "text", "text": ...}`` parts (joined with ``"\\n"``), and it calls
``raise_exception`` for an unknown role.
"""

from __future__ import annotations

CHATML_TEMPLATE = """\
{%- macro render_content(content) -%}
{%- if content is string -%}
{{- content -}}
{%- elif content is iterable -%}
{{- content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\\n') -}}
{%- endif -%}
{%- endmacro -%}
{%- set system_roles = ['system', 'developer'] -%}
{%- set offset = 0 -%}
{%- if tools -%}
{{- '<|im_start|>system\\n' -}}
{%- if messages and messages[0].role in system_roles -%}
{{- render_content(messages[0].content) + '\\n\\n' -}}
{%- set offset = 1 -%}
{%- endif -%}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' -}}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}
{%- for tool in tools -%}
{{- '\\n' + (tool | tojson) -}}
{%- endfor -%}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and ' -}}
{{- 'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n' -}}
{{- '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages[offset:] -%}
{%- if message.role in system_roles or message.role == 'user' -%}
{{- '<|im_start|>' + message.role + '\\n' + render_content(message.content) + '<|im_end|>\\n' -}}
{%- elif message.role == 'assistant' -%}
{{- '<|im_start|>assistant' -}}
{%- if message.content -%}
{{- '\\n' + render_content(message.content) -}}
{%- endif -%}
{%- for tool_call in message.tool_calls or [] -%}
{%- set call = tool_call.function if tool_call.function is defined else tool_call -%}
{{- '\\n<tool_call>\\n{"name": ' + (call.name | tojson) + ', "arguments": ' -}}
{%- if call.arguments is string -%}
{{- call.arguments -}}
{%- else -%}
{{- call.arguments | tojson -}}
{%- endif -%}
{{- '}\\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\\n' -}}
{%- elif message.role == 'tool' -%}
{{- '<|im_start|>user\\n<tool_response>\\n' + render_content(message.content) -}}
{{- '\\n</tool_response><|im_end|>\\n' -}}
{%- else -%}
{{- raise_exception('Unknown message role: ' ~ message.role) -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""
