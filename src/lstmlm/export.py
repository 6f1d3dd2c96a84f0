"""A run's model as one file that runs without lstmlm: ONNX, or a `torch.export` program.

Both files compute `forward(ids, *state) -> (logits, *new_state)`:

- `ids` (T, B) int64 token ids (the run's vocabulary, `RUN/vocab.json`), time-first;
- `state` per layer `h{i}` (and `c{i}` for an LSTM), each (1, B, H_i) float32; zeros
  start a text, and the returned state continues it (feed it back with the next ids);
- `logits` (T, B, V) float32: scores whose log_softmax is the log-probabilities (for an
  adaptive softmax they are the log-probabilities themselves), then the new state.

T and B are dynamic axes (T = 1 for token-by-token sampling). Why not `nn.LSTM`: its
traced form unrolls the time loop, fixing T to the example's length (pytorch#115092).
The export module instead runs the model's one-step form (`nn.step`, the layers' own
weights by PyTorch's names, so a run trained with the hand-written cell exports alike)
inside `scan`, which ONNX writes as a Scan node. The decoder runs once on (T, B, D).
A layer without a one-step form (Mogrifier) cannot be exported.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from lstmlm.files import atomic_write
from lstmlm.nn.model import LanguageModel
from lstmlm.nn.rnn import State, has_cell_state
from lstmlm.storage.runs import load_run

FORMATS = ("onnx", "pt2")
OPSET = 18  # ONNX opset of the exported file (>= 17: LayerNorm & co., Scan v16)
_EXAMPLE_T, _EXAMPLE_B = 3, 2  # example sizes for tracing: not 0 or 1, which would specialize


def state_names(model: LanguageModel) -> list[str]:
    """The state's input names, layer by layer: h0, c0, h1, c1, ... (h0, h1, ... for GRU)."""
    parts = ("h", "c") if has_cell_state(model.rnn.kind) else ("h",)
    return [f"{p}{i}" for i in range(len(model.rnn.layers)) for p in parts]


class ExportModule(nn.Module):
    """`LanguageModel` with flat tensors in and out: `(ids, *state) -> (logits, *state)`.

    What `torch.export` and ONNX need at the boundary (no `LMOutput` dataclass, no list
    of tuples), and a time loop that keeps T dynamic. Eval mode only (no dropout).
    """

    def __init__(self, model: LanguageModel):
        super().__init__()
        if model.rnn.stepper() is None:
            raise ValueError(
                f"a {model.rnn.kind} model cannot be exported: its layers have no one-step "
                "form (export supports lstm and gru)"
            )
        self.model = model.eval()
        self.per_layer = 2 if has_cell_state(model.rnn.kind) else 1

    def _group(self, flat: tuple[Tensor, ...] | list[Tensor]) -> State:
        n = self.per_layer
        return [tuple(flat[i : i + n]) for i in range(0, len(flat), n)]

    def forward(self, ids: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        from torch._higher_order_ops.scan import scan  # torch's prototype scan, ONNX Scan

        m = self.model
        # Made here, not in __init__: traced, the step reads the parameters through the
        # modules (a step made earlier holds them as plain tensors, which export rejects).
        step = m.rnn.stepper()
        assert step is not None  # checked in __init__

        def body(carry: list[Tensor], x_t: Tensor) -> tuple[list[Tensor], Tensor]:
            h, new = step(x_t, self._group(carry))  # x_t (B, E) -> h (B, H_last)
            return [t for layer in new for t in layer], h.clone()  # clone: no aliasing

        x = m.embedding(ids)  # (T, B, E)
        final, out = scan(body, list(state), x)  # out (T, B, H_last)
        features, _ = m._decoder_input(out)  # (T, B, D)
        return (m.decoder(features), *final)  # (T, B, V), state


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch's exporters warn about prototypes, deprecations and missing torchvision ops;
    none of it is the user's to act on, so it is held back while exporting."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_model(model: LanguageModel, path: str | Path, fmt: str) -> Path:
    """Write `model` to `path` as `fmt` ("onnx" or "pt2"), whole or not at all."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    module = ExportModule(model).eval()
    for p in module.parameters():
        p.requires_grad_(False)  # an inference graph (with grads, ONNX's decomposition fails)
    ids = torch.zeros(_EXAMPLE_T, _EXAMPLE_B, dtype=torch.long)  # (T, B)
    state = [t for layer in model.init_state(_EXAMPLE_B) for t in layer]  # each (1, B, H)
    time, batch = torch.export.Dim("T"), torch.export.Dim("B")
    shapes = ({0: time, 1: batch}, tuple({1: batch} for _ in state))
    with torch.no_grad(), _quiet_exporter():
        if fmt == "pt2":
            program = torch.export.export(module, (ids, *state), dynamic_shapes=shapes)
            buffer = io.BytesIO()
            torch.export.save(program, buffer)
            atomic_write(path, buffer.getvalue())
        else:
            names = state_names(model)
            onnx_program = torch.onnx.export(
                module,
                (ids, *state),
                input_names=["ids", *names],
                output_names=["logits", *(f"{n}_out" for n in names)],
                dynamic_shapes=shapes,
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
            assert onnx_program is not None
            atomic_write(path, onnx_program.model_proto.SerializeToString())
    return path


def export_run(run_dir: str | Path, path: str | Path, fmt: str, which: str = "best") -> Path:
    """Export a run folder's best (or last) weights; see `export_model`.

    The recurrent layers are rebuilt as `nn.LSTM`/`nn.GRU` (`cell="fused"`): the
    hand-written layers have the same parameter names and equations, so their weights
    load into them.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model, _, _ = load_run(run_dir, which, "cpu", cell="fused")
    return export_model(model, path, fmt)
