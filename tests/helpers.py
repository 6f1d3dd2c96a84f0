"""Small configs shared by the tests."""

from pathlib import Path

from lstmlm.config import DataConfig, ModelConfig, RunConfig, TrainConfig


def tiny_config(train: Path, **train_kw) -> RunConfig:
    tk = dict(
        batch_size=4, bptt=8, epochs=2, lr=5.0, clip=1.0, log_every=5, checkpoint_minutes=0, seed=3
    )
    tk.update(train_kw)
    return RunConfig(
        data=DataConfig(train=str(train)),
        model=ModelConfig(emb_size=16, hidden_size=16, num_layers=1, dropout=0.1),
        train=TrainConfig(**tk),
    )
