"""The web server, over real HTTP, and its page in a real (headless) Chromium."""

import json
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from conftest import write_corpus  # noqa: E402

from helpers import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    lowercase_config,
    serving,
    tiny_config,
    write_mixed_case_corpus,
)
from lstmlm.cli.main import main  # noqa: E402
from lstmlm.generation.text import held_back  # noqa: E402
from lstmlm.serving.app import create_app  # noqa: E402
from lstmlm.serving.limits import ServerLimits  # noqa: E402
from lstmlm.serving.models import load_models  # noqa: E402
from lstmlm.training import start_run  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("web")
    corpus = write_corpus(tmp / "corpus.txt")
    run = tmp / "tiny"
    start_run(tiny_config(corpus, epochs=3, lr=10.0), run)
    return run


@pytest.fixture(scope="module")
def models(run_dir):
    return load_models([run_dir])


@pytest.fixture(scope="module")
def base(models):
    with serving(create_app(models, ServerLimits(rate=0, max_prompt_chars=300))) as url:
        yield url


JSON = {"content-type": "application/json"}


def gen(base: str, **body) -> httpx.Response:
    return httpx.post(f"{base}/v1/generate", json={"model": "tiny", **body}, timeout=30)


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


# --- API ---------------------------------------------------------------------------


def test_models_lists_the_run_with_its_card(base, run_dir):
    r = httpx.get(f"{base}/v1/models")
    assert r.status_code == 200
    info = r.json()
    (card,) = info["models"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert card["id"] == "tiny" and card["level"] == "word" and card["metric"] == "ppl"
    assert card["summary"]["valid_ppl"] == pytest.approx(summary["valid_ppl"])
    assert card["params"] == summary["params"]
    assert info["limits"]["max_prompt_chars"] == 300 and info["precision"] == "fp32"
    assert {"stop_strings", "num_beams", "min_p", "typical_p"} <= set(info["sampling"])


def test_curves_come_from_metrics_jsonl(base, run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    epochs = [r for r in records if r["event"] == "epoch"]
    c = httpx.get(f"{base}/v1/models/tiny/curves").json()
    assert [p["epoch"] for p in c["valid"]] == [1, 2, 3]
    assert [p["loss"] for p in c["valid"]] == pytest.approx([r["valid_loss"] for r in epochs])
    xs = [p["epoch"] for p in c["train"]]
    assert len(xs) == sum(r["event"] == "progress" for r in records) and xs == sorted(xs)


def test_same_seed_gives_same_text(base):
    a = gen(base, prompt="the cat", seed=5, max_new_tokens=30).json()
    b = gen(base, prompt="the cat", seed=5, max_new_tokens=30).json()
    c = gen(base, prompt="the cat", seed=6, max_new_tokens=30).json()
    assert a["text"] == b["text"] and a["tokens"] == 30 and a["seed"] == 5
    assert a["text"] != c["text"]  # 30 tokens from a 25-word vocabulary: a clash is ~impossible
    assert a["text"].startswith(" ")  # "the cat" + " sees ..." for word level
    assert a["finish_reason"] == "length" and a["unknown"] == []


def test_unseeded_request_reports_its_seed_and_can_be_replayed(base):
    a = gen(base, prompt="a dog", max_new_tokens=15).json()
    b = gen(base, prompt="a dog", max_new_tokens=15, seed=a["seed"]).json()
    assert a["text"] == b["text"]


def test_stream_pieces_add_up_to_the_generated_text(base):
    body = {"model": "tiny", "prompt": "my friend", "seed": 11, "max_new_tokens": 25}
    with httpx.stream("POST", f"{base}/v1/stream", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("token") >= 10
    pieces = "".join(d["text"] for k, d in events if k == "token")
    done = events[-1][1]
    plain = gen(base, prompt="my friend", seed=11, max_new_tokens=25).json()
    assert pieces == done["text"] == plain["text"]
    # One stream route: the GET form of it is gone.
    assert httpx.get(f"{base}/v1/generate/stream", params=body, timeout=30).status_code == 404


def test_stop_string_ends_the_text_before_it(base):
    full = gen(base, prompt="the cat", seed=3, max_new_tokens=40).json()["text"]
    assert "\n" in full
    cut = gen(base, prompt="the cat", seed=3, max_new_tokens=40, stop=["\n"]).json()
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == full[: full.index("\n")]
    body = {"model": "tiny", "prompt": "the cat", "seed": 3, "max_new_tokens": 40, "stop": ["\n"]}
    with httpx.stream("POST", f"{base}/v1/stream", json=body, timeout=30) as r:
        events = sse_events(r.read().decode())
    assert "".join(d["text"] for k, d in events if k == "token") == cut["text"]


def test_held_back_keeps_only_a_possible_stop_start():
    assert held_back("the park", ("parking",)) == 4
    assert held_back("the par", ("park", "\n\n")) == 3
    assert held_back("the dog", ("park",)) == 0
    assert held_back("x\n", ("\n\n",)) == 1
    assert held_back("abc", ()) == 0


def test_score_prefers_grammatical_text(base):
    good = "the cat sees the park\na dog likes a ball\n"
    bad = "park the sees cat the\nball a likes dog a\n"
    sg = httpx.post(f"{base}/v1/score", json={"model": "tiny", "text": good}).json()
    sb = httpx.post(f"{base}/v1/score", json={"model": "tiny", "text": bad}).json()
    assert sg["tokens"] == sb["tokens"] == 12  # 10 words + 2 line ends
    assert sg["ppl"] < sb["ppl"] and sg["unknown"] == 0
    # the text's NLL over its own 41 characters and 10 words, as the API computes it
    assert (sg["chars"], sg["words"]) == (len(good), 10) == (41, 10)
    assert sg["bpc"] == pytest.approx(sg["loss"] * 12 / (41 * math.log(2)), rel=1e-6)
    assert sg["word_ppl"] == pytest.approx(math.exp(sg["loss"] * 12 / 10), rel=1e-6)


def test_oversize_prompt_is_413_with_a_json_error(base):
    r = gen(base, prompt="the cat " * 100)
    assert r.status_code == 413
    assert r.json()["error"].startswith("prompt has 800 characters") and "300" in r.json()["error"]


def test_max_new_tokens_over_the_cap_is_422(base):
    r = gen(base, prompt="the", max_new_tokens=501)
    assert r.status_code == 422
    assert "at most 500" in r.json()["error"]
    r = gen(base, prompt="the", temperature=-1)
    assert r.status_code == 422 and "temperature" in r.json()["error"]


def test_unknown_model_is_404(base):
    r = httpx.post(f"{base}/v1/generate", json={"model": "../tiny", "prompt": "the"})
    assert r.status_code == 404 and "unknown model" in r.json()["error"]
    assert httpx.get(f"{base}/v1/models/nope/curves").status_code == 404


def test_malformed_json_and_unknown_fields_are_422(base):
    headers = {"content-type": "application/json"}
    r = httpx.post(f"{base}/v1/generate", content=b'{"model": "tiny",', headers=headers)
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]
    r = gen(base, prompt="the", temprature=0.5)  # a typo is an error, not a silent default
    assert r.status_code == 422 and "temprature" in r.json()["error"]


def test_openapi_documents_the_api(base):
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    for p in ("/v1/models", "/v1/generate", "/v1/stream", "/v1/score"):
        assert p in paths
    assert "/v1/generate/stream" not in paths
    assert httpx.get(f"{base}/docs").status_code == 200


def test_rate_limit_is_429_per_client(models):
    with serving(create_app(models, ServerLimits(rate=6, burst=2))) as url:
        codes = [gen(url, prompt="the", max_new_tokens=2).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = gen(url, prompt="the", max_new_tokens=2)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "rate limit" in r.json()["error"]
        assert httpx.get(f"{url}/v1/models").status_code == 200  # reading cards is not limited


def test_full_queue_is_503_and_the_event_loop_stays_free(run_dir):
    models = load_models([run_dir])
    decoder = models["tiny"].text.model.decoder  # the prompt's last position goes through it
    entered, gate = threading.Event(), threading.Event()
    forward = decoder.forward

    def held_forward(*args, **kw):  # the first generation blocks here until we let it go
        entered.set()
        assert gate.wait(20)
        return forward(*args, **kw)

    decoder.forward = held_forward
    limits = ServerLimits(rate=0, max_concurrent=1, max_queue=0)
    with serving(create_app(models, limits)) as url, ThreadPoolExecutor(1) as ex:
        first = ex.submit(gen, url, prompt="the", max_new_tokens=5)
        assert entered.wait(10)
        t0 = time.monotonic()
        assert httpx.get(f"{url}/v1/models").status_code == 200
        assert time.monotonic() - t0 < 2  # model work is in the pool, not on the loop
        busy = gen(url, prompt="the", max_new_tokens=5)
        assert busy.status_code == 503 and "server busy" in busy.json()["error"]
        gate.set()
        assert first.result(timeout=20).status_code == 200
        assert gen(url, prompt="the", max_new_tokens=5).status_code == 200  # slot released


def slow_models(run_dir):
    """The run loaded with 20 ms added to each sampling step: 500 tokens take 10 s."""
    models = load_models([run_dir])
    embedding = models["tiny"].text.model.embedding  # every sampling step goes through it
    forward = embedding.forward

    def slow_forward(*args, **kw):
        time.sleep(0.02)
        return forward(*args, **kw)

    embedding.forward = slow_forward
    return models


def assert_slot_frees(url: str, why: str) -> None:
    """The server's only slot serves a short request within 5 s (503 while still held)."""
    deadline = time.monotonic() + 5
    while (code := gen(url, prompt="the", max_new_tokens=2).status_code) == 503:
        assert time.monotonic() < deadline, why
        time.sleep(0.05)
    assert code == 200


def test_a_client_leaving_mid_stream_frees_its_slot(run_dir):
    models = slow_models(run_dir)
    limits = ServerLimits(rate=0, max_concurrent=1, max_queue=0)
    with serving(create_app(models, limits)) as url:
        body = {"model": "tiny", "prompt": "the", "max_new_tokens": 500}
        with httpx.stream("POST", f"{url}/v1/stream", json=body, timeout=30) as r:
            lines = r.iter_lines()
            assert next(lines) == "event: start"
        # Gone: sampling stops within a step or two, and the slot is free long before 10 s.
        assert_slot_frees(url, "the abandoned stream kept its slot")


def test_oversize_body_is_413_before_it_is_read(base):
    big = b"x" * 400_000
    r = httpx.post(f"{base}/v1/score", content=big, headers={"content-type": "text/plain"})
    assert r.status_code == 413 and "request body is over" in r.json()["error"]


def test_chunked_oversize_body_is_413_without_reading_it_all(base):
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"  # no Content-Length: arrivals must count
        )
        chunk = b"x" * 50_000
        for _ in range(8):  # 400 kB, over the limit, and the body never ends
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = sock.recv(65536)  # a server waiting for the whole body times out here
        while b"}" not in reply and (more := sock.recv(65536)):
            reply += more  # the JSON body may come in a second packet
    assert reply.startswith(b"HTTP/1.1 413") and b"request body is over" in reply


def test_chunked_body_under_the_limit_is_served(base):
    body = json.dumps({"model": "tiny", "prompt": "the", "max_new_tokens": 3, "seed": 1})
    r = httpx.post(f"{base}/v1/generate", content=iter([body.encode()]), headers=JSON)
    assert r.status_code == 200
    assert r.json()["text"] == gen(base, prompt="the", max_new_tokens=3, seed=1).json()["text"]


def test_x_forwarded_for_does_not_escape_the_rate_limit(models):
    with serving(create_app(models, ServerLimits(rate=6, burst=2))) as url:
        codes = [
            httpx.post(
                f"{url}/v1/generate",
                json={"model": "tiny", "prompt": "the", "max_new_tokens": 2},
                headers={"X-Forwarded-For": f"10.0.0.{i}"},
            ).status_code
            for i in range(4)
        ]
        assert codes == [200, 200, 429, 429]


@pytest.mark.parametrize("field", ["prompt", "stop"])
def test_lone_surrogates_are_a_json_422(base, field):
    value = '"\\ud800 a"' if field == "prompt" else '["\\udc00"]'  # JSON escapes, not UTF-8
    raw = f'{{"model": "tiny", "{field}": {value}}}'
    r = httpx.post(f"{base}/v1/generate", content=raw.encode(), headers=JSON)
    error = r.json()["error"]
    assert r.status_code == 422 and ("lone surrogate" in error or "unicode" in error), error


def test_score_rejects_lone_surrogates_too(base):
    raw = b'{"model": "tiny", "text": "the \\ud800"}'
    r = httpx.post(f"{base}/v1/score", content=raw, headers=JSON)
    assert r.status_code == 422 and "lone surrogate" in r.json()["error"]


def test_long_stop_strings_are_422(base):
    r = gen(base, prompt="the", stop=["x" * 101])
    assert r.status_code == 422 and "stop" in r.json()["error"]


def test_json_sent_as_another_content_type_is_415(base):
    body = json.dumps({"model": "tiny", "prompt": "the"}).encode()
    for ct in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": ct} if ct else {}
        r = httpx.post(f"{base}/v1/generate", content=body, headers=headers)
        assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]
    r = httpx.post(f"{base}/v1/generate", content=b"\xff\xfe{}", headers=JSON)
    assert r.status_code in (400, 422) and "error" in r.json()


def test_an_unexpected_error_is_a_json_500(models, run_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    served = load_models([broken])
    (broken / "config.json").unlink()  # the curves endpoint re-reads the run files
    with serving(create_app(served, ServerLimits(rate=0))) as url:
        r = httpx.get(f"{url}/v1/models/broken/curves")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert "internal error" in r.json()["error"]


def test_curves_skip_damaged_lines(models, run_dir, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    with (damaged / "metrics.jsonl").open("ab") as f:
        f.write(b"\xff\xfe not text\n[1, 2]\n42\n")
    with serving(create_app(load_models([damaged]), ServerLimits(rate=0))) as url:
        r = httpx.get(f"{url}/v1/models/damaged/curves")
        good = httpx.get(f"{url}/v1/models/damaged/curves").json()
    assert r.status_code == 200 and good["valid"]


def test_cards_do_not_show_the_servers_folders(base, run_dir):
    card = httpx.get(f"{base}/v1/models").json()["models"][0]
    assert str(run_dir.parent) not in json.dumps(card)
    assert card["source"] == "corpus.txt"


def test_a_client_leaving_a_plain_generate_frees_its_slot(run_dir):
    models = slow_models(run_dir)
    limits = ServerLimits(rate=0, max_concurrent=1, max_queue=0)
    with serving(create_app(models, limits)) as url:
        body = {"model": "tiny", "prompt": "the", "max_new_tokens": 500}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/generate", json=body, timeout=0.5)  # hangs up after 0.5 s
        assert_slot_frees(url, "the abandoned request kept its slot")


def test_head_of_the_page(base):
    assert httpx.head(f"{base}/").status_code == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.1.example.com", False), ("localhost.", True),
     ("[::1]", True), ("::1", True), ("0.0.0.0", False), ("::", False), ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host, loopback):
    from lstmlm.serving.app import is_loopback

    assert is_loopback(host) is loopback


def test_serve_refuses_a_bad_port_or_a_taken_one_in_one_line(run_dir, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", str(run_dir), "--port", "99999"])
    assert e.value.code == 2 and "65535" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(run_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "cannot listen" in err and "Traceback" not in err and "serving" not in err


def test_serve_refuses_a_missing_run(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


# --- the page in a browser -----------------------------------------------------------


def test_page_streams_text_in_a_real_browser(base, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    shot = tmp_path / "page.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/")
            page.wait_for_selector("#model option[value='tiny']", state="attached")
            page.wait_for_selector("#curve svg path.valid")  # the training curve is drawn
            assert "valid ppl" in page.inner_text("#card")
            page.fill("#prompt", "the cat")
            page.fill("#seed", "7")
            page.fill("#max_new_tokens", "40")
            page.click("#generate")
            page.wait_for_function(
                "document.querySelector('#status').textContent.includes('tokens in')",
                timeout=20_000,
            )
            shown = page.text_content("#output .gen")
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    api = gen(base, prompt="the cat", seed=7, max_new_tokens=40).json()  # the page: defaults
    assert shown and shown == api["text"]
    assert errors == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_a_bf16_server_says_so_and_samples_reproducibly(models):
    with serving(create_app(models, ServerLimits(rate=0), precision="bf16")) as url:
        assert httpx.get(f"{url}/v1/models").json()["precision"] == "bf16"
        a = gen(url, prompt="the cat", seed=5, max_new_tokens=20).json()
        b = gen(url, prompt="the cat", seed=5, max_new_tokens=20).json()
    assert a["tokens"] == 20 and a["text"] == b["text"]
    with pytest.raises(ValueError, match="fp32 or bf16"):
        create_app(models, precision="fp16")


def test_a_lowercase_run_serves_upper_case_prompts_and_text_as_lower_case(tmp_path):
    corpus = write_mixed_case_corpus(tmp_path / "corpus.txt")
    start_run(lowercase_config(corpus, epochs=1, lr=10.0), tmp_path / "lower")
    with serving(create_app(load_models([tmp_path / "lower"]), ServerLimits(rate=0))) as url:
        body = {"model": "lower", "seed": 4, "max_new_tokens": 12}
        upper = gen(url, **body, prompt="THE CAT").json()
        lower = gen(url, **body, prompt="the cat").json()
        with httpx.stream("POST", f"{url}/v1/stream", json={**body, "prompt": "THE CAT"}) as r:
            events = sse_events(r.read().decode())
        scores = [
            httpx.post(f"{url}/v1/score", json={"model": "lower", "text": t}).json()
            for t in ("THE CAT SEES THE PARK\n", "the cat sees the park\n")
        ]
    assert upper["unknown"] == [] and upper["text"] == lower["text"]
    assert events[0] == ("start", {"model": "lower", "seed": 4, "unknown": []})
    assert events[-1][1]["text"] == lower["text"]
    assert scores[0]["unknown"] == 0 and scores[0] == scores[1]


def test_a_text_within_the_limit_passes_however_json_escapes_it(base):
    import json

    text = "\U0001f600" * 10_000  # 10,000 characters, 120,000 bytes as \ud83d\ude00 escapes
    body = json.dumps({"model": "tiny", "text": text}).encode()  # ensure_ascii: the default
    assert len(body) > 120_000
    r = httpx.post(f"{base}/v1/score", content=body, headers=JSON, timeout=60)
    assert r.status_code == 200, r.text
    over = json.dumps({"model": "tiny", "text": "\U0001f600" * 20_001}).encode()
    r = httpx.post(f"{base}/v1/score", content=over, headers=JSON, timeout=60)
    assert r.status_code == 413  # over --max-score-chars (20,000): refused, by count


def test_curves_count_against_the_rate_limit(models):
    with serving(create_app(models, ServerLimits(rate=6, burst=2))) as url:
        codes = [httpx.get(f"{url}/v1/models/tiny/curves").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert gen(url, prompt="the", max_new_tokens=2).status_code == 429  # one budget


def test_a_client_trickling_its_headers_is_cut_off(models):
    with serving(create_app(models, ServerLimits(rate=0, header_timeout=1.0))) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            t0 = time.monotonic()
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
            closed = False
            for _ in range(40):  # a header byte every 0.1 s, never ending the headers
                try:
                    sock.sendall(b"X")
                except OSError:
                    closed = True
                    break
                sock.settimeout(0.1)
                try:
                    if sock.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
            assert closed and 0.9 < time.monotonic() - t0 < 3.0
        # a normal client on a kept-alive connection is served, request after request
        with httpx.Client() as client:
            for _ in range(2):
                assert client.get(f"{url}/v1/models").status_code == 200
                time.sleep(0.6)
            assert client.get(f"{url}/v1/models").status_code == 200
