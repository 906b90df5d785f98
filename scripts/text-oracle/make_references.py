#!/usr/bin/env python3
"""Write the text-layer parity fixtures (tests/fixtures/text/*.json).

The oracle is Python `tokenizers` for ids and decode, and transformers'
`apply_chat_template` for rendered chat prompts. The Rust tests read the
fixtures, so `cargo test` needs no Python.

Re-run (from the repository root):

    scripts/fetch-tokenizers
    python3 -m venv /tmp/text-oracle-venv
    /tmp/text-oracle-venv/bin/pip install -r scripts/text-oracle/requirements.txt
    /tmp/text-oracle-venv/bin/python scripts/text-oracle/make_references.py

Dates: `strftime_now` reads the clock, so the script pins transformers' clock to
PINNED_NOW and the Rust tests pass the same instant to the renderer.
"""

import datetime as _dt
import json
import os
import sys

import jinja2
import tokenizers
import transformers
import transformers.utils.chat_template_utils as ctu
from transformers import AutoTokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOKENIZERS_DIR = os.path.join(ROOT, ".cache", "tokenizers")
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "text")
NAMES = ["qwen3", "llama3", "llama3_1", "gemma3"]

PINNED_NOW = _dt.datetime(2024, 7, 26, 9, 30, 5)


class _PinnedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return PINNED_NOW


# transformers' strftime_now calls `datetime.now()` through this module global.
ctu.datetime = _PinnedDatetime

CORPUS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. It's a test; don't panic.",
    "",
    " ",
    "  leading spaces and trailing spaces   ",
    "Numbers: 0 7 42 1234567890 3.14159 -273.15 1e-9 0x1F 1,000,000",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet v: Vec<u32> = (0..10).map(|x| x * x).collect();\n\tprintln!(\"{v:?}\");\n}\n",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "<html><body><p class=\"x\">Tags &amp; entities &lt;3</p></body></html>",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade \u00fcber Stra\u00dfe \u00e5ngstr\u00f6m \u00f1and\u00fa",
    "Decomposed accents: Cafe\u0301 nai\u0308ve e\u0300 o\u0302",
    "\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u6563\u6b65\u5427\u3002",
    "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3067\u3059\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3002",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4. \uc548\ub155\ud558\uc138\uc694!",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03ba\u03b5\u03af\u03bc\u03b5\u03bd\u03bf.",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd \u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "Emoji: \U0001f600 \U0001f680 \U0001f44d\U0001f3fd \U0001f1ef\U0001f1f5 \u2764\ufe0f",
    "ZWJ family \U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 and \U0001f3f3\ufe0f\u200d\U0001f308 and \U0001f9d1\U0001f3fb\u200d\U0001f4bb",
    "Rare: \U00020000\U0002a6d6 \U00010000 \U0001d4d7\U0001d4ee\U0001d4f5 \u2603 \u00a7\u00b6 \ufffd",
    "long     whitespace          runs                              here",
    "tabs\tand\t\ttabs\t\t\t\tand newlines\n\n\n\nand\r\nwindows\r\n",
    "\n\n\n",
    "\t \t \n \n",
    "mixed: English, \u4e2d\u6587, \u0639\u0631\u0628\u064a, \U0001f600, caf\u00e9, code `x += 1`",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<bos>text after bos<eos> and <pad> <unk>",
    "<|endoftext|> <think>reasoning</think> answer",
    "URLs: https://example.com/path?q=1&r=2#frag and mail@example.org",
    "Repeated: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!!!!! ...........",
    "I'm, you're, they've, we'll, he'd, it's, DON'T, Y'ALL",
    "Math: \u2200x\u2208\u211d, x\u00b2 \u2265 0; \u222b\u2080^\u221e e^{-x} dx = 1; \u03c0 \u2248 3.14",
]

SYSTEM = "You are a helpful assistant. Answer briefly."

CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is the capital of France?"}],
    "system_single": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "multi": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about \u732b (cats) \U0001f431."},
    ],
    "system_multi": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Translate 'good morning' to French."},
        {"role": "assistant", "content": "Bonjour."},
        {"role": "user", "content": "  And to Japanese?  \n"},
    ],
    "ends_with_assistant": [
        {"role": "user", "content": "Say OK."},
        {"role": "assistant", "content": "OK."},
    ],
    "extra_keys": [
        {"role": "user", "content": "Hello from Alice", "name": "alice", "id": 7},
        {"role": "assistant", "content": "Hi Alice", "name": "bot"},
        {"role": "user", "content": "Bye"},
    ],
    "whitespace_unicode": [
        {"role": "system", "content": "\n  Sys with spaces \t\n"},
        {"role": "user", "content": "\n\nCaf\u00e9 \u4e2d\u6587 \U0001f469\u200d\U0001f469\u200d\U0001f467\n\n"},
    ],
}

