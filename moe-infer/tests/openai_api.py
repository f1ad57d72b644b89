"""`moe-infer serve` through the real `openai` Python client and through raw HTTP.

Run by tests/cli.rs against a server it started:
    python3 openai_api.py BASE_URL MODEL_NAME MAX_BODY_BYTES CONTEXT
Exits non-zero with the failed check's message.
"""

import http.client
import json
import socket
import sys
import time
import urllib.parse

import openai

BASE, MODEL, MAX_BODY, CONTEXT = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
URL = urllib.parse.urlparse(BASE)
client = openai.OpenAI(base_url=BASE + "/v1", api_key="none", max_retries=0, timeout=60)
checks = 0


def check(ok, what):
    global checks
    if not ok:
        raise AssertionError(what)
    checks += 1


def raw(method, path, body=None, headers=None):
    """(status, headers, parsed JSON body) of one plain HTTP request."""
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=60)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    text = response.read()
    conn.close()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return response.status, dict(response.getheaders()), parsed


# Models and health.
models = client.models.list()
check([m.id for m in models.data] == [MODEL], f"models: {models}")
status, _, body = raw("GET", "/health")
check(status == 200 and body["status"] == "ok", f"health: {status} {body}")

# Chat, whole and streamed: the same greedy text, and usage counts.
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Reverse the list 3 1 2"}]
whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
choice = whole.choices[0]
check(whole.object == "chat.completion" and choice.message.role == "assistant", f"chat: {whole}")
check(choice.finish_reason in ("stop", "length"), f"finish_reason: {choice.finish_reason}")
usage = whole.usage
check(0 < usage.completion_tokens <= 12 and usage.prompt_tokens > 5, f"usage: {usage}")
check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage total: {usage}")
stream = client.chat.completions.create(
    model=MODEL, messages=messages, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
)
chunks = list(stream)
check(all(c.object == "chat.completion.chunk" for c in chunks), "chunk objects")
check(chunks[0].choices[0].delta.role == "assistant", f"first chunk: {chunks[0]}")
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(streamed == choice.message.content, f"streamed {streamed!r} != whole {choice.message.content!r}")
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
check(finishes == [choice.finish_reason], f"stream finish reasons: {finishes}")
check(chunks[-1].choices == [] and chunks[-1].usage.total_tokens == usage.total_tokens, f"usage chunk: {chunks[-1]}")

# A conversation with an earlier answer goes through the template too.
turns = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": [{"type": "text", "text": "sort 2 1"}]},
]
multi = client.chat.completions.create(model=MODEL, messages=turns, max_tokens=4, temperature=0)
check(multi.usage.prompt_tokens > usage.prompt_tokens - 10, f"multi-turn prompt: {multi.usage}")

# Completions, whole and streamed.
args = dict(model=MODEL, prompt="Return a new list", max_tokens=20, temperature=0, extra_body={"ignore_eos": True})
text = client.completions.create(**args)
check(text.object == "text_completion" and text.usage.completion_tokens == 20, f"completion: {text}")
check(text.choices[0].finish_reason == "length", f"completion finish: {text.choices[0].finish_reason}")
pieces = [c.choices[0].text for c in client.completions.create(stream=True, **args)]
check("".join(pieces) == text.choices[0].text, f"streamed completion {pieces} != {text.choices[0].text!r}")
by_ids = client.completions.create(model=MODEL, prompt=[1, 20, 30, 40], max_tokens=3, temperature=0)
check(by_ids.usage.prompt_tokens == 4, f"token-id prompt: {by_ids.usage}")

