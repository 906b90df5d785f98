"""A bounded load test of a gomlx server on loopback: CLIENTS concurrent streaming
chats (the official `openai` client, asyncio), each checked against its own greedy
output measured alone first; none lost, cut short or mixed with another's. MLX
active memory (from /metrics) must come back to its level before the burst.

    python load.py BASE_URL MODEL [CLIENTS] [MAX_TOKENS]
"""
import asyncio
import sys
import time
import urllib.request

import openai


def metric(base: str, name: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def question(i: int) -> list:
    # Distinct prompts, so a mixed-up stream shows as a mismatch.
    return [{"role": "user", "content": f"Write one short sentence about the number {i}."}]


async def stream_one(client: openai.AsyncOpenAI, model: str, i: int, max_tokens: int) -> tuple:
    t0 = time.perf_counter()
    ttft = None
    pieces = []
    finish = None
    stream = await client.chat.completions.create(model=model, messages=question(i), stream=True, temperature=0, max_tokens=max_tokens)
    async for chunk in stream:
        for c in chunk.choices:
            if c.delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                pieces.append(c.delta.content)
            finish = c.finish_reason or finish
    return "".join(pieces), finish, ttft


async def main() -> None:
    base, model = sys.argv[1], sys.argv[2]
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=600)
    sync = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=600)
    # Alone, one after another: the expected output of each client.
    t = time.perf_counter()
    alone = []
    for i in range(clients):
        r = sync.chat.completions.create(model=model, messages=question(i), temperature=0, max_tokens=max_tokens)
        alone.append((r.choices[0].message.content, r.choices[0].finish_reason))
    solo_s = time.perf_counter() - t
    base_active = metric(base, "gomlx_memory_active_bytes")
    base_rss = metric(base, "gomlx_process_resident_bytes")
    t = time.perf_counter()
    results = await asyncio.wait_for(asyncio.gather(*(stream_one(client, model, i, max_tokens) for i in range(clients))), timeout=900)
    burst_s = time.perf_counter() - t
    bad = [(i, got, want) for i, (got, want) in enumerate(zip(results, alone)) if (got[0], got[1]) != want]
    for i, got, want in bad[:5]:
        print(f"client {i}: streamed {got[:2]!r}, alone {want!r}", file=sys.stderr)
    assert not bad, f"{len(bad)} of {clients} streams differ from their solo output"
    assert metric(base, "gomlx_requests_in_flight") == 0
    # Every row's KV cache is freed when its generation ends.
    active = metric(base, "gomlx_memory_active_bytes")
    assert abs(active - base_active) <= 1 << 20, f"MLX active memory {base_active:.0f} -> {active:.0f} bytes"
    # The process too, once idle (the server trims the heap when idle): within 96 MiB.
    deadline = time.time() + 10
    while (rss := metric(base, "gomlx_process_resident_bytes")) > base_rss + (96 << 20) and time.time() < deadline:
        time.sleep(0.25)
    assert rss <= base_rss + (96 << 20), f"resident memory {base_rss / 2**20:.0f} -> {rss / 2**20:.0f} MiB after the burst"
    ttfts = sorted(r[2] for r in results if r[2] is not None)
    print(
        f"load: {clients} concurrent streams all equal their solo outputs; {clients} requests in {burst_s:.1f} s "
        f"(alone, one by one: {solo_s:.1f} s); TTFT p50 {ttfts[len(ttfts) // 2]:.2f} s; "
        f"MLX active {base_active / 2**20:.1f} -> {active / 2**20:.1f} MiB, RSS {base_rss / 2**20:.0f} -> {rss / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    asyncio.run(main())
