"""The real `lstmlm serve` process under a bounded loopback load: no 5xx, bounded memory."""

import json
import random
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from helpers import tiny_config, write_corpus  # noqa: E402
from lstmlm.training import start_run  # noqa: E402

REQUESTS = 200
CONCURRENCY = 20
MAX_PROMPT = 500
MAX_RSS_GROWTH_MB = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load")
    run = tmp / "tiny"
    start_run(tiny_config(write_corpus(tmp / "c.txt"), epochs=1), run)
    port = free_port()
    # Generous limits: no rate limit, a queue deep enough for every concurrent client.
    cmd = [sys.executable, "-m", "lstmlm", "serve", str(run), "--port", str(port)]
    cmd += ["--rate", "0", "--max-concurrent", "2", "--max-queue", str(2 * CONCURRENCY)]
    cmd += ["--max-prompt-chars", str(MAX_PROMPT), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "server did not start"
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def good_request(client: httpx.Client, url: str, i: int) -> tuple[str, int, str]:
    """One valid request of the mix; returns (kind, status, problem or "")."""
    rng = random.Random(i)
    prompt = " ".join(rng.choice(["the cat", "a dog", "she", "my friend"]) for _ in range(3))
    kind = ("generate", "score", "stream", "beams")[i % 4]
    body = {"model": "tiny", "prompt": prompt, "max_new_tokens": rng.randint(5, 30), "seed": i}
    if kind == "generate":
        r = client.post(f"{url}/v1/generate", json=body)
        ok = r.status_code != 200 or r.json()["tokens"] == body["max_new_tokens"]
        return kind, r.status_code, "" if ok else r.text
    if kind == "score":
        r = client.post(f"{url}/v1/score", json={"model": "tiny", "text": prompt + "\n" + prompt})
        ok = r.status_code != 200 or r.json()["ppl"] > 1
        return kind, r.status_code, "" if ok else r.text
    if kind == "beams":
        r = client.post(f"{url}/v1/generate", json={**body, "num_beams": 2, "prompt": [prompt]})
        ok = r.status_code != 200 or r.json()["results"][0]["tokens"] == body["max_new_tokens"]
        return kind, r.status_code, "" if ok else r.text
    req = client.build_request("POST", f"{url}/v1/stream", json=body)
    r = client.send(req, stream=True)
    try:
        text = r.read().decode()
    finally:
        r.close()
    last = text.strip().split("\n\n")[-1] if text.strip() else ""
    ok = r.status_code != 200 or last.startswith("event: done")
    return kind, r.status_code, "" if ok else text[-300:]


JSON = {"content-type": "application/json"}
BAD_REQUESTS = [  # (method, path, kwargs, expected status)
    ("POST", "/v1/generate", {"json": {"model": "tiny", "prompt": "x " * MAX_PROMPT}}, 413),
    ("POST", "/v1/generate", {"content": b"{" + b" " * 400_000 + b"}", "headers": JSON}, 413),
    ("POST", "/v1/score", {"json": {"model": "tiny", "text": "the cat " * 5000}}, 413),
    ("POST", "/v1/generate", {"content": b'{"model": "tiny",', "headers": JSON}, 422),
    ("POST", "/v1/generate", {"content": b"\xff\xfe\x00garbage", "headers": JSON}, 422),
    ("POST", "/v1/generate", {"json": ["not", "an", "object"]}, 422),
    ("POST", "/v1/generate", {"json": {"model": "tiny", "temprature": 1}}, 422),
    ("POST", "/v1/generate", {"json": {"model": "tiny", "max_new_tokens": 10**9}}, 422),
    ("POST", "/v1/generate", {"json": {"model": "tiny", "temperature": -1}}, 422),
    ("POST", "/v1/generate", {"json": {"model": "tiny", "seed": 2**70}}, 422),
    ("POST", "/v1/stream", {"json": {"model": "tiny", "top_k": -3}}, 422),
    ("POST", "/v1/stream", {"json": {"model": "tiny", "prompt": ["a", "b"]}}, 422),
    ("POST", "/v1/score", {"json": {"model": "tiny", "text": 5}}, 422),
    ("POST", "/v1/score", {"json": {"model": "tiny"}}, 422),
    ("POST", "/v1/generate", {"json": {"model": "../../etc/passwd", "prompt": "x"}}, 404),
    ("GET", "/v1/models/nope/curves", {}, 404),
]


def bad_request(client: httpx.Client, url: str, j: int) -> tuple[str, int, int]:
    method, path, kw, expected = BAD_REQUESTS[j % len(BAD_REQUESTS)]
    r = client.request(method, f"{url}{path}", **kw)
    if r.status_code < 500:
        assert "error" in r.json()  # errors are JSON, whatever the input
    return f"{method} {path}", r.status_code, expected


def test_200_mixed_requests_20_at_once_all_succeed_with_bounded_memory(server):
    url, proc = server
    started = time.monotonic()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    with (
        httpx.Client(timeout=30, limits=limits) as client,
        ThreadPoolExecutor(CONCURRENCY) as pool,
    ):
        for i in range(8):  # warm up: first calls allocate the model's buffers
            assert good_request(client, url, i)[1] == 200
        rss_before = rss_mb(proc.pid)
        good = [pool.submit(good_request, client, url, i) for i in range(REQUESTS)]
        bad = [pool.submit(bad_request, client, url, j) for j in range(2 * len(BAD_REQUESTS))]
        done, pending = wait(good + bad, timeout=50)
        assert not pending, f"{len(pending)} requests did not finish in time"
        rss_after = rss_mb(proc.pid)
        results = [f.result() for f in good]
        failures = [r for r in results if r[1] != 200 or r[2]]
        assert not failures, failures[:5]
        assert {k for k, _, _ in results} == {"generate", "score", "stream", "beams"}
        wrong = [(what, got, want) for what, got, want in (f.result() for f in bad) if got != want]
        assert not wrong, wrong
        # Still healthy, and nothing left running or waiting.
        assert client.get(f"{url}/v1/models").status_code == 200
    assert proc.poll() is None
    assert rss_after - rss_before < MAX_RSS_GROWTH_MB, (rss_before, rss_after)
    assert time.monotonic() - started < 55
    print(
        json.dumps(
            {
                "requests": REQUESTS + len(bad),
                "seconds": round(time.monotonic() - started, 1),
                "rss_before_mb": round(rss_before),
                "rss_after_mb": round(rss_after),
            }
        )
    )