# Stop strings: the text ends before the first occurrence, which is left out.
full = text.choices[0].text
stop = full[len(full) // 2 : len(full) // 2 + 3]
check(len(stop.strip()) > 0, f"no usable stop string in {full!r}")
stopped = client.completions.create(stop=[stop, "never-there"], **args)
check(stopped.choices[0].text == full[: full.find(stop)], f"stop {stop!r}: {stopped.choices[0].text!r} of {full!r}")
check(stopped.choices[0].finish_reason == "stop", "stop string finish reason")
streamed_stop = "".join(c.choices[0].text for c in client.completions.create(stop=stop, stream=True, **args))
check(streamed_stop == stopped.choices[0].text, f"streamed stop: {streamed_stop!r}")

# Seeded sampling is reproducible.
sampled = [
    client.completions.create(model=MODEL, prompt="Once", max_tokens=16, temperature=1.0, seed=7).choices[0].text
    for _ in range(2)
]
check(sampled[0] == sampled[1], f"seed 7 twice: {sampled}")

# Bad requests: OpenAI's error JSON with a 4xx status.
def bad(body, status, param=None, code=None, path="/v1/chat/completions", raw_body=None):
    got, headers, answer = raw("POST", path, raw_body if raw_body is not None else body)
    what = f"{body if raw_body is None else raw_body[:40]!r}: {got} {answer}"
    check(got == status, what)
    error = answer["error"]
    check(isinstance(error["message"], str) and error["message"] and "type" in error, what)
    if param is not None:
        check(error["param"] == param, what)
    if code is not None:
        check(error["code"] == code, what)
    return error


ok = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
bad(None, 400, raw_body=b'{"messages": [')
bad(None, 400, raw_body=b"not json at all")
bad({**ok, "messages": "hi"}, 400, param="messages")
bad({**ok, "temperature": "hot"}, 400, param="temperature")
bad({**ok, "max_tokens": -1}, 400, param="max_tokens")
bad({**ok, "temperature": 5}, 400, param="temperature")
bad({**ok, "max_tokens": 0}, 400, param="max_tokens")
bad({**ok, "max_tokens": 10**9}, 400, param="max_tokens", code="context_length_exceeded")
bad({**ok, "n": 3}, 400, param="n")
bad({**ok, "messages": []}, 400, param="messages")
bad({**ok, "messages": [{"role": "robot", "content": "hi"}]}, 400, param="messages[0].role")
bad({"model": MODEL}, 400, param="messages")
bad({**ok, "model": "gpt-4"}, 404, param="model", code="model_not_found")
bad({"prompt": list(range(5, 5 + CONTEXT + 10))}, 400, code="context_length_exceeded", path="/v1/completions")
bad({"prompt": [10**7]}, 400, param="prompt", path="/v1/completions")
bad({"prompt": ["a", "b"]}, 400, param="prompt", path="/v1/completions")
bad({**ok, "padding": "x" * (MAX_BODY + 1)}, 413)
status, _, answer = raw("GET", "/v1/nothing-here")
check(status == 404 and "error" in answer, f"unknown path: {status} {answer}")
try:
    client.chat.completions.create(model="gpt-4", messages=ok["messages"])
    check(False, "unknown model accepted")
except openai.NotFoundError as e:
    check(e.body["code"] == "model_not_found", f"client error body: {e.body}")
try:
    client.completions.create(model=MODEL, prompt="x", max_tokens=CONTEXT * 2)
    check(False, "max_tokens over the context accepted")
except openai.BadRequestError as e:
    check(e.body["code"] == "context_length_exceeded", f"client error body: {e.body}")

# A client that disconnects frees its slot at once (tests/cli.rs reads the log line).
request = json.dumps(
    {"model": MODEL, "prompt": "x", "max_tokens": CONTEXT - 8, "stream": True, "ignore_eos": True, "temperature": 0}
).encode()
sock = socket.create_connection((URL.hostname, URL.port), timeout=60)
sock.sendall(
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(request)}\r\n\r\n".encode()
    + request
)
received = b""
while b"data:" not in received:
    received += sock.recv(4096)
sock.close()
deadline = time.time() + 20
while raw("GET", "/health")[2]["active"] != 0:
    check(time.time() < deadline, "the disconnected request still runs")
    time.sleep(0.01)

print(f"openai_api.py: all {checks} checks hold")
