"""Load generator for scripts/bench-server: one client code (the standard library only,
so it also runs on machines without package registries) against any OpenAI-compatible
server: streaming chat completions over HTTP/1.1, one thread per concurrent client. For
each number of clients it prints requests/s, aggregate generated tokens/s and time to
first token p50/p99 over every request.

    python bench_server.py LABEL BASE_URL MODEL CLIENTS[,CLIENTS...] [MAX_TOKENS] [REQUESTS_PER_CLIENT]

JSON lines go to stderr, Markdown rows (LABEL first) to stdout.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse


def prompt(i: int) -> list:
    # Distinct prompts (no shared-prefix shortcut between requests) of similar length.
    return [{"role": "user", "content": f"Request {i}: write a short story about a robot who learns to paint."}]


def one(base: str, model: str, i: int, max_tokens: int) -> tuple:
    """One streamed chat: (time to first content, generated tokens)."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
    body = {"model": model, "messages": prompt(i), "stream": True, "temperature": 0, "max_tokens": max_tokens, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"{base}: {r.status} {r.read()[:300]!r}")
    ttft, chunks, usage = None, 0, None
    for raw in r:
        line = raw.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        c = json.loads(line[6:])
        for ch in c.get("choices") or []:
            if (ch.get("delta") or {}).get("content"):
                ttft = ttft if ttft is not None else time.perf_counter() - t0
                chunks += 1
        usage = c.get("usage") or usage
    conn.close()
    # A server that reports no usage is counted by its content chunks (one token each).
    tokens = usage["completion_tokens"] if usage else chunks
    return ttft if ttft is not None else time.perf_counter() - t0, tokens


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def level(base: str, model: str, clients: int, max_tokens: int, per_client: int) -> dict:
    results, errors = [], []

    def worker(w: int) -> None:
        try:
            for k in range(per_client):
                results.append(one(base, model, w * per_client + k, max_tokens))
        except Exception as e:  # reported after the level
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    if errors:
        raise errors[0]
    ttfts = [r[0] for r in results]
    tokens = sum(r[1] for r in results)
    return {
        "clients": clients, "requests": len(results), "wall_s": round(wall, 2), "requests_per_s": round(len(results) / wall, 3),
        "tokens": tokens, "tokens_per_s": round(tokens / wall, 1), "ttft_p50_s": round(pct(ttfts, 50), 3), "ttft_p99_s": round(pct(ttfts, 99), 3),
    }


def main() -> None:
    label, base, model = sys.argv[1], sys.argv[2], sys.argv[3]
    levels = [int(x) for x in sys.argv[4].split(",")]
    max_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 64
    per_client = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    level(base, model, 1, 4, 1)  # warm-up: first-call costs
    for c in levels:
        r = level(base, model, c, max_tokens, per_client)
        print(json.dumps(r), file=sys.stderr, flush=True)
        print(
            f"| {label} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | {r['ttft_p50_s']:.2f} | {r['ttft_p99_s']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
