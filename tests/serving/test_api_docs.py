"""The server's API docs (/docs) work without internet: Swagger UI's files come from the
server itself. Checked in a real headless Chromium that may reach only 127.0.0.1."""

from urllib.parse import urlparse

import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from helpers import CHROMIUM, CHROMIUM_ARGS, serving, tiny_config, write_corpus  # noqa: E402
from lstmlm.serving.app import create_app  # noqa: E402
from lstmlm.serving.models import load_models  # noqa: E402
from lstmlm.training import start_run  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    start_run(tiny_config(write_corpus(tmp / "c.txt"), epochs=1), tmp / "tiny")
    with serving(create_app(load_models([tmp / "tiny"]))) as url:
        yield url


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_the_server(base, page):
    html = httpx.get(base + page, timeout=10).text
    assets = [part.split('"')[0] for part in html.split('src="')[1:] + html.split('href="')[1:]]
    assert assets, html
    for url in assets:
        assert not urlparse(url).netloc, f"{page} loads {url} from another host"
        assert httpx.get(base + url, timeout=10).status_code == 200, url


def test_swagger_ui_renders_offline_in_a_browser(base):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    outside: list[str] = []

    def only_local(route):
        if urlparse(route.request.url).hostname != "127.0.0.1":
            outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_local)
            page.goto(base + "/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=15_000)  # an operation
            paths = page.locator(".opblock-summary-path").all_text_contents()
        finally:
            browser.close()
    assert any("/v1/generate" in p for p in paths), paths
    assert outside == []
