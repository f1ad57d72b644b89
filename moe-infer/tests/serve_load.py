"""Load test of `moe-infer serve` on loopback: N streaming clients at once against the same N
requests served one at a time, through the `openai` client.

    python3 serve_load.py BASE_URL MODEL_NAME [--clients 32] [--tokens 64] [--timeout 600]

Every request is greedy with `ignore_eos`, so each generates exactly --tokens tokens. Checks that
every concurrent request completes without error and returns the text it returns alone, then
prints one JSON line: tokens/s one at a time and all at once, their ratio, and the concurrent
requests' p50/p99 latency and time to first token. Bounded: a fixed number of requests, each with
a timeout. Exits non-zero on any failed check.
"""

import argparse
import json
import statistics
import sys
import threading
import time

import openai

parser = argparse.ArgumentParser()
parser.add_argument("base_url")
parser.add_argument("model")
parser.add_argument("--clients", type=int, default=32)
parser.add_argument("--tokens", type=int, default=64)
parser.add_argument("--timeout", type=float, default=600)
args = parser.parse_args()

client = openai.OpenAI(base_url=args.base_url + "/v1", api_key="none", max_retries=0, timeout=args.timeout)
prompts = [f"Request {i}: sort the numbers {i % 7} {(3 * i) % 11} {(5 * i) % 13}" for i in range(args.clients)]


def run(prompt):
    """(text, completion tokens, seconds to first token, seconds in all) of one streamed request."""
    started = time.perf_counter()
    first = None
    pieces = []
    usage = None
    stream = client.completions.create(
        model=args.model,
        prompt=prompt,
        max_tokens=args.tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            # The server sends its first chunk with the first generated token, even when that
            # token's text is not complete yet (part of a UTF-8 character): time to first token.
            if first is None:
                first = time.perf_counter() - started
            pieces.append(choice.text)
    return "".join(pieces), usage.completion_tokens, first or 0.0, time.perf_counter() - started


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# One at a time.
started = time.perf_counter()
alone = [run(p) for p in prompts]
sequential_secs = time.perf_counter() - started

# All at once.
results = [None] * len(prompts)
errors = []


def worker(i):
    try:
        results[i] = run(prompts[i])
    except Exception as e:  # reported below, with the request's index
        errors.append(f"request {i}: {e!r}")


threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
started = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join(args.timeout)
concurrent_secs = time.perf_counter() - started

failures = list(errors)
for i, (a, r) in enumerate(zip(alone, results)):
    if r is None:
        failures.append(f"request {i} did not complete")
    elif r[0] != a[0] or r[1] != a[1]:
        failures.append(f"request {i}: {r[0]!r} ({r[1]} tokens) at once, {a[0]!r} ({a[1]} tokens) alone")
    elif r[1] != args.tokens:
        failures.append(f"request {i}: {r[1]} tokens, not {args.tokens}")
if failures:
    print("\n".join(failures[:10]), file=sys.stderr)
    sys.exit(1)

tokens = sum(r[1] for r in results)
latencies = [r[3] for r in results]
first = [r[2] for r in results]
report = {
    "clients": args.clients,
    "tokens_per_request": args.tokens,
    "one_at_a_time_tokens_per_sec": round(tokens / sequential_secs, 1),
    "concurrent_tokens_per_sec": round(tokens / concurrent_secs, 1),
    "speedup": round(sequential_secs / concurrent_secs, 2),
    "latency_p50_s": round(statistics.median(latencies), 3),
    "latency_p99_s": round(percentile(latencies, 99), 3),
    "first_token_p50_s": round(statistics.median(first), 3),
    "first_token_p99_s": round(percentile(first, 99), 3),
}
print(json.dumps(report))