QWEN_THINKING = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "<think>\nSimple arithmetic.\n</think>\n\n4"},
    {"role": "user", "content": "And 3+3?"},
]

GEMMA_PARTS = [
    {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
    {"role": "user", "content": [{"type": "text", "text": "  Describe this.  "}]},
]

BAD_ALTERNATION = [
    {"role": "user", "content": "one"},
    {"role": "user", "content": "two"},
]

# Llama 3.2's published chat template (model data): it reads the clock through
# strftime_now, prints tools with tojson(indent=4) and raises on bad input.
LLAMA32_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# Exercises the Jinja features and Python string methods that chat templates use.
FEATURES_TEMPLATE = r"""{%- set ns = namespace(count=0, roles=[]) -%}
{%- for m in messages -%}
{%- if m.role == 'system' %}{% continue %}{% endif -%}
{%- set ns.count = ns.count + 1 -%}
[{{ loop.index }}/{{ loop.length }} {{ loop.first }} {{ loop.last }}] {{ m.role | upper }}: {{ m.content.strip() }}|{{ m.content.lstrip().rstrip('!?') }}|{{ m.content.split(' ')[0] }}|{{ m.content.split() | length }}|{{ m.content.startswith('Hi') }}|{{ m.content.endswith('?') }}|{{ m.content.replace('a', 'A') }}|{{ m.content | length }}|{{ m.content.lower() }}|{{ m.content.title() }}|{{ m.content.find('o') }}|{{ m.content[1:4] }}|{{ m.content[::-1] }}
{% if ns.count >= 3 %}{% break %}{% endif -%}
{%- endfor -%}
count={{ ns.count }} roles={{ messages | map(attribute='role') | join(',') }} users={{ messages | selectattr('role', 'equalto', 'user') | list | length }}
{{ tools | tojson }}
{{ tools | tojson(indent=2) }}
{{ {"f": 1.5, "i": 3, "big": 1e20, "small": 0.0001, "tiny": 0.00001, "neg": -2.0, "n": none, "t": true, "s": "\u00e9\u4e2d \"q\" \\ \t\n </s> & '"} | tojson }}
{%- for k, v in meta.items() %} {{ k }}={{ v }}{% endfor %}
{{ none }} {{ true }} {{ false }} {{ 2.5 }} {{ 10 // 3 }} {{ 7 / 2 }} {{ [1, 'a', none, true] }} {{ {'k': 'v'} }}
{{ meta.get('missing', 'dflt') }} {{ meta.keys() | list | length }} {{ 'x' if enable_thinking is defined else 'y' }} {{ undefined_var is defined }}
{%- if add_generation_prompt %}
GEN{{ '\n' }}
{%- endif %}
"""

FEATURES_MESSAGES = [
    {"role": "system", "content": "ignored system"},
    {"role": "user", "content": "  Hi there, how are you?  "},
    {"role": "assistant", "content": "Fine, thanks! And you?!"},
    {"role": "user", "content": "Great \u2014 caf\u00e9 \u4e2d\u6587 \U0001f600"},
    {"role": "assistant", "content": "never shown"},
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city \u2014 in \u00b0C.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                },
                "required": ["city"],
            },
        },
    }
]

TOOL_CALL_CONVERSATION = [
    {"role": "system", "content": "Use tools when needed."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}
        ],
    },
    {"role": "tool", "content": {"temperature": 21.5, "unit": "\u00b0C"}},
]


def render(tok, messages, add_generation_prompt, kwargs, template=None):
    """Render with transformers; return (rendered, error)."""
    try:
        out = tok.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            chat_template=template,
            **kwargs,
        )
        return out, None
    except jinja2.exceptions.TemplateError as e:
        return None, str(e)


