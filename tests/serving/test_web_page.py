"""The page's generation controls in a real (headless) Chromium, over a real server.

One tiny trained run and one server for the module. The server is wrapped so a test can
slow the token stream down (to act while a generation runs) or cut it short (a dropped
connection, or a stream that ends without its `done` event).
"""

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from conftest import write_corpus  # noqa: E402

from helpers import CHROMIUM, CHROMIUM_ARGS, serving, tiny_config  # noqa: E402
from lstmlm.serving.app import create_app, load_models  # noqa: E402
from lstmlm.serving.limits import ServerLimits  # noqa: E402
from lstmlm.training import start_run  # noqa: E402

MAX_PROMPT_CHARS = 300
CUT_SHORT = (
    b'event: start\ndata: {"model": "tiny", "seed": 1, "unknown": []}\n\n'
    b'event: token\ndata: {"text": " the"}\n\n'
)
FAILED = b'event: error\ndata: {"error": "generation failed: out of memory"}\n\n'


class StreamControl:
    """ASGI wrapper: POST /v1/stream as served, slowed down, or cut short.

    mode None: as served, each body chunk (one event) `delay` seconds after the last;
    "end": a start and one token event, then the response ends cleanly (no `done`);
    "break": the same two events, then the connection breaks (the app raises mid-body);
    "error": the same two events, then the server's `error` event.
    """

    def __init__(self, app: Any):
        self.app = app
        self.mode: str | None = None
        self.delay = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/stream":
            await self.app(scope, receive, send)
        elif self.mode is None:

            async def slow_send(message: dict) -> None:
                if message["type"] == "http.response.body" and self.delay:
                    await asyncio.sleep(self.delay)
                await send(message)

            await self.app(scope, receive, slow_send)
        else:
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": CUT_SHORT, "more_body": True})
            if self.mode == "break":
                await asyncio.sleep(0.2)  # the events reach the page first, as in a real drop
                raise RuntimeError("the server died mid-stream (raised on purpose by the test)")
            end = FAILED if self.mode == "error" else b""
            await send({"type": "http.response.body", "body": end, "more_body": False})

    @contextmanager
    def set(self, mode: str | None = None, delay: float = 0.0) -> Iterator[None]:
        self.mode, self.delay = mode, delay
        try:
            yield
        finally:
            self.mode, self.delay = None, 0.0


@pytest.fixture(scope="module")
def control(tmp_path_factory) -> StreamControl:
    tmp = tmp_path_factory.mktemp("page")
    run = tmp / "tiny"
    start_run(tiny_config(write_corpus(tmp / "corpus.txt"), epochs=1, lr=10.0), run)
    limits = ServerLimits(rate=0, max_prompt_chars=MAX_PROMPT_CHARS)
    return StreamControl(create_app(load_models([run]), limits))


@pytest.fixture(scope="module")
def base(control) -> Iterator[str]:
    with serving(control) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    page: Any
    streams: list[str] = field(default_factory=list)  # request bodies sent to /v1/stream
    errors: list[str] = field(default_factory=list)  # uncaught page errors

    def fill(self, **fields: str) -> None:
        for name, value in fields.items():
            self.page.fill(f"#{name}", value)

    def finish(self, timeout: float = 20_000) -> tuple[str, bool]:
        """Wait until no generation runs; return the status line and whether it is an error."""
        self.page.wait_for_function(
            "!document.querySelector('#generate').disabled", timeout=timeout
        )
        status = self.page.locator("#status")
        return status.text_content(), "error" in (status.get_attribute("class") or "")


@pytest.fixture
def tab(browser, base) -> Iterator[Tab]:
    page = browser.new_page()
    page.set_default_timeout(5_000)  # a missing element fails fast
    t = Tab(page)
    page.on("pageerror", lambda e: t.errors.append(str(e)))
    page.on(
        "request",
        lambda r: t.streams.append(r.post_data) if r.url.endswith("/v1/stream") else None,
    )
    page.goto(base + "/")
    page.wait_for_selector("#model option[value='tiny']", state="attached")
    try:
        yield t
    finally:
        page.close()
    assert t.errors == []


