"""The server's Hugging Face-style generation fields, prompt lists, per-token scores and
its OpenAPI error documentation, over real HTTP."""

import json
import math

import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from helpers import serving, tiny_config, write_corpus  # noqa: E402
from lstmlm.serving.app import create_app  # noqa: E402
from lstmlm.serving.limits import ServerLimits  # noqa: E402
from lstmlm.serving.models import load_models  # noqa: E402
from lstmlm.training import start_run  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    start_run(tiny_config(write_corpus(tmp / "c.txt"), epochs=2, lr=10.0), tmp / "tiny")
    models = load_models([tmp / "tiny"])
    with serving(create_app(models, ServerLimits(rate=0))) as url:
        yield url, models["tiny"].text


def post(base, route, **body):
    return httpx.post(f"{base}{route}", json={"model": "tiny", **body}, timeout=30)


def test_new_fields_give_what_the_api_gives(served):
    base, lm = served
    kw = dict(
        prompt="the cat", max_new_tokens=12, seed=5, min_p=0.05, typical_p=0.9,
        no_repeat_ngram_size=3, num_return_sequences=2, stop_strings=["park"],
    )  # fmt: skip
    r = post(base, "/v1/generate", **kw)
    assert r.status_code == 200, r.text
    body = r.json()
    texts = [s["text"].lstrip(" ") for s in body["sequences"]]
    assert texts == lm.generate(**kw) and body["text"] == body["sequences"][0]["text"]


def test_alias_names_are_accepted(served):
    base, _ = served
    kw = dict(prompt="a dog", max_new_tokens=10, seed=2)
    new = post(base, "/v1/generate", **kw, num_return_sequences=2, stop_strings=["the"]).json()
    old = post(base, "/v1/generate", **kw, num_samples=2, stop=["the"]).json()
    assert [s["text"] for s in old["sequences"]] == [s["text"] for s in new["sequences"]]
    assert len(new["sequences"]) == 2
    both = post(base, "/v1/generate", **kw, num_samples=2, num_return_sequences=2)
    assert both.status_code == 422 and "num_samples" in both.json()["error"]


def test_beams_and_greedy(served):
    base, lm = served
    beams = post(base, "/v1/generate", prompt="she", max_new_tokens=8, num_beams=3).json()
    assert beams["text"].lstrip(" ") == lm.generate("she", max_new_tokens=8, num_beams=3)[0]
    a = post(base, "/v1/generate", prompt="she", max_new_tokens=8, do_sample=False, seed=1)
    b = post(base, "/v1/generate", prompt="she", max_new_tokens=8, do_sample=False, seed=2)
    assert a.json()["text"] == b.json()["text"]  # greedy: the seed does not matter


def test_a_prompt_list_gives_one_result_per_prompt(served):
    base, _ = served
    r = post(base, "/v1/generate", prompt=["the cat", "a dog"], max_new_tokens=6, seed=3)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["prompt"] for x in results] == ["the cat", "a dog"]
    one = post(base, "/v1/generate", prompt="a dog", max_new_tokens=6, seed=3).json()
    assert results[1]["text"] == one["text"]


def test_output_scores_join_to_the_text(served):
    base, _ = served
    body = post(
        base, "/v1/generate", prompt="the cat", max_new_tokens=7, seed=1, output_scores=True
    )
    body = body.json()
    scores = body["token_scores"]
    assert len(scores) == 7 and "".join(s["text"] for s in scores) == body["text"]
    assert all(s["bits"] == pytest.approx(-s["logprob"] / math.log(2)) for s in scores)


def test_stream_done_carries_the_scores_and_refuses_lists(served):
    base, _ = served
    body = {"model": "tiny", "prompt": "my friend", "seed": 4, "max_new_tokens": 6}
    with httpx.stream("POST", f"{base}/v1/stream", json={**body, "output_scores": True}) as r:
        blocks = r.read().decode().strip().split("\n\n")
    done = json.loads(blocks[-1].split("data: ", 1)[1])
    assert "".join(s["text"] for s in done["token_scores"]) == done["text"]
    r = httpx.post(f"{base}/v1/stream", json={**body, "prompt": ["a", "b"]})
    assert r.status_code == 422 and "one sequence of one prompt" in r.json()["error"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("min_p", 1.5), ("min_p", -0.1), ("typical_p", 0), ("typical_p", 1.1),
        ("no_repeat_ngram_size", -1), ("num_beams", 0), ("num_beams", 17),
        ("num_return_sequences", 0), ("num_samples", 17), ("do_sample", "maybe"),
        ("prompt", ["a"] * 17),
    ],
)  # fmt: skip
def test_out_of_bound_fields_are_422(served, field, value):
    base, _ = served
    r = post(base, "/v1/generate", **{"prompt": "the", field: value})
    assert r.status_code == 422, r.text
    assert r.json()["status"] == 422


def test_more_sequences_than_beams_is_422(served):
    base, _ = served
    r = post(base, "/v1/generate", prompt="the", num_beams=2, num_return_sequences=3)
    assert r.status_code == 422 and "num_beams" in r.json()["error"]


def test_score_returns_per_token_surprisal(served):
    base, lm = served
    r = post(base, "/v1/score", text="the cat sees the park\n", return_token_logprobs=True)
    assert r.status_code == 200, r.text
    got = r.json()["token_logprobs"]
    want = lm.score("the cat sees the park\n", return_token_logprobs=True)["token_logprobs"]
    assert [t["token"] for t in got] == [t["token"] for t in want]
    assert [t["bits"] for t in got] == pytest.approx([t["bits"] for t in want])
    assert post(base, "/v1/score", text="the cat").json()["token_logprobs"] is None


def test_openapi_documents_the_error_bodies(served):
    base, _ = served
    spec = httpx.get(f"{base}/openapi.json").json()
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"error", "status"}
    for route in ("/v1/generate", "/v1/stream", "/v1/score"):
        responses = spec["paths"][route]["post"]["responses"]
        for code in ("413", "415", "422", "429", "503"):
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorBody"), (route, code)
    gen = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    assert {"num_beams", "min_p", "typical_p", "do_sample", "stop_strings"} <= set(gen)
    assert gen["min_p"]["maximum"] == 1 and gen["num_beams"]["maximum"] == 16
