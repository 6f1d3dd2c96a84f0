import random
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tiny models: threads only add overhead and nondeterminism


def write_corpus(path: Path, n_lines: int = 300, seed: int = 0) -> Path:
    """A small word-level text with real structure (a repeating grammar)."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "my friend", "the old man", "she", "he"]
    verbs = ["sees", "likes", "walks to", "finds", "keeps"]
    objects = ["the park", "a ball", "the river", "an apple", "the house", "a book"]
    lines = [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}" for _ in range(n_lines)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.txt")