def api_text(base: str, **body) -> str:
    r = httpx.post(f"{base}/v1/generate", json={"model": "tiny", **body}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["text"]


# --- one generation at a time ------------------------------------------------------


def test_ctrl_enter_does_nothing_while_a_generation_runs(tab, base, control):
    tab.fill(prompt="the cat", seed="7", max_new_tokens="40", temperature="0.8")
    with control.set(delay=0.05):  # 40 token events: about 2 s
        tab.page.focus("#prompt")
        tab.page.keyboard.press("Control+Enter")  # the shortcut starts one when idle
        tab.page.wait_for_function(
            "document.querySelector('#status').textContent.startsWith('generating (seed 7)')"
        )
        assert tab.page.is_disabled("#generate") and tab.page.is_enabled("#stop")
        tab.page.keyboard.press("Control+Enter")  # ... and is ignored while one runs
        tab.page.keyboard.press("Control+Enter")
        status, is_error = tab.finish()
    assert len(tab.streams) == 1
    assert status.startswith("40 tokens in") and not is_error
    assert tab.page.text_content("#output .gen") == api_text(
        base, prompt="the cat", seed=7, max_new_tokens=40, temperature=0.8
    )
    assert tab.page.input_value("#prompt") == "the cat"  # no line break typed by the shortcut
    assert tab.page.is_enabled("#generate") and tab.page.is_disabled("#stop")


# --- a stream that ends without done/error -----------------------------------------


@pytest.mark.parametrize("mode", ["end", "break"])
def test_a_stream_cut_short_is_an_error_not_a_hang(tab, control, mode):
    tab.fill(prompt="the cat")
    with control.set(mode=mode):
        tab.page.click("#generate")
        status, is_error = tab.finish()
    assert is_error and status.startswith("connection lost after 1 piece of text")
    assert tab.page.text_content("#output .gen") == " the"  # what came is kept
    assert tab.page.is_enabled("#generate") and tab.page.is_disabled("#stop")


def test_an_error_event_is_shown_as_the_servers_message(tab, control):
    tab.fill(prompt="the cat")
    with control.set(mode="error"):
        tab.page.click("#generate")
        status, is_error = tab.finish()
    assert is_error and status == "generation failed: out of memory"
    assert tab.page.text_content("#output .gen") == " the"


def test_stop_ends_the_generation_and_says_so(tab, control):
    tab.fill(prompt="the cat", max_new_tokens="200")
    with control.set(delay=0.05):  # 200 token events: about 10 s unless stopped
        tab.page.click("#generate")
        tab.page.wait_for_function("document.querySelector('#output .gen').textContent.length > 0")
        assert tab.page.is_disabled("#score")  # it would share the status line
        tab.page.click("#stop")
        status, is_error = tab.finish(timeout=3_000)
    assert re.fullmatch(r"stopped after \d+ pieces? of text", status) and not is_error
    assert tab.page.is_enabled("#generate") and tab.page.is_enabled("#score")
    assert tab.page.is_disabled("#stop")


# --- inputs are sent as typed, or refused with a message ---------------------------


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("top_p", "0", "greater than 0"),
        ("top_p", "2", "less than or equal to 1"),
        ("repetition_penalty", "0", "greater than 0"),
        ("repetition_penalty", "-1", "greater than 0"),
        ("temperature", "-1", "greater than or equal to 0"),
    ],
)
def test_out_of_range_sampling_values_show_the_servers_422(tab, name, value, why):
    tab.fill(prompt="the cat", **{name: value})
    tab.page.click("#generate")
    status, is_error = tab.finish()
    assert is_error and status == f"invalid request: {name}: Input should be {why}"


@pytest.mark.parametrize("seed", ["1e30", "7.5", "-3", "9007199254740993"])
def test_a_seed_that_is_not_a_whole_number_is_refused(tab, seed):
    tab.fill(prompt="the cat", seed=seed)
    tab.page.click("#generate")
    status, is_error = tab.finish()
    assert is_error and status.startswith("seed must be a whole number from 0 to")
    assert seed in status and tab.streams == []


def test_a_whole_number_seed_is_sent_as_typed(tab):
    tab.fill(prompt="the cat", seed="123456789012", max_new_tokens="3")
    tab.page.click("#generate")
    status, is_error = tab.finish()
    assert status.startswith("3 tokens in") and not is_error
    assert '"seed":123456789012' in tab.streams[0]
    assert tab.page.get_attribute("#seed", "placeholder") == "random (last: 123456789012)"


