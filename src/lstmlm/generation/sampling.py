"""Sampling text from a trained model.

One step = one forward of the whole batch of samples (B = `num_samples`) for one token,
then a draw per sample. The rules, applied in this order to the last logits (B, V):

1. `<eos>` is masked until `min_new_tokens` tokens have been made.
2. Repetition penalty (CTRL, Keskar et al. 2019): the logit of every token this sample
   has already generated is divided by `penalty` when positive and multiplied by it when
   negative (so its probability always drops for penalty > 1). `<eos>` is exempt: line
   ends are structure, not repetition. Prompt tokens are not penalized.
3. Temperature 0 is greedy (argmax); otherwise logits are divided by the temperature.
4. Top-k keeps the k largest logits. With `top_k_decay` d < 1 the k is *adjusted* to the
   length of the current sentence: k_t = max(1, round(k * d ** n)), n = tokens since the
   last `<eos>` (prompt included), so a sentence starts varied and settles as it grows.
5. Top-p (nucleus, Holtzman et al. 2020) keeps the smallest set of most likely tokens
   whose probability mass (after top-k, renormalized) is >= p.
6. One draw by inverse CDF from each sample's own `torch.Generator`, seeded `seed + i`:
   sample i of a batch is the very text a one-sample run with seed `seed + i` makes.

Stop strings are checked on the detokenized text (`generate`, `stream`); `<eos>` ends a
sample when `stop_at_eos` is set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmlm.config.schema import PRECISIONS
from lstmlm.data.tokenize import tokenize_prompt
from lstmlm.data.vocab import EOS, Vocab
from lstmlm.nn.manual.layers import ManualGRU, ManualLSTM
from lstmlm.nn.model import LanguageModel
from lstmlm.nn.rnn import State

EOS_ID = Vocab.eos_id


@dataclass(frozen=True)
class SampleConfig:
    max_new_tokens: int = 100
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = all tokens
    seed: int | None = None
    num_samples: int = 1
    top_p: float = 1.0  # 1 = no nucleus filtering
    top_k_decay: float = 1.0  # < 1: k_t = max(1, round(k * decay ** tokens_since_eos))
    repetition_penalty: float = 1.0  # 1 = off; CTRL uses 1.2
    stop: tuple[str, ...] = ()  # stop when the text contains one of these (it is cut off)
    stop_at_eos: bool = False  # a sample ends at its first <eos> (not included)
    min_new_tokens: int = 0  # <eos> cannot be drawn before this many new tokens
    precision: str = "fp32"  # bf16: per-token recurrent and decoder matmuls in bfloat16

    def validate(self) -> None:
        for name in ("max_new_tokens", "top_k", "num_samples", "min_new_tokens"):
            _check_type(name, getattr(self, name), int)
        for name in ("temperature", "top_p", "top_k_decay", "repetition_penalty"):
            _check_type(name, getattr(self, name), float)
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be positive, got {self.max_new_tokens}")
        if not (0 <= self.temperature < math.inf):
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"--top-k must be >= 0, got {self.top_k}")
        if self.num_samples < 1:
            raise ValueError(f"--num-samples must be positive, got {self.num_samples}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not (0 < self.top_k_decay <= 1):
            raise ValueError(f"--top-k-decay must be in (0, 1], got {self.top_k_decay}")
        if not (0 < self.repetition_penalty < math.inf):
            raise ValueError(f"--repetition-penalty must be > 0, got {self.repetition_penalty}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"--min-new-tokens must be in [0, --max-new-tokens {self.max_new_tokens}], "
                f"got {self.min_new_tokens}"
            )
        if self.seed is not None:
            _check_type("seed", self.seed, int)
            if not (0 <= self.seed < 2**63):
                raise ValueError(f"--seed must be in [0, 2**63), got {self.seed}")
        if not isinstance(self.stop, tuple | list) or any(
            not isinstance(s, str) or not s for s in self.stop
        ):
            raise ValueError("--stop takes non-empty strings")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be fp32 or bf16, got {self.precision!r}")


def _check_type(name: str, value: object, kind: type) -> None:
    """ValueError unless `value` is an int (kind int) or a real number (kind float)."""
    ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
    if not ok or isinstance(value, bool):
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {value!r}")


# At most this many scores (samples x vocabulary) per step: each step holds a few (B, V)
# float tensors, so this bounds a sampling call's memory at about a GB.
MAX_STEP_SCORES = 2**26


# --- one step: logits -> token ------------------------------------------------------


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """logits (B, V), seen (B, V) bool -> penalized logits (CTRL rule)."""
    if penalty == 1.0:
        return logits
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def candidates(
    logits: Tensor, temperature: float, top_k: int | Tensor = 0, top_p: float = 1.0
) -> tuple[Tensor, Tensor | None]:
    """logits (B, V) -> (probs (B, C), ids (B, C) or None when C = V in vocabulary order).

    `top_k` is an int or a per-row (B,) tensor of k's (0 = all). Tokens outside the
    top-k / nucleus have probability 0. `temperature` must be > 0.

    The best score is subtracted before dividing by the temperature, so that a tiny
    temperature (or a tiny repetition penalty's huge scores) makes the draw greedy
    rather than inf / inf = NaN.
    """
    logits = torch.nan_to_num(logits.float(), nan=-math.inf, posinf=torch.finfo(torch.float32).max)
    temperature = max(temperature, torch.finfo(torch.float32).tiny)  # not 0 in fp32
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature  # (B, V), <= 0
    v = logits.size(-1)
    ids: Tensor | None = None
    k_row = top_k if isinstance(top_k, Tensor) else None
    k_max = int(k_row.max()) if k_row is not None else int(top_k)
    if k_row is not None or 0 < k_max < v:
        k_max = min(k_max, v)
        logits, ids = logits.topk(k_max, dim=-1)  # (B, k), sorted descending
        if k_row is not None:  # adjusted k: drop columns past each row's own k
            col = torch.arange(k_max, device=logits.device)
            logits = logits.masked_fill(col >= k_row.unsqueeze(1), float("-inf"))
    elif top_p < 1:
        logits, ids = logits.sort(dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(logits, dim=-1)  # (B, C)
    if top_p < 1:
        mass_before = probs.cumsum(dim=-1) - probs  # (B, C) mass of the better tokens
        drop = mass_before >= top_p
        drop[:, 0] = False  # the best token always stays (top_p may round to 0 in fp32)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs, ids


def sampling_distribution(
    logits: Tensor, temperature: float, top_k: int | Tensor = 0, top_p: float = 1.0
) -> Tensor:
    """The distribution a step draws from, over the whole vocabulary: (B, V)."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).float()
    probs, ids = candidates(logits, temperature, top_k, top_p)
    if ids is None:
        return probs
    return torch.zeros(logits.shape, dtype=probs.dtype, device=probs.device).scatter_(
        -1, ids, probs
    )


def _draw(probs: Tensor, generators: Sequence[torch.Generator] | torch.Generator | None) -> Tensor:
    """Inverse-CDF draw of one index per row of probs (B, C): one uniform per row."""
    b = probs.size(0)
    if isinstance(generators, Sequence):
        u = torch.cat([torch.rand(1, generator=g, device=probs.device) for g in generators])
    else:
        u = torch.rand(b, generator=generators, device=probs.device)
    cdf = probs.cumsum(dim=-1)  # (B, C)
    total = cdf[:, -1]  # (B,) 1 up to rounding
    if not bool((total > 0).all() & torch.isfinite(total).all()):  # one host read per token
        raise ValueError("the model's scores are not finite numbers (a diverged model?)")
    u = (u * total).unsqueeze(1)  # (B, 1) scaled by the (float) total
    idx = torch.searchsorted(cdf, u, right=True)  # first index whose cdf exceeds u
    return idx.clamp_(max=probs.size(-1) - 1).squeeze(1)


def next_token(
    logits: Tensor,
    temperature: float,
    top_k: int | Tensor,
    generator: Sequence[torch.Generator] | torch.Generator | None,
    top_p: float = 1.0,
) -> Tensor:
    """logits (B, V) -> token ids (B,). `generator`: one for the batch or one per row."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs, ids = candidates(logits, temperature, top_k, top_p)  # (B, C)
    idx = _draw(probs, generator)  # (B,)
    return idx if ids is None else ids.gather(1, idx.unsqueeze(1)).squeeze(1)


# --- one token through the model ---------------------------------------------------

StepFn = Callable[[Tensor, State], tuple[Tensor, State]]


def step_fn(model: LanguageModel, precision: str = "fp32") -> StepFn:
    """`(tokens (B,), state) -> (logits (B, V), state)` for one time step.

    precision "bf16" runs the recurrent layers' and the full-softmax decoder's matmuls
    with bfloat16 copies of their weights, made once here: one token's step reads every
    weight once, so halving their bytes is the win at batch 1 (the samples then differ
    slightly from fp32 ones). States, gates and biases stay fp32.

    A fused `nn.LSTM`/`nn.GRU` call has a large fixed cost per call on CPU (tens of ms
    for a 650-unit layer here, whatever its length), which a token-by-token loop pays on
    every token. For the layouts it knows (single-layer unidirectional fused layers with
    biases, eval mode) this runs the same weights through `torch.lstm_cell`/`gru_cell`
    instead (also for lstmlm's hand-written LSTM/GRU layers, `--cell manual`, which use
    the same weights and equations); anything else falls back to `model.forward`. Equal
    to `model.forward` to float rounding (tests/test_generate.py checks it).
    """

    def slow(tok: Tensor, state: State) -> tuple[Tensor, State]:
        out = model(tok.unsqueeze(0), state)  # (1, B) -> logits (1, B, V)
        return out.logits[0], out.state

    known = {"embedding", "rnn", "drop", "fc", "proj", "decoder"}
    layers = list(model.rnn.layers) if hasattr(model, "rnn") else []
    if (
        type(model) is not LanguageModel
        or model.training
        or {name for name, _ in model.named_children()} - known
        or {name for name, _ in model.rnn.named_children()} - {"layers", "dropout"}
        or not all(_plain_layer(layer) for layer in layers)
    ):
        return slow

    decode: Callable[[Tensor], Tensor] = model.decoder
    if precision == "bf16" and isinstance(model.decoder, nn.Linear):
        w16 = model.decoder.weight.detach().to(torch.bfloat16)  # (V, D)
        b16 = model.decoder.bias.detach().to(torch.bfloat16)  # (V,)

        def decode(x: Tensor) -> Tensor:
            return F.linear(x.to(torch.bfloat16), w16, b16).float()  # (B, V)

    elif isinstance(model.decoder, nn.Linear) and model.decoder.weight.device.type == "cpu":
        # On CPU an fp32 (1, D) x (D, V) product runs about 2x faster from a (D, V) copy
        # of the weight than from nn.Linear's (V, D).
        transposed = model.decoder.weight.detach().t().contiguous()  # (D, V)
        bias = model.decoder.bias.detach()  # (V,)

        def decode(x: Tensor) -> Tensor:
            return torch.addmm(bias, x, transposed)  # (B, V)

    cells = [_cell_step(layer, precision) for layer in layers]

    def fast(tok: Tensor, state: State) -> tuple[Tensor, State]:
        x = model.embedding(tok)  # (B, E)
        new: State = []
        for cell, st in zip(cells, state, strict=True):
            hx = tuple(s[0] for s in st)  # (h,) or (h, c), each (B, H)
            out = cell(x, hx)
            new.append(tuple(s.unsqueeze(0) for s in out))
            x = out[0]  # (B, H)
        for fc in model.fc:
            x = torch.relu(fc(x))
        if model.proj is not None:
            x = model.proj(x)  # (B, E)
        return decode(x), new  # (B, V)

    return fast


CellStep = Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]]


def _cell_step(layer: nn.Module, precision: str) -> CellStep:
    """One time step of a plain layer: `(x (B, I), (h,) or (h, c)) -> (h,) or (h, c)`.

    fp32: torch.lstm_cell / gru_cell on the layer's weights. bf16: the two matmuls with
    bfloat16 copies of the weights made here (fp32 accumulation), the gates in fp32.
    """
    w = (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
    lstm = type(layer) in _LSTMS
    if precision != "bf16":
        if lstm:
            return lambda x, hx: torch.lstm_cell(x, hx, *w)
        return lambda x, hx: (torch.gru_cell(x, hx[0], *w),)
    w_ih, w_hh = (t.detach().to(torch.bfloat16) for t in w[:2])  # (G*H, I), (G*H, H)
    b_ih, b_hh = (t.detach() for t in w[2:])  # (G*H,)

    def mm(a: Tensor, weight: Tensor) -> Tensor:
        return F.linear(a.to(torch.bfloat16), weight).float()  # (B, G*H)

    if lstm:
        bias = b_ih + b_hh

        def lstm_step(x: Tensor, hx: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            h, c = hx
            i, f, g, o = (mm(x, w_ih) + mm(h, w_hh) + bias).chunk(4, 1)  # (B, H) each
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c

        return lstm_step

    def gru_step(x: Tensor, hx: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        (h,) = hx
        xr, xz, xn = (mm(x, w_ih) + b_ih).chunk(3, 1)  # (B, H) each
        hr, hz, hn = (mm(h, w_hh) + b_hh).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return ((1 - z) * n + z * h,)

    return gru_step


# Layers the one-step path runs with torch.lstm_cell / gru_cell. The hand-written ones have
# nn.LSTM's / nn.GRU's parameter names, gate order and equations (tests/test_rnn_manual.py),
# so the same cell computes them, in fp32 whatever precision they were trained in.
_LSTMS = (nn.LSTM, ManualLSTM)


def _plain_layer(layer: nn.Module) -> bool:
    if type(layer) in (ManualLSTM, ManualGRU):
        return True  # always single-layer, unidirectional, time-first, with biases
    return (
        type(layer) in (nn.LSTM, nn.GRU)
        and layer.num_layers == 1
        and not layer.bidirectional
        and layer.bias
        and not layer.batch_first
        and getattr(layer, "proj_size", 0) == 0
    )


# --- the sampling loop --------------------------------------------------------------


def encode_prompt(prompt: str, vocab: Vocab, level: str) -> tuple[list[int], list[str]]:
    """Prompt ids (starting with `<eos>`, as after a line break) and its unknown tokens."""
    tokens = tokenize_prompt(prompt, level)
    unknown = [t for t in tokens if t not in vocab]
    return vocab.encode([EOS, *tokens]), unknown


def _generators(seed: int | None, n: int, device: torch.device) -> list[torch.Generator]:
    base = seed if seed is not None else torch.seed() % (2**62)
    gens = []
    for i in range(n):
        g = torch.Generator(device=device)
        g.manual_seed(base + i)
        gens.append(g)
    return gens


@torch.inference_mode()
def sample_ids(model: LanguageModel, prompt_ids: list[int], cfg: SampleConfig) -> Iterator[Tensor]:
    """Yield (num_samples,) new token ids per step, all samples in one batch.

    With `stop_at_eos`, a sample that has drawn `<eos>` keeps yielding `<eos>` (padding)
    and the iterator ends once every sample has; stop strings are the caller's job.
    """
    _check_batch(model, cfg)
    if not prompt_ids:
        raise ValueError("the prompt needs at least one token (start with <eos>)")
    model.eval()
    step_once: StepFn | None = None  # made after the first token: its weight copies take ms
    device = model.embedding.weight.device
    gens = _generators(cfg.seed, cfg.num_samples, device)
    b = cfg.num_samples
    # Feed the prompt once with batch 1, then copy its state to the B samples.
    x = torch.tensor(prompt_ids, dtype=torch.long, device=device).unsqueeze(1)  # (T, 1)
    last, prompt_state = model.last_logits(x, model.init_state(1))  # (1, V)
    state: State = [
        tuple(t.expand(-1, b, -1).contiguous() for t in layer) for layer in prompt_state
    ]
    logits = last.expand(b, -1)  # (B, V)
    v = logits.size(-1)
    seen = (
        torch.zeros(b, v, dtype=torch.bool, device=device) if cfg.repetition_penalty != 1 else None
    )
    adjust_k = cfg.top_k > 0 and cfg.top_k_decay < 1
    since_eos = torch.full((b,), _tokens_since_eos(prompt_ids), dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    for step in range(cfg.max_new_tokens):
        if step < cfg.min_new_tokens:
            logits = logits.clone()
            logits[:, EOS_ID] = float("-inf")
        if seen is not None:
            logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
        top_k: int | Tensor = cfg.top_k
        if adjust_k:
            decayed = cfg.top_k * cfg.top_k_decay ** since_eos.double()  # (B,)
            top_k = decayed.round().long().clamp_(1, cfg.top_k)
        tok = next_token(logits, cfg.temperature, top_k, gens, cfg.top_p)  # (B,)
        if cfg.stop_at_eos:
            tok = tok.masked_fill(done, EOS_ID)
            done |= tok == EOS_ID
        yield tok
        if cfg.stop_at_eos and bool(done.all()):
            return
        if step + 1 == cfg.max_new_tokens:
            return  # no forward for a token nobody will read
        if seen is not None:
            seen[torch.arange(b, device=device), tok] = True
            seen[:, EOS_ID] = False
        if adjust_k:
            since_eos = torch.where(tok == EOS_ID, 0, since_eos + 1)
        if step_once is None:
            step_once = step_fn(model, cfg.precision)
        logits, state = step_once(tok, state)  # (B, V)


def _check_batch(model: LanguageModel, cfg: SampleConfig) -> None:
    """ValueError when `cfg.num_samples` samples at once would not fit in memory."""
    cfg.validate()
    v = model.embedding.num_embeddings
    if cfg.num_samples * v > MAX_STEP_SCORES:
        raise ValueError(
            f"--num-samples {cfg.num_samples} is too many at once for a vocabulary of {v:,} "
            f"(at most {MAX_STEP_SCORES // v:,}); split it into several calls"
        )


def _tokens_since_eos(ids: list[int]) -> int:
    for n, i in enumerate(reversed(ids)):
        if i == EOS_ID:
            return n
    return len(ids)


# --- text ---------------------------------------------------------------------------


def token_piece(token: str, prev: str | None, level: str) -> str:
    """The text `token` adds after `prev`; joined pieces equal `detokenize(tokens)`."""
    if token == EOS:
        return "\n"
    if level == "char":
        return token
    if level == "symbols":
        return token.replace("_", " ")
    return token if prev is None or prev == EOS else " " + token


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in `text`, or -1."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def generate(
    model: LanguageModel, vocab: Vocab, level: str, prompt: str, cfg: SampleConfig
) -> list[str]:
    """Continuations of `prompt` as detokenized text (prompt not included)."""
    _check_batch(model, cfg)  # before the per-sample lists below
    ids, _ = encode_prompt(prompt, vocab, level)
    b = cfg.num_samples
    cols: list[list[int]] = [[] for _ in range(b)]
    texts = [""] * b
    stopped = [False] * b
    for tok in sample_ids(model, ids, cfg):
        for i, t in enumerate(tok.tolist()):
            if stopped[i] or (cfg.stop_at_eos and t == EOS_ID):
                stopped[i] = True
                continue
            prev = vocab.itos[cols[i][-1]] if cols[i] else None
            cols[i].append(t)
            texts[i] += token_piece(vocab.itos[t], prev, level)
            if cfg.stop:
                cut = find_stop(texts[i], cfg.stop)
                if cut >= 0:
                    texts[i], stopped[i] = texts[i][:cut], True
        if all(stopped):
            break
    return texts


def stream(
    model: LanguageModel, vocab: Vocab, level: str, prompt: str, cfg: SampleConfig
) -> Iterator[str]:
    """Text pieces of one sample as they are made; `"".join` equals `generate(...)[0]`.

    Text that may be the start of a stop string is held back until it is known not to be.
    """
    if cfg.num_samples != 1:
        raise ValueError("stream makes one sample; use generate for num_samples > 1")
    ids, _ = encode_prompt(prompt, vocab, level)
    text, sent, prev = "", 0, None
    for tok in sample_ids(model, ids, cfg):
        t = int(tok[0])
        if cfg.stop_at_eos and t == EOS_ID:
            break
        token = vocab.itos[t]
        text += token_piece(token, prev, level)
        prev = token
        cut = find_stop(text, cfg.stop) if cfg.stop else -1
        if cut >= 0:
            if cut > sent:
                yield text[sent:cut]
            return
        safe = len(text) - (_held_back(text, cfg.stop) if cfg.stop else 0)
        if safe > sent:
            yield text[sent:safe]
            sent = safe
    if len(text) > sent:
        yield text[sent:]
