"""Several training processes (torch.distributed), and which device they run on.

Start them with torchrun, or let `lstmlm train --nproc N` start torchrun for you:

    torchrun --nproc-per-node N -m lstmlm train ...
    python -m torch.distributed.run --standalone --nproc-per-node N -m lstmlm train ...

torchrun gives each process RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; `init` reads them and joins the process group (gloo on CPU, nccl
on CUDA, one GPU per process: cuda:LOCAL_RANK). Without them (WORLD_SIZE unset
or 1) every helper here is the single-process no-op, so the trainer has one
code path.

How the work is split, with W processes and --batch-size B:

    train  The stream is batchified into W*B columns and rank r trains on
           columns [r*B, (r+1)*B). Column j of `batchify` is the j-th contiguous
           piece of the stream, so this is the same as cutting the stream into W
           contiguous pieces and batchifying piece r into B columns: the ranks
           see disjoint contiguous parts, each with its own carried hidden state.
           Every rank has the same number of rows, hence the same steps per epoch.
           DDP averages the gradients; with per-token mean losses over equal
           shares that is the gradient of the whole W*B batch, so W processes
           with batch B take the steps one process would take with batch W*B
           (dropout masks aside).
    eval   The evaluation batch's columns are dealt out the same way, each rank
           scores its columns, and the (NLL sum, token count) pairs are summed
           over ranks: the same perplexity as one process (to float rounding).

Only rank 0 writes (checkpoints, metrics, summary, samples); checkpoints hold
every rank's hidden state and RNG state (gathered to rank 0), so --resume with
the same number of processes is exact.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lstmlm.config import EVAL_BATCH_SIZE
from lstmlm.data.batching import eval_columns
from lstmlm.device import resolve_device

if TYPE_CHECKING:
    from lstmlm.evaluation.perplexity import EvalResult
    from lstmlm.nn.model import LanguageModel


# --- the process group -------------------------------------------------------------------


def env_world_size() -> int:
    """WORLD_SIZE as torchrun set it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int | None:
    """LOCAL_RANK in a multi-process run (which GPU of this node), else None."""
    return int(os.environ.get("LOCAL_RANK", "0")) if world() > 1 else None


def init(device: str = "auto") -> torch.device:
    """Join the process group torchrun described in the environment; returns this rank's device.

    A no-op (apart from resolving the device) for a single process or when the
    group already exists. Backend: nccl when the device is CUDA, else gloo.
    """
    n = env_world_size()
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")) if n > 1 else None)
    if n > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dev


def shutdown() -> None:
    if dist.is_initialized():
        # All ranks leave together: a rank that tears down its gloo connections while a
        # peer still works (rank 0 writing its files) can abort the peer at exit.
        dist.barrier()
        dist.destroy_process_group()


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def _comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Each value summed over ranks (float64)."""
    if world() == 1:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_of(*flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over ranks, so that every rank takes the same branch."""
    if world() == 1:
        return tuple(bool(f) for f in flags)
    t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's value of `flag` on every rank."""
    if world() == 1:
        return bool(flag)
    t = torch.tensor([int(bool(flag))], dtype=torch.int32, device=_comm_device())
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_module(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's `model`, in place."""
    if world() == 1:
        return
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            buf = t.detach().to(_comm_device())
            dist.broadcast(buf, src=0)
            if buf.data_ptr() != t.data_ptr():
                t.copy_(buf)


def all_gather(t: Tensor) -> list[Tensor]:
    """Every rank's `t` (same shape and dtype on all ranks), on `t`'s device, by rank."""
    if world() == 1:
        return [t]
    src = t.detach().contiguous().to(_comm_device())
    out = [torch.empty_like(src) for _ in range(world())]
    dist.all_gather(out, src)
    return [o.to(t.device) for o in out]


# --- splitting the work -------------------------------------------------------------------


def shard_columns(data: Tensor, rank: int, world: int) -> Tensor:
    """Rank `rank`'s share of the columns of a batchified (L, W*B) stream: (L, B), a view.

    Column j of `batchify` is the j-th contiguous piece of the stream, so a rank's
    columns are one contiguous run of it, disjoint from every other rank's: a rank
    reading a memory-mapped stream maps only its own part."""
    if data.size(1) % world:
        raise ValueError(f"{data.size(1)} columns do not split evenly over {world} processes")
    b = data.size(1) // world
    return data[:, rank * b : (rank + 1) * b]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` in a multi-process run, else `model` itself.

    DDP passes the model's LMOutput dataclass through untouched (it only looks
    inside outputs with find_unused_parameters, which is off: every parameter
    takes part in every step). Weight drop calls the layer through
    `functional_call` with `weight * mask`; the gradient still reaches the
    registered parameter, so DDP's hooks fire and average it like any other.
    """
    if world() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def evaluate(
    model: LanguageModel,
    ids: Tensor,
    batch_size: int = EVAL_BATCH_SIZE,
    bptt: int = 70,
    precision: str = "fp32",
) -> EvalResult:
    """`evaluate.evaluate`, with the columns shared out over the ranks and the sums added.

    Column j of batchify(ids, B) is ids[j*L:(j+1)*L], so a rank's run of columns
    [a, b) is batchify(ids[a*L:b*L], b - a): each rank calls the plain evaluation
    on its slice, then (NLL sum, tokens) are summed over ranks. With fewer
    columns than ranks, some ranks score nothing.
    """
    from lstmlm.evaluation.perplexity import evaluate as plain
    from lstmlm.evaluation.perplexity import result

    if world() == 1:
        return plain(model, ids, batch_size, bptt, precision)
    b = eval_columns(ids.numel(), batch_size)  # as evaluate() has it
    rows = ids.numel() // b
    lo, hi = _share(b, rank(), world())
    nll, count = 0.0, 0
    if hi > lo:
        r = plain(model, ids[lo * rows : hi * rows], hi - lo, bptt, precision)
        nll, count = r.loss * r.tokens, r.tokens
    total, tokens = all_reduce_sum([nll, count])
    return result(total, int(round(tokens)))


def _share(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank's contiguous run [lo, hi) of n items dealt out as evenly as possible."""
    return rank * n // world, (rank + 1) * n // world


# --- launching -------------------------------------------------------------------------


def launch_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The torchrun command that runs `lstmlm ARGS` in `nproc` processes on this machine
    (torchrun through `training/torchrun.py`, which ends quietly when a signal stops it)."""
    return [
        sys.executable,
        "-m",
        "lstmlm.training.torchrun",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "lstmlm",
        *args,
    ]


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run `lstmlm ARGS` in `nproc` processes through torchrun; returns its exit status.

    One process tree: torchrun starts in its own session, a SIGINT, SIGTERM or SIGHUP to
    this process is passed on to it (torchrun passes it once to every worker, which stop
    at the same step and save), and when it ends nothing of its group is left running.
    A signal passed on gives the exit status 128 + its number.
    """
    from lstmlm.training.interrupt import STOP_SIGNALS

    proc = subprocess.Popen(launch_command(nproc, args), start_new_session=True)
    forwarded: list[int] = []

    def forward(signum: int, frame: object) -> None:
        forwarded.append(signum)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    main_thread = threading.current_thread() is threading.main_thread()
    before = {s: signal.signal(s, forward) for s in STOP_SIGNALS} if main_thread else {}
    try:
        rc = proc.wait()
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker torchrun left behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return 128 + forwarded[0] if forwarded else rc
