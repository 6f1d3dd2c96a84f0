"""lstmlm: word- and character-level LSTM/GRU language models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["TextModel", "__version__", "load"]

if TYPE_CHECKING:
    from lstmlm.api import TextModel, load


def __getattr__(name: str) -> Any:
    # `import lstmlm` stays light: torch and the model code load on first use of the API.
    if name in ("load", "TextModel"):
        from lstmlm import api

        return getattr(api, name)
    raise AttributeError(f"module 'lstmlm' has no attribute {name!r}")
