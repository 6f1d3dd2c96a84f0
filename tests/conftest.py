import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from helpers import write_corpus

torch.set_num_threads(1)  # tiny models: threads only add overhead and nondeterminism

# The fuzz tests draw the same examples on every run, so a red CI means a regression, not
# an unlucky draw; HYPOTHESIS_PROFILE=explore draws new ones each run (do that by hand).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _token_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own token cache (data/cache.py), never the user's ~/.cache."""
    monkeypatch.setenv("LSTMLM_TOKEN_CACHE", str(tmp_path_factory.mktemp("tokens")))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.txt")
