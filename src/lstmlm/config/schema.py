"""Frozen run configuration: what to read, what to build, how to train.

Every field carries its `--help` text in `metadata["help"]`; the CLI generates
its flags from these dataclasses, so a new field is a new flag.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from lstmlm.config.bounds import (
    MAX_LAYERS,
    MAX_ROUNDS,
    MAX_SIZE,
    check_bounds,
    check_choice,
    check_device_name,
    check_nonnegative,
    check_positive,
    check_probability,
    report_names,
    validate_cutoffs,
)
from lstmlm.config.errors import FieldError
from lstmlm.config.types import typed_fields

LEVELS = ("word", "char", "symbols", "bpe", "unigram")
RNN_KINDS = ("lstm", "gru", "mogrifier")
CELLS = ("fused", "manual")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "ntasgd", "asgd")
SCHEDULES = ("plateau", "epoch", "cosine", "none")
PRECISIONS = ("fp32", "bf16")
REDUCTIONS = ("mean", "sum")
SOFTMAXES = ("full", "adaptive")
EVAL_BATCH_SIZE = 32  # benchmarks/bench_eval.py: vs 10, +0.02% valid ppl, bf16 1.1x faster


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class DataConfig:
    corpus: str | None = _f(None, "named corpus, e.g. ptb or enwik8 (all: lstmlm download --help)")
    train: str | None = _f(None, "training text: a .txt file, a folder of .txt files or an .epub")
    valid: str | None = _f(None, "validation text (default: split off --train)")
    test: str | None = _f(None, "test text (default: split off --train)")
    level: str = _f(
        "word",
        "tokens: word (whitespace + <eos> per line), char, or symbols "
        "(whitespace-separated symbols, as PTB-char), or subword pieces learnt from the "
        "train text: bpe (byte-level BPE) or unigram (byte-level unigram LM); subword "
        "levels have no <unk> and give back every text byte for byte",
        choices=LEVELS,
    )
    lowercase: bool = _f(False, "lower-case the text before tokenizing")
    min_freq: int = _f(1, "words seen fewer times in train become <unk>")
    max_vocab: int | None = _f(None, "keep at most this many tokens (specials included)")
    vocab_size: int | None = _f(
        None,
        "bpe/unigram: vocabulary size to learn (specials and the 256 bytes included; "
        "default min(8000, max(512, train characters / 200)))",
        min=260,  # the 256 bytes and more
    )
    data_dir: str | None = _f(
        None, "where named corpora live (also env LSTMLM_DATA, ./data, ../shared/data)"
    )

    def validate(self) -> None:
        check_bounds(self)
        if self.corpus is None and self.train is None:
            raise ValueError("give a corpus (--corpus NAME) or a text file (--train FILE)")
        if self.corpus is not None and self.train is not None:
            raise ValueError("give either --corpus or --train, not both")
        if (self.valid is None) != (self.test is None):
            raise ValueError(
                "give both --valid and --test, or neither (then they are split off --train)"
            )
        check_choice("level", self.level, LEVELS)
        check_positive("min_freq", self.min_freq)
        if self.max_vocab is not None and self.max_vocab < 3:
            raise FieldError("max_vocab", f"must be at least 3, got {self.max_vocab}")


@dataclass(frozen=True)
class ModelConfig:
    rnn: str = _f("lstm", "recurrent layer type", choices=RNN_KINDS)
    cell: str = _f(
        "fused",
        "fused = torch's nn.LSTM/nn.GRU kernels; manual = lstmlm's hand-written layers "
        "(bf16 matmuls with --precision bf16); mogrifier is always hand-written",
        choices=CELLS,
    )
    mogrifier_rounds: int = _f(
        5, "Mogrifier LSTM: alternating gating rounds (0 = plain LSTM)", max=MAX_ROUNDS
    )
    mogrifier_rank: int | None = _f(
        None, "Mogrifier LSTM: low rank of the Q/R matrices", max=MAX_SIZE
    )
    emb_size: int = _f(200, "embedding size", max=MAX_SIZE)
    hidden_size: int = _f(200, "hidden units per recurrent layer", max=MAX_SIZE)
    num_layers: int = _f(2, "recurrent layers", max=MAX_LAYERS)
    hidden_sizes: tuple[int, ...] | None = _f(
        None,
        "per-layer hidden sizes (overrides --hidden-size/--num-layers); with "
        "--tie-weights make the last equal --emb-size to tie without a projection, "
        "as AWD-LSTM does: --emb-size 400 --hidden-sizes 1150 1150 400",
        max=MAX_SIZE,
    )
    dropout: float = _f(0.0, "dropout on embeddings, between layers and before the decoder")
    dropout_e: float = _f(
        0.0, "embedding dropout: drop whole word vectors (rows of the embedding matrix)"
    )
    dropout_i: float = _f(0.0, "locked (variational) dropout on the RNN input")
    dropout_h: float = _f(0.0, "locked (variational) dropout between recurrent layers")
    dropout_o: float = _f(0.0, "locked (variational) dropout on the last recurrent layer's output")
    wdrop: float = _f(0.0, "weight drop (DropConnect) on the hidden-to-hidden weights")
    tie_weights: bool = _f(
        False,
        "share the embedding matrix with the decoder (adds a "
        "projection when emb-size != hidden-size)",
    )
    fc_layers: int = _f(
        0, "fully-connected ReLU layers between the RNN and the decoder", max=MAX_LAYERS
    )
    softmax: str = _f(
        "full",
        "output layer: full = one softmax over the vocabulary; adaptive = adaptive softmax "
        "(Grave et al. 2017) for big vocabularies, split at --cutoffs: trains on the fast "
        "per-cluster loss, evaluates the exact log-probabilities of the whole vocabulary "
        "(cannot be combined with --tie-weights)",
        choices=SOFTMAXES,
    )
    cutoffs: tuple[int, ...] = _f(
        (2000, 10000),
        "adaptive softmax: token ids (= frequency ranks) where the shortlist and each tail "
        "cluster end; increasing, and all below the vocabulary size, else training stops "
        "with an error naming it (none is dropped silently)",
    )
    div_value: float = _f(
        4.0, "adaptive softmax: tail cluster i sees the features projected to D / div^i units"
    )
    sampled_softmax: int = _f(
        0,
        "full softmax: train on each step's targets plus about this many words drawn "
        "from a Zipf proposal over the frequency-ranked ids (sampled softmax, Jean et al. "
        "2015): the decoder's training matmuls shrink from the vocabulary to the sample; "
        "evaluation and generation stay exact over the whole vocabulary; 0 = off",
        max=MAX_SIZE,
        metavar="K",
    )
    init_range: float | None = _f(
        0.1,
        "initialize embedding/decoder (and, with --init-all, every weight) uniformly in [-r, r]",
    )
    init_all: bool = _f(False, "apply --init-range to every parameter (Zaremba et al.)")

    def validate(self) -> None:
        check_bounds(self)
        check_choice("rnn", self.rnn, RNN_KINDS)
        check_choice("cell", self.cell, CELLS)
        for name in ("emb_size", "hidden_size", "num_layers"):
            check_positive(name, getattr(self, name))
        check_nonnegative("fc_layers", self.fc_layers)
        check_nonnegative("mogrifier_rounds", self.mogrifier_rounds)
        if self.mogrifier_rank is not None:
            check_positive("mogrifier_rank", self.mogrifier_rank)
        if self.hidden_sizes is not None:
            if len(self.hidden_sizes) == 0:
                raise FieldError("hidden_sizes", "needs at least one size")
            for h in self.hidden_sizes:
                check_positive("hidden_sizes", h)
        for name in ("dropout", "dropout_e", "dropout_i", "dropout_h", "dropout_o", "wdrop"):
            check_probability(name, getattr(self, name))
        check_choice("softmax", self.softmax, SOFTMAXES)
        check_nonnegative("sampled_softmax", self.sampled_softmax)
        if self.sampled_softmax and self.softmax != "full":
            raise ValueError(
                "--sampled-softmax works only with --softmax full (the adaptive softmax "
                "already trains on a part of the vocabulary per row); drop one of them"
            )
        if self.softmax == "adaptive":
            if self.tie_weights:
                raise ValueError(
                    "--tie-weights works only with --softmax full (the adaptive softmax "
                    "has no vocabulary-by-embedding matrix to share); add --no-tie-weights"
                )
            validate_cutoffs(self.cutoffs)
            if not (math.isfinite(self.div_value) and self.div_value >= 1):
                raise FieldError("div_value", f"must be >= 1, got {self.div_value}")
        if self.init_range is not None and not (0 < self.init_range < 10):
            raise FieldError("init_range", f"must be in (0, 10), got {self.init_range}")

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Hidden size of each recurrent layer."""
        if self.hidden_sizes is not None:
            return tuple(self.hidden_sizes)
        return (self.hidden_size,) * self.num_layers


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = _f(
        "sgd",
        "optimizer; ntasgd = SGD that switches to averaged SGD when validation stalls "
        "(see --nonmono); asgd = averaged SGD from the start, stopping when validation "
        "stalls (AWD-LSTM fine-tuning). Averaged weights are evaluated and saved as best",
        choices=OPTIMIZERS,
    )
    lr: float = _f(20.0, "learning rate")
    momentum: float = _f(0.0, "SGD/RMSprop momentum")
    weight_decay: float = _f(0.0, "L2 weight decay (decoupled for adamw)")
    clip: float = _f(0.25, "clip the gradient norm to this (0 = no clipping)")
    loss_reduction: str = _f(
        "mean",
        "mean = per-token mean loss; sum = summed over the BPTT "
        "steps and averaged over the batch (Zaremba's lr 1 / clip 5 "
        "recipes)",
        choices=REDUCTIONS,
    )
    nonmono: int = _f(
        5,
        "ntasgd/asgd: validation has stalled when it is worse than the best result "
        "from before the last this-many epochs",
    )
    alpha: float = _f(0.0, "activation regularization (AR): alpha * mean(dropped last output^2)")
    beta: float = _f(0.0, "temporal activation regularization (TAR): beta * mean((h_t - h_t-1)^2)")
    batch_size: int = _f(20, "training batch size (parallel streams)", max=MAX_SIZE)
    bptt: int = _f(20, "truncated back-propagation length", max=MAX_SIZE)
    variable_bptt: bool = _f(
        False,
        "random window lengths: N(bptt, 5) (N(bptt/2, 5) with prob 0.05), in "
        "[5, bptt+20], lr scaled by length/bptt",
    )
    eval_batch_size: int = _f(
        EVAL_BATCH_SIZE,
        "evaluation batch size (parallel columns): larger is faster on CPU, and each column "
        "starts from a zero state, so the ppl moves slightly with it (pytorch/examples uses 10)",
    )
    epochs: int = _f(40, "maximum number of epochs")
    max_minutes: float | None = _f(None, "stop training after this many minutes, then evaluate")
    max_steps: int | None = _f(None, "stop after this many optimizer steps (smoke tests)")
    lr_schedule: str = _f(
        "plateau",
        "plateau: divide lr by --lr-decay when validation does not "
        "improve; epoch: divide by --lr-decay every epoch after "
        "--decay-after; cosine: anneal from --lr to --lr-final x --lr over the run (its "
        "first limit of --max-minutes, --max-steps, --epochs), the best use of a fixed budget",
        choices=SCHEDULES,
    )
    lr_decay: float = _f(4.0, "divide the learning rate by this when the schedule says so")
    decay_after: int = _f(0, "with --lr-schedule epoch: first epoch whose end decays the lr")
    lr_final: float = _f(
        0.02, "with --lr-schedule cosine: the lr at the end of the run, as a fraction of --lr"
    )
    precision: str = _f(
        "fp32", "bf16 runs matmuls in bfloat16 autocast (CPU and GPU)", choices=PRECISIONS
    )
    device: str = _f(
        "auto",
        "where to train: auto (cuda when available, else cpu), cpu, cuda or cuda:N; under "
        "torchrun / --nproc, cuda means each process's cuda:LOCAL_RANK",
    )
    seed: int = _f(1111, "random seed (weights, dropout, sampling)")
    log_every: int = _f(50, "update the progress figures every this many steps")
    checkpoint_minutes: float = _f(
        5.0,
        "also checkpoint mid-epoch every this many minutes (0 = only at epoch ends); "
        "SIGTERM/SIGHUP/Ctrl-C save at once, so this bounds what a hard kill (SIGKILL, "
        "a lost node) costs: at most 5 minutes of training, for about a second of "
        "writing per checkpoint",
    )
    sample_every_epoch: bool = _f(False, "print samples at the end of every epoch")
    sample_temperatures: tuple[float, ...] = _f(
        (0.2, 0.5, 1.0), "temperatures for the end-of-epoch samples"
    )
    sample_length: int = _f(100, "tokens per end-of-epoch sample", max=MAX_SIZE)
    report_to: str = _f(
        "none",
        "also log the config and the training curves (loss, ppl, bpc, lr, gradient norm) "
        "to these, comma-separated: tensorboard (in RUN/tensorboard), wandb (Weights & "
        "Biases; WANDB_MODE=offline works without a network), mlflow (MLFLOW_TRACKING_URI, "
        "e.g. file:///tmp/mlruns); each needs its package",
    )
    keep_checkpoints: int = _f(
        0,
        "also keep the weights of the last N epochs, as RUN/epochNN-validLOSS.safetensors "
        "(older ones are removed; 0 = off)",
    )
    nan_patience: int = _f(
        3,
        "a step whose loss or gradient norm is NaN/inf is skipped; after this many in a "
        "row, reload the last checkpoint and halve the lr",
    )
    nan_max_restores: int = _f(
        3, "after this many such reloads, stop with an error (0 = stop at the first)"
    )

    def validate(self) -> None:
        check_bounds(self)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise FieldError("lr", f"must be a positive number, got {self.lr}")
        for name in ("momentum", "weight_decay", "clip", "alpha", "beta"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise FieldError(name, f"must be >= 0, got {value}")
        for name in (
            "batch_size",
            "bptt",
            "eval_batch_size",
            "epochs",
            "log_every",
            "sample_length",
            "nonmono",
            "nan_patience",
        ):
            check_positive(name, getattr(self, name))
        if self.max_steps is not None:
            check_positive("max_steps", self.max_steps)
        if self.max_minutes is not None and not (self.max_minutes > 0):
            raise FieldError("max_minutes", f"must be positive, got {self.max_minutes}")
        if not (self.lr_decay >= 1):
            raise FieldError("lr_decay", f"must be >= 1 (it divides the lr), got {self.lr_decay}")
        check_nonnegative("decay_after", self.decay_after)
        if not (0 <= self.lr_final <= 1):
            raise FieldError("lr_final", f"must be in [0, 1], got {self.lr_final}")
        check_device_name(self.device)
        check_choice("precision", self.precision, PRECISIONS)
        check_nonnegative("nan_max_restores", self.nan_max_restores)
        if not (self.checkpoint_minutes >= 0):
            raise FieldError("checkpoint_minutes", "must be >= 0")
        if any(not (math.isfinite(t) and t >= 0) for t in self.sample_temperatures):
            shown = " ".join(str(t) for t in self.sample_temperatures)
            raise FieldError("sample_temperatures", f"must be finite and >= 0, got {shown}")
        report_names(self.report_to)
        check_nonnegative("keep_checkpoints", self.keep_checkpoints)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    def validate(self) -> RunConfig:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """The config a dict (a run's config.json "run" object) describes, its field types
        and values checked: FieldError naming a bad field, ValueError for a bad shape."""
        if not isinstance(d, dict):
            raise ValueError(f"a run config must be a JSON object, got {type(d).__name__}")
        preset = d.get("preset")
        if preset is not None and not isinstance(preset, str):
            raise FieldError("preset", f"must be a string, got {preset!r}")
        return cls(
            data=DataConfig(**typed_fields(DataConfig, d.get("data", {}), "data")),
            model=ModelConfig(**typed_fields(ModelConfig, d.get("model", {}), "model")),
            train=TrainConfig(**typed_fields(TrainConfig, d.get("train", {}), "train")),
            preset=preset,
        ).validate()


def replace(cfg: Any, **changes: Any) -> Any:
    """`dataclasses.replace` that names the bad field in a ValueError."""
    names = {f.name for f in dataclasses.fields(cfg)}
    bad = set(changes) - names
    if bad:
        raise ValueError(f"unknown {type(cfg).__name__} fields: {', '.join(sorted(bad))}")
    return dataclasses.replace(cfg, **changes)
