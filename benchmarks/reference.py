"""The plain PyTorch word-level LSTM language-model loop, used as the in-run reference.

Written the way pytorch/examples ``word_language_model`` does it (and the way most users
start): a tiny Dictionary/Corpus, ``batchify`` into time-first columns, ``get_batch`` windows
of ``--bptt``, the hidden state carried across windows and detached, hand-written SGD with
gradient clipping, ``loss.item()`` every step, ``lr /= 4`` when validation does not improve,
and the best model kept for the final test evaluation. Nothing here is tuned or crippled.
``--device cuda`` runs the same loop on a GPU (data and model moved there once; the
``loss.item()`` of every step synchronizes, so the training clock stays honest).

It deliberately does not import lstmlm. Output: exactly one JSON line on stdout.
"""

import argparse
import copy
import json
import math
import platform
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"
PRESETS = {
    "small": dict(emsize=200, nhid=200, nlayers=2, dropout=0.0, tied=False, bptt=20,
                  batch_size=20, lr=20.0, clip=0.25),
    "medium": dict(emsize=650, nhid=650, nlayers=2, dropout=0.5, tied=True, bptt=35,
                   batch_size=20, lr=20.0, clip=0.25),
}  # fmt: skip


class Dictionary:
    def __init__(self):
        self.word2idx, self.idx2word = {}, []

    def add_word(self, word):
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]


class Corpus:
    def __init__(self, path):
        self.dictionary = Dictionary()
        self.train = self.tokenize(Path(path) / "train.txt")
        self.valid = self.tokenize(Path(path) / "valid.txt")
        self.test = self.tokenize(Path(path) / "test.txt")

    def tokenize(self, path):
        ids = []
        with open(path, encoding="utf8") as f:
            for line in f:
                ids.extend(self.dictionary.add_word(w) for w in line.split() + ["<eos>"])
        return torch.tensor(ids, dtype=torch.long)


class RNNModel(nn.Module):
    def __init__(self, rnn_type, ntoken, emsize, nhid, nlayers, dropout=0.0, tied=False):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, emsize)
        self.rnn = getattr(nn, rnn_type)(emsize, nhid, nlayers, dropout=dropout)
        self.rnn_type = rnn_type
        self.decoder = nn.Linear(nhid, ntoken)
        if tied:
            if nhid != emsize:
                raise ValueError("--tied requires emsize == nhid")
            self.decoder.weight = self.encoder.weight
        self.nhid, self.nlayers = nhid, nlayers
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output))
        return decoded.view(-1, decoded.size(-1)), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == "GRU":
            return weight.new_zeros(self.nlayers, bsz, self.nhid)
        return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                weight.new_zeros(self.nlayers, bsz, self.nhid))  # fmt: skip


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    return data[: nbatch * bsz].view(bsz, -1).t().contiguous()  # (N // B, B), time-first


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)


def repackage_hidden(h):
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def evaluate(model, criterion, data_source, bptt, bsz):
    """Per-token mean loss over data_source; also returns seconds taken."""
    model.eval()
    t0, total_loss = time.perf_counter(), 0.0
    hidden = model.init_hidden(bsz)
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, bptt):
            data, targets = get_batch(data_source, i, bptt)
            output, hidden = model(data, hidden)
            total_loss += len(data) * criterion(output, targets).item()
    return total_loss / (len(data_source) - 1), time.perf_counter() - t0


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    p.add_argument("--model", choices=("LSTM", "GRU"), default="LSTM")
    p.add_argument("--emsize", type=int)
    p.add_argument("--nhid", type=int)
    p.add_argument("--nlayers", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--tied", action="store_true", default=None)
    p.add_argument("--lr", type=float)
    p.add_argument("--clip", type=float)
    p.add_argument("--bptt", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--eval-batch-size", type=int, default=10)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seconds", type=float, default=None, help="wall-clock training budget")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many updates")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset or "small"].items():  # explicit flags win
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    corpus = Corpus(args.data)
    ntokens = len(corpus.dictionary.idx2word)
    train_data = batchify(corpus.train, args.batch_size).to(device)
    val_data = batchify(corpus.valid, args.eval_batch_size).to(device)
    test_data = batchify(corpus.test, args.eval_batch_size).to(device)

    model = RNNModel(
        args.model, ntokens, args.emsize, args.nhid, args.nlayers, args.dropout, args.tied
    ).to(device)
    criterion = nn.CrossEntropyLoss()
    lr, best_val_loss, best_state = args.lr, None, None
    n_windows = len(range(0, train_data.size(0) - 1, args.bptt))
    train_seconds, train_tokens, epochs_done, out_of_time = 0.0, 0, 0.0, False
    steps = 0
    budget = math.inf if args.seconds is None else args.seconds  # training time only
    ebs = args.eval_batch_size

    for epoch in range(1, args.epochs + 1):
        model.train()
        hidden = model.init_hidden(args.batch_size)
        total_loss, t0 = 0.0, time.perf_counter()
        for batch, i in enumerate(range(0, train_data.size(0) - 1, args.bptt)):
            if train_seconds + time.perf_counter() - t0 >= budget or steps == args.max_steps:
                out_of_time = True
                epochs_done += batch / n_windows
                break
            data, targets = get_batch(train_data, i, args.bptt)
            hidden = repackage_hidden(hidden)
            model.zero_grad()
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            total_loss += loss.item()
            train_tokens += targets.numel()
            steps += 1
        else:
            epochs_done += 1.0
        train_seconds += time.perf_counter() - t0
        if out_of_time:
            break
        val_loss, eval_seconds = evaluate(model, criterion, val_data, args.bptt, ebs)
        train_ppl = math.exp(total_loss / (batch + 1))
        print(
            f"epoch {epoch} lr {lr:g} train ppl {train_ppl:.1f} valid ppl {math.exp(val_loss):.1f}"
            f" ({train_seconds:.0f}s)",
            file=sys.stderr,
        )
        if best_val_loss is None or val_loss < best_val_loss:
            best_val_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
        else:
            lr /= 4.0

    valid_ppl_of = "best_epoch_end"
    if out_of_time:  # stopped mid-epoch: the current weights may beat the best epoch-end model
        val_loss, eval_seconds = evaluate(model, criterion, val_data, args.bptt, ebs)
        if best_val_loss is None or val_loss < best_val_loss:
            best_val_loss, best_state, valid_ppl_of = val_loss, model.state_dict(), "final"
    model.load_state_dict(best_state)
    test_loss, _ = evaluate(model, criterion, test_data, args.bptt, ebs)

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["vocab_size"] = ntokens
    result = {
        "impl": "reference",
        "preset": args.preset,
        "config": config,
        "train_tokens_per_sec": train_tokens / train_seconds if train_seconds > 0 else 0.0,
        "eval_tokens_per_sec": (val_data.numel() - args.eval_batch_size) / eval_seconds,
        "epochs_completed": round(epochs_done, 4),
        "steps": steps,
        "train_seconds": train_seconds,
        "valid_ppl": math.exp(best_val_loss),
        "valid_ppl_of": valid_ppl_of,
        "test_ppl": math.exp(test_loss),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "device": str(device),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
