"""Streams a chat from a gomlx server through the official `openai` package, unchanged;
structured output (`response_format` from a Pydantic model, parsed and validated by the
client) and, against TOOLS_BASE_URL (the same model served with a chat template that
renders tools), a tool round trip: a forced call, the tool's result back, an answer.

    python openai_client.py BASE_URL MODEL [TOOLS_BASE_URL]
"""
import json
import sys
from typing import Annotated, Literal

import openai
import pydantic


class City(pydantic.BaseModel):
    """Every string bounded, so a sampled reply completes within max_tokens."""

    name: str = pydantic.Field(max_length=20)
    country: Literal["France", "Germany", "Italy"]
    population: int = pydantic.Field(ge=0, le=100_000_000)
    landmarks: list[Annotated[str, pydantic.Field(max_length=20)]] = pydantic.Field(max_length=3)


class WeatherArgs(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    city: str = pydantic.Field(max_length=30)
    unit: Literal["celsius", "fahrenheit"] | None = None


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def structured(client: openai.OpenAI, model: str) -> None:
    question = [{"role": "user", "content": "Describe a famous city."}]
    # The client turns the Pydantic model into a strict json_schema response_format and parses the reply with it.
    for seed in (1, 2):
        r = client.chat.completions.parse(model=model, messages=question, response_format=City, temperature=1.0, seed=seed, max_tokens=200)
        c = r.choices[0]
        assert c.finish_reason == "stop", c
        assert isinstance(c.message.parsed, City), c.message
    # The raw form, streamed: the deltas join into JSON the model validates.
    schema = {"name": "city", "schema": City.model_json_schema(), "strict": True}
    stream = client.chat.completions.create(
        model=model, messages=question, response_format={"type": "json_schema", "json_schema": schema}, temperature=1.0, seed=3, max_tokens=200, stream=True
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    City.model_validate_json(text)
    # json_object.
    r = client.chat.completions.create(model=model, messages=question, response_format={"type": "json_object"}, temperature=0, max_tokens=200)
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict), r.choices[0].message.content
    # A schema the server cannot enforce is the client's BadRequestError, naming the field.
    try:
        bad = {"name": "x", "schema": {"type": "string", "format": "no-such-format"}}
        client.chat.completions.create(model=model, messages=question, response_format={"type": "json_schema", "json_schema": bad})
        raise AssertionError("an unsupported schema was accepted")
    except openai.BadRequestError as e:
        assert "response_format.json_schema.schema" in str(e), e
    print(f"openai {openai.__version__}: response_format json_schema (parse), streamed and json_object: ok")


def tools(client: openai.OpenAI, model: str) -> None:
    msgs: list = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    r1 = client.chat.completions.create(model=model, messages=msgs, tools=[WEATHER_TOOL], tool_choice=forced, temperature=1.0, seed=1, max_tokens=120)
    c = r1.choices[0]
    assert c.finish_reason == "tool_calls", c
    assert c.message.tool_calls and len(c.message.tool_calls) == 1, c.message
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather", call
    args = WeatherArgs.model_validate_json(call.function.arguments)

    # Streamed: the deltas, accumulated by index as the client's users do, give a call too.
    stream = client.chat.completions.create(
        model=model, messages=msgs, tools=[WEATHER_TOOL], tool_choice="required", temperature=1.0, seed=2, max_tokens=120, stream=True
    )
    acc: dict[int, dict] = {}
    finish = None
    for ch in stream:
        for choice in ch.choices:
            for d in choice.delta.tool_calls or []:
                a = acc.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                a["id"] += d.id or ""
                a["name"] += (d.function and d.function.name) or ""
                a["arguments"] += (d.function and d.function.arguments) or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and list(acc) == [0], (finish, acc)
    assert acc[0]["name"] == "get_weather" and acc[0]["id"], acc
    WeatherArgs.model_validate_json(acc[0]["arguments"])

    # The call (the client's own message object) and the tool's result go back; the model answers.
    msgs.append(c.message)
    msgs.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"city": args.city, "sky": "sunny", "celsius": 24})})
    r2 = client.chat.completions.create(model=model, messages=msgs, tools=[WEATHER_TOOL], tool_choice="none", temperature=0, max_tokens=32)
    answer = r2.choices[0]
    assert answer.finish_reason in ("stop", "length") and not answer.message.tool_calls, answer
    assert answer.message.content, answer
    # The call and the result are in the prompt: it is longer than the question's alone by at least the result's text.
    r0 = client.chat.completions.create(model=model, messages=msgs[:1], tools=[WEATHER_TOOL], tool_choice="none", temperature=0, max_tokens=1)
    assert r2.usage.prompt_tokens >= r0.usage.prompt_tokens + 15, (r0.usage, r2.usage)
    try:
        client.chat.completions.create(model=model, messages=msgs[:1], tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "nope"}})
        raise AssertionError("an unknown tool_choice was accepted")
    except openai.BadRequestError as e:
        assert "tool_choice.function.name" in str(e), e
    print(f"openai {openai.__version__}: tools round trip (forced call {call.function.name}({call.function.arguments}), streamed call, answer {answer.message.content!r}): ok")


def main() -> None:
    base, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
    ids = [m.id for m in client.models.list()]
    assert model in ids, ids

    question = [{"role": "user", "content": "What is the capital of France?"}]
    stream = client.chat.completions.create(
        model=model, messages=question, stream=True, temperature=0, max_tokens=24, stream_options={"include_usage": True}
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            finish = c.finish_reason or finish
        usage = chunk.usage or usage
    text = "".join(pieces)
    assert "Paris" in text, text
    assert finish in ("stop", "length"), finish
    assert usage is not None and usage.completion_tokens >= 1 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage

    # The same request without streaming gives the same text and counts.
    full = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=24)
    assert full.choices[0].message.content == text, (full.choices[0].message.content, text)
    assert full.usage.completion_tokens == usage.completion_tokens, (full.usage, usage)

    # Bad input comes back as the client's own exception, naming the field.
    try:
        client.chat.completions.create(model=model, messages=question, temperature=5)
        raise AssertionError("temperature 5 was accepted")
    except openai.BadRequestError as e:
        assert "temperature" in str(e), e
    try:
        client.chat.completions.create(model="no-such-model", messages=question)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError:
        pass
    print(f"openai {openai.__version__}: {len(pieces)} chunks, {usage.completion_tokens} tokens: {text!r}")

    structured(client, model)
    if len(sys.argv) > 3:
        tools(openai.OpenAI(base_url=f"{sys.argv[3]}/v1", api_key="unused", max_retries=0, timeout=300), model)


if __name__ == "__main__":
    main()
