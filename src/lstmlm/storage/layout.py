"""What a run folder holds: the names of its files.

RUN/config.json       run config, token level, corpus description, text fingerprint
RUN/vocab.json        the vocabulary
RUN/tokenizer.json    the subword tokenizer (bpe and unigram levels)
RUN/last.safetensors  weights + optimizer + trainer state (for --resume)
RUN/best.safetensors  weights of the best model on validation
RUN/metrics.jsonl     one JSON object per progress report / epoch
RUN/summary.json      final evaluation
RUN/epoch03-valid4.512.safetensors  weights at an epoch's end (--keep-checkpoints N)
RUN/.lock             held by the process training the run
"""

CONFIG = "config.json"
VOCAB = "vocab.json"
TOKENIZER = "tokenizer.json"
LAST = "last.safetensors"
BEST = "best.safetensors"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
RUN_FILES = (
    CONFIG,
    VOCAB,
    TOKENIZER,
    LAST,
    BEST,
    METRICS,
    SUMMARY,
)  # what a run writes in its folder
LOCK = ".lock"  # held by the process training the run (runs.run_lock)


def epoch_checkpoint(epoch: int, valid_loss: float) -> str:
    """The name of the weights kept at the end of `epoch` (--keep-checkpoints)."""
    return f"epoch{epoch:02d}-valid{valid_loss:.3f}.safetensors"


EPOCH_CHECKPOINTS = "epoch*-valid*.safetensors"  # a glob for them