def test_a_long_prompt_is_kept_whole_and_flagged_not_cut(tab):
    long = "the cat " * 50  # 400 characters; the server takes 300
    counter = tab.page.locator("#prompt_count")
    assert counter.text_content() == f"0 / {MAX_PROMPT_CHARS} characters"
    tab.fill(prompt=long)
    assert tab.page.input_value("#prompt") == long
    assert counter.text_content().startswith(f"400 / {MAX_PROMPT_CHARS} characters — too long")
    assert "error" in counter.get_attribute("class")
    tab.page.click("#generate")
    status, is_error = tab.finish()
    assert is_error and status == "the prompt has 400 characters; this server accepts at most 300"
    assert tab.streams == []
    tab.fill(prompt=long[:MAX_PROMPT_CHARS])
    assert counter.text_content() == f"300 / {MAX_PROMPT_CHARS} characters"
    assert "error" not in counter.get_attribute("class")


# --- the unknown-word warning outlives the generation ------------------------------


def test_unknown_words_stay_visible_after_the_generation(tab):
    tab.fill(prompt="the zebra sees a quokka", seed="3", max_new_tokens="10")
    tab.page.click("#generate")
    status, is_error = tab.finish()
    assert status.startswith("10 tokens in") and not is_error
    notice = tab.page.locator("#notice")
    assert notice.is_visible()
    assert notice.text_content() == "not in vocabulary (read as <unk>): quokka, zebra"
    # A prompt with every word known clears it.
    tab.fill(prompt="the cat")
    tab.page.click("#generate")
    assert tab.finish()[0].startswith("10 tokens in")
    assert not notice.is_visible()


# --- what the model thinks: tokens coloured by surprisal --------------------------


def _spans(tab, selector):
    return tab.page.eval_on_selector_all(
        selector,
        "els => els.map(e => ({text: e.textContent, title: e.title, bits: e.dataset.bits,"
        " colour: getComputedStyle(e).backgroundColor}))",
    )


def test_scoring_colours_each_token_by_its_surprisal(tab, base):
    text = "the cat sees the park\nthe park the park"
    tab.fill(prompt=text)
    tab.page.click("#score")
    tab.page.wait_for_selector("#output .scored .tok")
    spans = _spans(tab, "#output .scored .tok")
    want = httpx.post(
        f"{base}/v1/score",
        json={"model": "tiny", "text": text, "return_token_logprobs": True},
        timeout=30,
    ).json()["token_logprobs"]
    assert [s["text"] for s in spans] == [t["text"] for t in want]
    assert "".join(s["text"] for s in spans) == text + "\n"  # the last line end is scored too
    for s, t in zip(spans, want, strict=True):
        m = re.search(r": (\d+(?:\.\d+)?) bits \(p = ", s["title"])
        assert m, s["title"]
        assert float(m.group(1)) == pytest.approx(t["bits"], abs=0.006)
    low = min(spans, key=lambda s: float(s["bits"]))
    high = max(spans, key=lambda s: float(s["bits"]))
    assert float(high["bits"]) - float(low["bits"]) > 1  # a real spread to colour
    assert high["colour"] != low["colour"]
    assert tab.page.locator("#status").text_content().startswith("prompt: ppl")


def test_generated_text_is_coloured_when_done(tab):
    tab.fill(prompt="the cat", seed="5", max_new_tokens="12")
    tab.page.click("#generate")
    status, is_error = tab.finish()
    assert status.startswith("12 tokens in") and not is_error
    spans = _spans(tab, "#output .gen .tok")
    assert len(spans) == 12
    assert "".join(s["text"] for s in spans) == tab.page.text_content("#output .gen")
    assert all(re.search(r"\d bits", s["title"]) for s in spans)
    assert '"output_scores":true' in tab.streams[0]


def test_the_pages_default_temperature_is_the_apis():
    from lstmlm.generation import SampleConfig
    from lstmlm.serving.routes import STATIC_DIR

    html = (STATIC_DIR / "index.html").read_text()
    value = re.search(r'id="temperature"[^>]*value="([^"]+)"', html).group(1)
    assert float(value) == SampleConfig().temperature
