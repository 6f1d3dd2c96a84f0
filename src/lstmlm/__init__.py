"""lstmlm: word- and character-level LSTM/GRU language models."""

__version__ = "0.1.0"
