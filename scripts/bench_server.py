"""Load generator for scripts/bench-server: the same client code (the official `openai`
package, asyncio, streaming) against any OpenAI-compatible server. For each number of
concurrent clients it prints one JSON line: requests/s, aggregate generated tokens/s and
time to first token p50/p99 over every request.

    python bench_server.py LABEL BASE_URL MODEL CLIENTS[,CLIENTS...] [MAX_TOKENS] [REQUESTS_PER_CLIENT]

JSON lines go to stderr, Markdown rows (LABEL first) to stdout.
"""
import asyncio
import json
import sys
import time

import openai


def prompt(i: int) -> list:
    # Distinct prompts (no shared-prefix shortcut between requests) of similar length.
    return [{"role": "user", "content": f"Request {i}: write a short story about a robot who learns to paint."}]


async def one(client, model: str, i: int, max_tokens: int) -> tuple:
    t0 = time.perf_counter()
    ttft, chunks, usage = None, 0, None
    stream = await client.chat.completions.create(
        model=model, messages=prompt(i), stream=True, temperature=0, max_tokens=max_tokens, stream_options={"include_usage": True}
    )
    async for c in stream:
        if c.choices and c.choices[0].delta.content:
            ttft = ttft if ttft is not None else time.perf_counter() - t0
            chunks += 1
        if getattr(c, "usage", None):
            usage = c.usage
    # A server that reports no usage is counted by its content chunks (one token each).
    tokens = usage.completion_tokens if usage else chunks
    return ttft if ttft is not None else time.perf_counter() - t0, tokens


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def level(base: str, model: str, clients: int, max_tokens: int, per_client: int) -> dict:
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=3600)
    results = []

    async def worker(w: int) -> None:
        for k in range(per_client):
            results.append(await one(client, model, w * per_client + k, max_tokens))

    t = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    wall = time.perf_counter() - t
    ttfts = [r[0] for r in results]
    tokens = sum(r[1] for r in results)
    return {
        "clients": clients, "requests": len(results), "wall_s": round(wall, 2), "requests_per_s": round(len(results) / wall, 3),
        "tokens": tokens, "tokens_per_s": round(tokens / wall, 1), "ttft_p50_s": round(pct(ttfts, 50), 3), "ttft_p99_s": round(pct(ttfts, 99), 3),
    }


async def main() -> None:
    label, base, model = sys.argv[1], sys.argv[2], sys.argv[3]
    levels = [int(x) for x in sys.argv[4].split(",")]
    max_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 64
    per_client = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    await level(base, model, 1, 4, 1)  # warm-up: load, first-call costs
    for c in levels:
        r = await level(base, model, c, max_tokens, per_client)
        print(json.dumps(r), file=sys.stderr, flush=True)
        print(
            f"| {label} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | {r['ttft_p50_s']:.2f} | {r['ttft_p99_s']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