def chat_cases(name):
    cases = []
    for conv_name, messages in CONVERSATIONS.items():
        for agp in (False, True):
            cases.append((f"{conv_name}/agp={agp}", messages, agp, {}, None, None))
    if name == "qwen3":
        for agp in (False, True):
            cases.append((f"thinking_history/agp={agp}", QWEN_THINKING, agp, {}, None, None))
        for conv_name in ("single", "system_multi"):
            cases.append(
                (f"{conv_name}/no_thinking", CONVERSATIONS[conv_name], True, {"enable_thinking": False}, None, None)
            )
        cases.append(("thinking_history/no_thinking", QWEN_THINKING, True, {"enable_thinking": False}, None, None))
        cases.append(("tools", TOOL_CALL_CONVERSATION[:2], True, {"tools": TOOLS}, None, None))
    if name == "gemma3":
        cases.append(("content_parts", GEMMA_PARTS, True, {}, None, None))
        cases.append(("bad_alternation", BAD_ALTERNATION, True, {}, None, None))
    if name == "llama3_1":
        for agp in (False, True):
            cases.append((f"llama32/system_multi/agp={agp}", CONVERSATIONS["system_multi"], agp, {}, "llama32", None))
        cases.append(("llama32/tools", TOOL_CALL_CONVERSATION, True, {"tools": TOOLS}, "llama32", None))
        cases.append(
            ("llama32/tools_in_system", TOOL_CALL_CONVERSATION, True,
             {"tools": TOOLS, "tools_in_user_message": False}, "llama32", None)
        )
        cases.append(
            ("llama32/date_string", CONVERSATIONS["single"], True, {"date_string": "01 Jan 2030"}, "llama32", None)
        )
        two_calls = TOOL_CALL_CONVERSATION[:2] + [
            {"role": "assistant", "tool_calls": TOOL_CALL_CONVERSATION[2]["tool_calls"] * 2}
        ]
        cases.append(("llama32/two_tool_calls", two_calls, True, {}, "llama32", None))
        cases.append(
            ("features", FEATURES_MESSAGES, True, {"tools": TOOLS, "meta": {"b": 2, "a": "x\u00e9"}}, "features", None)
        )
        cases.append(
            ("features/thinking", FEATURES_MESSAGES[:3], False,
             {"enable_thinking": True, "meta": {"z": None}}, "features", None)
        )
    return cases


TEMPLATES = {"llama32": LLAMA32_TEMPLATE, "features": FEATURES_TEMPLATE}


def main():
    missing = [n for n in NAMES if not os.path.exists(os.path.join(TOKENIZERS_DIR, n, "tokenizer.json"))]
    if missing:
        sys.exit(f"missing tokenizers {missing}: run scripts/fetch-tokenizers first")
    os.makedirs(OUT_DIR, exist_ok=True)
    versions = {
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
    }
    write(
        "corpus.json",
        {
            "versions": versions,
            "lines": CORPUS,
            "templates": TEMPLATES,
            "pinned_now": PINNED_NOW.isoformat(),
        },
    )
    for name in NAMES:
        d = os.path.join(TOKENIZERS_DIR, name)
        raw = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        hf = AutoTokenizer.from_pretrained(d)
        encode = []
        for i, text in enumerate(CORPUS):
            ids = raw.encode(text, add_special_tokens=True).ids
            plain = raw.encode(text, add_special_tokens=False).ids
            hf_ids = hf(text)["input_ids"]
            assert hf_ids == ids, f"{name}: transformers and tokenizers disagree on line {i}"
            encode.append(
                {
                    "line": i,
                    "ids": ids,
                    "ids_no_special": plain,
                    "decode": raw.decode(ids, skip_special_tokens=True),
                    "decode_keep_special": raw.decode(ids, skip_special_tokens=False),
                }
            )
        batch = raw.encode_batch(CORPUS, add_special_tokens=True)
        assert [e.ids for e in batch] == [e["ids"] for e in encode]

        chats = []
        for case, messages, agp, kwargs, template_key, _ in chat_cases(name):
            template = TEMPLATES[template_key] if template_key else None
            rendered, error = render(hf, messages, agp, kwargs, template)
            entry = {
                "case": case,
                "template": template_key,
                "messages": messages,
                "add_generation_prompt": agp,
                "kwargs": kwargs,
                "rendered": rendered,
                "error": error,
            }
            if rendered is not None:
                # apply_chat_template(tokenize=True) encodes without special tokens.
                entry["ids"] = hf(rendered, add_special_tokens=False)["input_ids"]
            chats.append(entry)

        write(
            f"{name}.json",
            {
                "versions": versions,
                "tokenizer": name,
                "specials": {
                    "bos_token": hf.bos_token,
                    "bos_id": hf.bos_token_id,
                    "eos_token": hf.eos_token,
                    "eos_id": hf.eos_token_id,
                    "pad_token": hf.pad_token,
                    "pad_id": hf.pad_token_id,
                    "vocab_size": raw.get_vocab_size(with_added_tokens=True),
                },
                "encode": encode,
                "chat": chats,
            },
        )


def write(fname, obj):
    path = os.path.join(OUT_DIR, fname)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
