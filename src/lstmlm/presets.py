"""Named recipes. Each preset is a set of overrides on the config defaults.

Zaremba et al. (2014) train with a loss summed over the BPTT steps and averaged
over the batch, with lr 1 and gradient-norm clip 5. Those numbers only mean the
same thing under the same loss, so the Zaremba presets set
`loss_reduction="sum"` rather than translating them (the per-token-mean
equivalent of lr 1 / clip 5 at bptt 20 is lr 20 / clip 0.25, which is what
pytorch/examples uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig, replace


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]


_ZAREMBA = dict(optimizer="sgd", lr=1.0, loss_reduction="sum", batch_size=20, lr_schedule="epoch")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "small",
            "Zaremba et al. 2014 small: 2x200 LSTM, no dropout, SGD lr 1 (summed loss), clip 5, "
            "bptt 20, lr/2 per epoch after epoch 4, 13 epochs",
            data=dict(level="word"),
            model=dict(
                rnn="lstm",
                emb_size=200,
                hidden_size=200,
                num_layers=2,
                dropout=0.0,
                init_range=0.1,
                init_all=True,
            ),
            train=dict(_ZAREMBA, clip=5.0, bptt=20, epochs=13, lr_decay=2.0, decay_after=4),
        ),
        Preset(
            "medium",
            "Zaremba et al. 2014 medium: 2x650 LSTM, dropout 0.5, SGD lr 1 (summed loss), "
            "clip 5, bptt 35, lr/1.2 per epoch after epoch 6, 39 epochs",
            data=dict(level="word"),
            model=dict(
                rnn="lstm",
                emb_size=650,
                hidden_size=650,
                num_layers=2,
                dropout=0.5,
                init_range=0.05,
                init_all=True,
            ),
            train=dict(_ZAREMBA, clip=5.0, bptt=35, epochs=39, lr_decay=1.2, decay_after=6),
        ),
        Preset(
            "large",
            "Zaremba et al. 2014 large: 2x1500 LSTM, dropout 0.65, SGD lr 1 (summed loss), "
            "clip 10, bptt 35, lr/1.15 per epoch after epoch 14, 55 epochs",
            data=dict(level="word"),
            model=dict(
                rnn="lstm",
                emb_size=1500,
                hidden_size=1500,
                num_layers=2,
                dropout=0.65,
                init_range=0.04,
                init_all=True,
            ),
            train=dict(_ZAREMBA, clip=10.0, bptt=35, epochs=55, lr_decay=1.15, decay_after=14),
        ),
        Preset(
            "char-small",
            "character-level 2x200 LSTM, dropout 0.2, SGD lr 1 (summed loss) halved every "
            "epoch, bptt 10, batch 20, clip 5",
            data=dict(level="char"),
            model=dict(
                rnn="lstm",
                emb_size=200,
                hidden_size=200,
                num_layers=2,
                dropout=0.2,
                init_range=0.1,
                init_all=True,
            ),
            train=dict(_ZAREMBA, clip=5.0, bptt=10, epochs=10, lr_decay=2.0, decay_after=1),
        ),
        Preset(
            "char-rmsprop",
            "char-rnn style: 2x128 LSTM, dropout 0.2, RMSprop lr 0.002, seq 50, batch 50, "
            "clip 5, lr x0.97 per epoch after epoch 10",
            data=dict(level="char"),
            model=dict(
                rnn="lstm",
                emb_size=128,
                hidden_size=128,
                num_layers=2,
                dropout=0.2,
                init_range=0.08,
                init_all=True,
            ),
            train=dict(
                optimizer="rmsprop",
                lr=0.002,
                clip=5.0,
                bptt=50,
                batch_size=50,
                epochs=50,
                lr_schedule="epoch",
                lr_decay=1 / 0.97,
                decay_after=10,
            ),
        ),
    ]
}


def preset_config(name: str | None) -> RunConfig:
    """The RunConfig of a preset (the plain defaults for None)."""
    if name is None:
        return RunConfig()
    if name not in PRESETS:
        raise ValueError(
            f"unknown preset {name!r}; known: {', '.join(PRESETS)} (see `lstmlm presets`)"
        )
    p = PRESETS[name]
    return RunConfig(
        data=replace(DataConfig(), **p.data),
        model=replace(ModelConfig(), **p.model),
        train=replace(TrainConfig(), **p.train),
        preset=name,
    )
