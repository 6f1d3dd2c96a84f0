"""Named recipes. Each preset is a set of overrides on the config defaults.

Zaremba et al. (2014) train with a loss summed over the BPTT steps and averaged
over the batch, with lr 1 and gradient-norm clip 5. Those numbers only mean the
same thing under the same loss, so the Zaremba presets set
`loss_reduction="sum"` rather than translating them (the per-token-mean
equivalent of lr 1 / clip 5 at bptt 20 is lr 20 / clip 0.25, which is what
pytorch/examples uses).

The AWD-LSTM presets (Merity et al. 2017, "Regularizing and Optimizing LSTM
Language Models") follow the command lines of the salesforce/awd-lstm-lm
README (its PyTorch >= 0.4 version) on top of that code's defaults: a 3-layer
LSTM 400 -> 1150 -> 1150 -> 400 with tied embeddings (the last layer's size is
the embedding size, so no projection), embedding dropout 0.1, locked dropout
0.4 on the input/output, weight drop 0.5, AR 2 / TAR 1, SGD lr 30 (per-token
mean loss) with clip 0.25, variable BPTT around 70, weight decay 1.2e-6 and the
non-monotone switch to averaged SGD after 5 stalled epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lstmlm.config.schema import DataConfig, ModelConfig, RunConfig, TrainConfig, replace


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]


_AWD_MODEL = dict(
    rnn="lstm",
    emb_size=400,
    hidden_sizes=(1150, 1150, 400),
    tie_weights=True,
    dropout=0.0,
    dropout_e=0.1,
    dropout_i=0.4,
    dropout_h=0.25,
    dropout_o=0.4,
    wdrop=0.5,
    init_range=0.1,
    init_all=False,
)
_AWD_TRAIN = dict(
    optimizer="ntasgd",
    nonmono=5,
    lr=30.0,
    clip=0.25,
    bptt=70,
    variable_bptt=True,
    alpha=2.0,
    beta=1.0,
    weight_decay=1.2e-6,
    lr_schedule="none",
    eval_batch_size=10,
)

# The README's Adam recipes (PTB-char, enwik8, WikiText-103): no AR/TAR; their lr/10 at
# fixed epochs (--when) becomes lr/10 on a validation plateau unless a preset says more.
_AWD_ADAM = dict(
    _AWD_TRAIN, optimizer="adam", alpha=0.0, beta=0.0, lr_schedule="plateau", lr_decay=10.0
)

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
            "ptb-10min",
            "the best PTB recipe found for a 10-minute budget on a 2-core CPU: a 2x400 "
            "LSTM (bptt 35, batch 20, SGD lr 20 on the mean loss = lr 1 summed, clip 0.25) "
            "with tied embedding and decoder and dropout 0.25, trained through a sampled "
            "softmax (4096 Zipf draws per step; evaluation exact), bf16 matmuls in the "
            "hand-written LSTM and the lr annealed by a cosine over the run's budget; use "
            "with --max-minutes (what was tried: benchmarks/RESULTS.md)",
            data=dict(level="word"),
            model=dict(
                rnn="lstm",
                cell="manual",
                emb_size=400,
                hidden_size=400,
                num_layers=2,
                dropout=0.25,
                tie_weights=True,
                sampled_softmax=4096,
                init_range=0.1,
                init_all=False,  # as measured (torch init for the LSTM, like the reference)
            ),
            train=dict(
                optimizer="sgd",
                lr=20.0,
                loss_reduction="mean",
                clip=0.25,
                bptt=35,
                batch_size=20,
                epochs=40,
                lr_schedule="cosine",
                lr_final=0.02,
                precision="bf16",
            ),
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
            "clip 5, lr x0.97 per epoch after epoch 10; bf16 matmuls in the hand-written "
            "LSTM (1.4x the tokens/s of fp32 nn.LSTM on an AVX-512 BF16 CPU; "
            "--cell fused --precision fp32 for the plain one)",
            data=dict(level="char"),
            model=dict(
                rnn="lstm",
                cell="manual",
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
                precision="bf16",
            ),
        ),
        Preset(
            "awd-ptb",
            "AWD-LSTM for PTB (Merity et al. 2017; awd-lstm-lm README): 3-layer LSTM "
            "400-1150-1150-400 tied, dropout e/i/h/o 0.1/0.4/0.25/0.4, weight drop 0.5, AR 2, "
            "TAR 1, NT-ASGD lr 30, clip 0.25, variable bptt 70, batch 20 (README; the paper "
            "says 40), wd 1.2e-6, 500 epochs, seed 141",
            data=dict(level="word"),
            model=dict(_AWD_MODEL),
            train=dict(_AWD_TRAIN, batch_size=20, epochs=500, seed=141),
        ),
        Preset(
            "awd-wt2",
            "AWD-LSTM for WikiText-2 (awd-lstm-lm README): as awd-ptb with input dropout 0.65, "
            "hidden dropout 0.2, batch 80, 750 epochs, seed 1882",
            data=dict(level="word"),
            model=dict(_AWD_MODEL, dropout_i=0.65, dropout_h=0.2),
            train=dict(_AWD_TRAIN, batch_size=80, epochs=750, seed=1882),
        ),
        Preset(
            "awd-char",
            "AWD-LSTM for PTB-char (awd-lstm-lm README): 3-layer LSTM "
            "200-1000-1000-200 tied, dropout e/i/h/o 0/0.1/0.25/0.1, weight drop 0.5, no AR/TAR, "
            "Adam lr 2e-3, variable bptt 150, batch 128, wd 1.2e-6, 500 epochs; the README "
            "divides the lr by 10 at epochs 300 and 400, here lr/10 on a validation plateau",
            data=dict(level="symbols"),
            model=dict(
                _AWD_MODEL,
                emb_size=200,
                hidden_sizes=(1000, 1000, 200),
                dropout_e=0.0,
                dropout_i=0.1,
                dropout_h=0.25,
                dropout_o=0.1,
            ),
            train=dict(_AWD_ADAM, lr=2e-3, bptt=150, batch_size=128, epochs=500),
        ),
        Preset(
            "awd-enwik8",
            "AWD-LSTM for enwik8 (awd-lstm-lm README, 'Character level enwik8 with LSTM'): "
            "3-layer LSTM 400-1840-1840-400 tied, dropout e/i/h/o 0/0.1/0.1/0.4, weight drop "
            "0.2, no AR/TAR, Adam lr 1e-3, clip 0.25, variable bptt 200, batch 128, wd 1.2e-6, "
            "50 epochs; the README divides the lr by 10 at epochs 25 and 35, here lr/10 on a "
            "validation plateau. The README models bytes; `--corpus enwik8` is read as UTF-8 "
            "characters (docs/data.md)",
            data=dict(level="char"),
            model=dict(
                _AWD_MODEL,
                emb_size=400,
                hidden_sizes=(1840, 1840, 400),
                dropout_e=0.0,
                dropout_i=0.1,
                dropout_h=0.1,
                dropout_o=0.4,
                wdrop=0.2,
            ),
            train=dict(_AWD_ADAM, lr=1e-3, bptt=200, batch_size=128, epochs=50),
        ),
        Preset(
            "awd-wt103",
            "AWD-QRNN's WikiText-103 recipe (awd-lstm-lm README, 'Word level WikiText-103 "
            "with QRNN') with an LSTM in place of the QRNN (lstmlm has none): 4 layers "
            "400-2500-2500-2500-400, dropout e/i/h/o 0/0.1/0.1/0.1, no weight drop, no AR/TAR, "
            "no wd, Adam lr 1e-3, clip 0.25, variable bptt 140, batch 60, 14 epochs, lr/10 "
            "after epoch 12 (and again after 13: the README keeps 1e-4 for the last two); "
            "adaptive softmax at the README's splits 2800/20000/76000 with full-size tails "
            "(div 1), untied (lstmlm's adaptive softmax cannot share the embedding)",
            data=dict(level="word"),
            model=dict(
                _AWD_MODEL,
                emb_size=400,
                hidden_sizes=(2500, 2500, 2500, 400),
                tie_weights=False,
                softmax="adaptive",
                cutoffs=(2800, 20000, 76000),
                div_value=1.0,
                dropout_e=0.0,
                dropout_i=0.1,
                dropout_h=0.1,
                dropout_o=0.1,
                wdrop=0.0,
            ),
            train=dict(
                _AWD_ADAM,
                lr=1e-3,
                weight_decay=0.0,
                bptt=140,
                batch_size=60,
                epochs=14,
                lr_schedule="epoch",
                decay_after=12,
            ),
        ),
        Preset(
            "awd-ptb-cpu",
            "AWD-LSTM regularization scaled down for about 10 CPU minutes on PTB: 2-layer LSTM "
            "200-400-200 tied, dropout e/i/h/o 0.05/0.2/0.1/0.2, weight drop 0.2, AR 2, TAR 1, "
            "NT-ASGD (nonmono 2) lr 30, clip 0.25, variable bptt 35, batch 40 (not yet tuned)",
            data=dict(level="word"),
            model=dict(
                _AWD_MODEL,
                emb_size=200,
                hidden_sizes=(400, 200),
                dropout_e=0.05,
                dropout_i=0.2,
                dropout_h=0.1,
                dropout_o=0.2,
                wdrop=0.2,
            ),
            train=dict(_AWD_TRAIN, nonmono=2, bptt=35, batch_size=40, epochs=40),
        ),
        Preset(
            "mogrifier-ptb",
            "Mogrifier LSTM for PTB (Melis et al. 2020). From the paper: 2 layers, about 24M "
            "parameters, tied embeddings, Adam (theirs with beta1 = 0; torch's defaults here), "
            "variational dropouts. Believed but not checked: bptt 70, batch 64. Guessed (the "
            "paper tuned these per model): hidden 1150 with 500-d embeddings (24.7M parameters), "
            "6 rounds of rank 40, dropout e/i/h/o 0.1/0.6/0.3/0.5, weight drop 0.25 in place of "
            "its state dropout, lr 2e-3, clip 1, lr/4 on a plateau, 250 epochs",
            data=dict(level="word"),
            model=dict(
                rnn="mogrifier",
                mogrifier_rounds=6,
                mogrifier_rank=40,
                emb_size=500,
                hidden_size=1150,
                num_layers=2,
                tie_weights=True,
                dropout=0.0,
                dropout_e=0.1,
                dropout_i=0.6,
                dropout_h=0.3,
                dropout_o=0.5,
                wdrop=0.25,
            ),
            train=dict(
                optimizer="adam",
                lr=2e-3,
                clip=1.0,
                bptt=70,
                batch_size=64,
                epochs=250,
                lr_schedule="plateau",
                lr_decay=4.0,
            ),
        ),
        Preset(
            "mogrifier-ptb-cpu",
            "mogrifier-ptb scaled down for CPU minutes: 2x256 tied, 4 rounds of rank 32 (3.8M "
            "parameters), dropout e/i/h/o 0.05/0.3/0.2/0.3, weight drop 0.1, Adam lr 3e-3, bptt "
            "35, batch 32 (not tuned)",
            data=dict(level="word"),
            model=dict(
                rnn="mogrifier",
                mogrifier_rounds=4,
                mogrifier_rank=32,
                emb_size=256,
                hidden_size=256,
                num_layers=2,
                tie_weights=True,
                dropout=0.0,
                dropout_e=0.05,
                dropout_i=0.3,
                dropout_h=0.2,
                dropout_o=0.3,
                wdrop=0.1,
            ),
            train=dict(
                optimizer="adam",
                lr=3e-3,
                clip=1.0,
                bptt=35,
                batch_size=32,
                epochs=40,
                lr_schedule="plateau",
                lr_decay=4.0,
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
