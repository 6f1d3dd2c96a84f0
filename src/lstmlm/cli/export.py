"""`lstmlm export`: a run's model as an ONNX file or a `torch.export` program (.pt2)."""

from __future__ import annotations

import argparse
from typing import Any

from lstmlm.cli.flags import add_which_flag


def add_parser(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        help="write a run's model as ONNX or a torch.export program",
        description="Write a run's model to one file that runs without lstmlm: "
        "forward(ids, h0, c0, h1, c1, ...) -> (logits, h0_out, c0_out, ...), ids (T, B) "
        "int64 of the run's vocab.json, each state (1, B, H) float32 (zeros start a text; "
        "feed the returned state back to continue it), logits (T, B, V); T and B are "
        "dynamic. The recurrent layers are exported as nn.LSTM/nn.GRU steps on the run's "
        "weights (a run trained with --cell manual exports alike); Mogrifier models cannot "
        "be exported. onnx needs the export extra: pip install 'lstmlm[export]'. "
        "A .pt2 loads with torch.export.load(FILE).module().",
    )
    ex.add_argument("run", help="run folder")
    ex.add_argument(
        "--format",
        choices=("onnx", "pt2"),
        required=True,
        help="onnx: an ONNX file (opset 18; runs in onnxruntime); pt2: torch.export.save",
    )
    ex.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    add_which_flag(ex)
    ex.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401  (torch.onnx.export needs it; say so in one line)
            import onnxscript  # noqa: F401
        except ImportError:
            raise ValueError(
                "--format onnx needs onnx and onnxscript: pip install 'lstmlm[export]'"
            ) from None
    from lstmlm.export import export_run

    out = export_run(args.run, args.output, args.format, args.which)
    print(f"wrote {out}")
    return 0
