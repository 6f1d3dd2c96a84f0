from pathlib import Path

import pytest
import torch

from helpers import write_corpus

torch.set_num_threads(1)  # tiny models: threads only add overhead and nondeterminism


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.txt")
