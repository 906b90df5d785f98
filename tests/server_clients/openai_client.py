"""Streams a chat from a gomlx server through the official `openai` package, unchanged.

    python openai_client.py BASE_URL MODEL
"""
import sys

import openai


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


if __name__ == "__main__":
    main()
