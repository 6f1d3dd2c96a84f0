"use strict";
// The lstmlm page: model cards, a training curve (inline SVG), streamed sampling, and
// each token of a scored or generated text coloured by its surprisal (bits).

const $ = (id) => document.getElementById(id);
let models = [];
let curveData = null;
let current = null;  // the running generation ({controller, pieces}), or null
let limits = { max_prompt_chars: Infinity };

function fmt(x, digits = 2) {
  if (x === null || x === undefined) return "—";
  if (typeof x !== "number") return String(x);
  return x.toLocaleString(undefined, { maximumFractionDigits: digits });
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${fmt(seconds, 1)} s`;
  if (seconds < 5400) return `${fmt(seconds / 60, 1)} min`;
  return `${fmt(seconds / 3600, 2)} h`;
}

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

// --- model card ---------------------------------------------------------------

function renderCard(m) {
  $("card-title").textContent = m.id;
  const s = m.summary || {};
  const mc = m.model || {};
  const arch = mc.rnn
    ? `${mc.num_layers}×${mc.hidden_size} ${String(mc.rnn).toUpperCase()}, emb ${mc.emb_size}`
    : "—";
  const rows = [
    ["corpus", m.corpus || m.source || "—"],
    ["level", m.level],
    ["model", arch],
    ["parameters", fmt(m.params, 0)],
    ["vocabulary", fmt(m.vocab_size, 0)],
  ];
  if (m.metric !== "bpc") {
    rows.push(["valid ppl", fmt(s.valid_ppl)], ["test ppl", fmt(s.test_ppl)]);
  }
  if (s.valid_bpc != null) {  // bits per character: every level since lstmlm recorded it
    rows.push(["valid bpc", fmt(s.valid_bpc, 4)], ["test bpc", fmt(s.test_bpc, 4)]);
  }
  if (m.level === "word" && s.test_unk_share != null) {
    rows.push(["test <unk>", `${fmt(100 * s.test_unk_share, 2)}%`]);
  }
  rows.push(
    ["epochs", fmt(s.epochs, 2)],
    ["training time", duration(s.seconds)],
    ["speed", s.tokens_per_sec ? `${fmt(s.tokens_per_sec, 0)} tok/s` : "—"],
  );
  const dl = $("card");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
}

// --- training curve -------------------------------------------------------------

function niceTicks(lo, hi, count) {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) ticks.push(+t.toFixed(10));
  return ticks;
}

function logTicks(lo, hi) {
  for (const subs of [[1, 2, 5], [1, 2, 3, 4, 5, 6, 8]]) {
    const ticks = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const f of subs) {
        const t = f * Math.pow(10, e);
        if (t >= lo && t <= hi) ticks.push(t);
      }
    }
    if (ticks.length >= 4) return ticks;
  }
  return niceTicks(lo, hi, 4);
}

function svgEl(tag, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function drawCurve() {
  const box = $("curve");
  box.replaceChildren();
  if (!curveData) return;
  const metric = curveData.metric;
  const xKey = $("xaxis").value;
  // bits per character of the raw text as the run recorded it; perplexity per token
  const value = (p) => (metric === "bpc" ? (p.bpc ?? NaN) : Math.exp(p.loss));
  const series = [
    { name: "train", cls: "train", pts: curveData.train },
    { name: "valid", cls: "valid", pts: curveData.valid },
  ].map((s) => ({
    ...s,
    xy: s.pts.filter((p) => p.loss !== null).map((p) => [p[xKey], value(p)]).filter((p) => isFinite(p[1])),
  }));
  const all = series.flatMap((s) => s.xy);
  if (all.length === 0) {
    box.innerHTML = '<p class="empty">No training records yet.</p>';
    return;
  }
  const W = 400, H = 250, L = 48, R = 12, T = 12, B = 34;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = 0, x1 = Math.max(...xs) || 1;
  const logY = metric === "ppl";
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y0 === y1) { y0 *= 0.9; y1 *= 1.1; }
  const fy = logY ? Math.log : (v) => v;
  const inv = logY ? Math.exp : (v) => v;
  const pad = (fy(y1) - fy(y0)) * 0.04;  // keep points off the frame
  [y0, y1] = [inv(fy(y0) - pad), inv(fy(y1) + pad)];
  const X = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v) => T + (1 - (fy(v) - fy(y0)) / (fy(y1) - fy(y0))) * (H - T - B);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "training curve" });
  for (const t of logY ? logTicks(y0, y1) : niceTicks(y0, y1, 5)) {
    svg.append(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: Y(t), y2: Y(t) }));
    svg.append(svgEl("text", { x: L - 5, y: Y(t) + 4, "text-anchor": "end" }, fmt(t, t < 10 ? 2 : 0)));
  }
  for (const t of niceTicks(x0, x1, 6)) {
    svg.append(svgEl("line", { class: "grid", x1: X(t), x2: X(t), y1: T, y2: H - B }));
    svg.append(svgEl("text", { x: X(t), y: H - B + 14, "text-anchor": "middle" }, fmt(t, 1)));
  }
  svg.append(svgEl("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(svgEl("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  svg.append(svgEl("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, xKey === "epoch" ? "epoch" : "training minutes"));
  svg.append(svgEl("text", { x: 12, y: (T + H - B) / 2, transform: `rotate(-90 12 ${(T + H - B) / 2})`, "text-anchor": "middle" }, metric === "bpc" ? "bits per char" : "perplexity (log)"));
  let ly = T + 10;
  for (const s of series) {
    if (s.xy.length === 0) continue;
    const d = s.xy.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
    svg.append(svgEl("path", { class: s.cls, d }));
    if (s.cls === "valid") for (const p of s.xy) svg.append(svgEl("circle", { class: "dot", cx: X(p[0]), cy: Y(p[1]), r: 3 }));
    svg.append(svgEl("line", { class: s.cls, x1: W - R - 70, x2: W - R - 52, y1: ly - 4, y2: ly - 4 }));
    svg.append(svgEl("text", { x: W - R - 48, y: ly }, s.name));
    ly += 15;
  }
  box.append(svg);
}

async function selectModel() {
  const m = models.find((x) => x.id === $("model").value);
  if (!m) return;
  renderCard(m);
  curveData = null;
  drawCurve();
  try {
    curveData = await getJSON(`/v1/models/${encodeURIComponent(m.id)}/curves`);
    drawCurve();
  } catch (e) {
    $("curve").textContent = `curve unavailable: ${e.message}`;
  }
}

// --- reading the form ------------------------------------------------------------
// Every value is sent as typed (the server answers a bad one with a clear 422 message),
// or refused here with a message; none is silently changed or left out.

class FormError extends Error {}

function chars(text) {
  return Array.from(text).length;  // code points, as the server counts them
}

function numberField(id, name, { integer = false, optional = false } = {}) {
  const el = $(id);
  const text = el.value.trim();
  if (el.validity.badInput) throw new FormError(`${name} is not a number`);
  if (text === "") {
    if (optional) return undefined;
    throw new FormError(`${name} is empty: enter a number`);
  }
  const x = Number(text);
  if (!Number.isFinite(x)) throw new FormError(`${name} must be a finite number, got ${text}`);
  if (integer && !Number.isSafeInteger(x)) throw new FormError(`${name} must be a whole number, got ${text}`);
  return x;
}

function seedField() {
  const el = $("seed");
  const text = el.value.trim();
  if (el.validity.badInput) throw new FormError("seed is not a number");
  if (text === "") return undefined;  // the server picks one
  // Digits only: "1e30" or "7.5" is not a seed, and a JS number is exact only up to 2^53 - 1.
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new FormError(`seed must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}, got ${text}`);
  }
  return Number(text);
}

function request() {
  const prompt = $("prompt").value;
  const n = chars(prompt);
  if (n > limits.max_prompt_chars) {
    throw new FormError(
      `the prompt has ${fmt(n, 0)} characters; this server accepts at most ${fmt(limits.max_prompt_chars, 0)}`,
    );
  }
  const body = {
    model: $("model").value,
    prompt,
    temperature: numberField("temperature", "temperature"),
    max_new_tokens: numberField("max_new_tokens", "max tokens", { integer: true }),
    output_scores: true,  // the done event then colours each token by its surprisal
  };
  const topK = numberField("top_k", "top-k", { integer: true, optional: true });
  if (topK !== undefined) body.top_k = topK;  // empty = the server's default, 0 (all)
  const seed = seedField();
  if (seed !== undefined) body.seed = seed;
  // Left out only when empty or at the server's default (1 = off for both).
  if (!$("top_p_label").hidden) {
    const p = numberField("top_p", "top-p", { optional: true });
    if (p !== undefined && p !== 1) body.top_p = p;
  }
  if (!$("repetition_penalty_label").hidden) {
    const r = numberField("repetition_penalty", "repetition penalty", { optional: true });
    if (r !== undefined && r !== 1) body.repetition_penalty = r;
  }
  if (!$("stop_at_eos_label").hidden && $("stop_at_eos").checked) body.stop_at_eos = true;
  return body;
}

function showPromptCount() {
  const n = chars($("prompt").value);
  const max = limits.max_prompt_chars;
  const over = n > max;
  const el = $("prompt_count");
  el.textContent = Number.isFinite(max)
    ? `${fmt(n, 0)} / ${fmt(max, 0)} characters` +
      (over ? ` — too long: this server generates from at most ${fmt(max, 0)}; shorten the prompt` : "")
    : `${fmt(n, 0)} characters`;
  el.classList.toggle("error", over);
}

// --- surprisal: what the model thinks of each token ------------------------------

const MAX_BITS = 12;  // the colour scale's end: this many bits or more is the reddest

function surprisalColour(bits) {
  // 0 bits (no surprise) green, MAX_BITS or more red; continuous in between.
  const x = Math.min(Math.max(bits ?? MAX_BITS, 0), MAX_BITS) / MAX_BITS;
  return `hsl(${(120 * (1 - x)).toFixed(1)}, 75%, ${(88 - 10 * x).toFixed(1)}%)`;
}

function tokenSpans(scores) {
  // One span per token, coloured by its surprisal, the numbers on hover.
  return scores.map((t) => {
    const span = document.createElement("span");
    span.className = "tok";
    span.textContent = t.text;
    span.dataset.bits = t.bits === null ? "" : String(t.bits);
    span.style.backgroundColor = surprisalColour(t.bits);
    const p = t.logprob === null ? "—" : Math.exp(t.logprob).toPrecision(3);
    span.title = `${t.token}: ${fmt(t.bits, 2)} bits (p = ${p}, log-prob ${fmt(t.logprob, 3)})`;
    return span;
  });
}

// --- generation -------------------------------------------------------------------

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function setNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

function setRunning(on) {
  $("generate").disabled = on;
  $("stop").disabled = !on;
  $("score").disabled = on;  // it would share the status line with the running stream
}

async function errorMessage(response) {
  const body = await response.json().catch(() => ({}));
  return body.error || `${response.status} ${response.statusText}`;
}

function parseEvents(buffer, onEvent) {
  // Split "event: x\ndata: {...}\n\n" blocks; return what is left over.
  let idx;
  while ((idx = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, idx);
    buffer = buffer.slice(idx + 2);
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    let parsed;
    try {
      parsed = data ? JSON.parse(data) : {};
    } catch (e) {
      throw new Error(`the server sent a malformed ${event} event: ${e.message}`);
    }
    onEvent(event, parsed);
  }
  return buffer;
}

async function generate() {
  if (current) return;  // one generation at a time: it owns the output and the status line
  let body;
  try {
    body = request();
  } catch (e) {
    if (!(e instanceof FormError)) throw e;
    setStatus(e.message, true);
    return;
  }
  const run = { controller: new AbortController(), pieces: 0 };
  current = run;
  setRunning(true);
  setNotice("");
  const out = $("output");
  out.replaceChildren();
  const promptSpan = document.createElement("span");
  promptSpan.className = "prompt";
  promptSpan.textContent = body.prompt;
  const gen = document.createElement("span");
  gen.className = "gen";
  out.append(promptSpan, gen);
  setStatus("generating…");
  let ended = false;  // a `done` or `error` event came: the server finished on purpose
  try {
    const r = await fetch("/v1/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: run.controller.signal,
    });
    if (!r.ok) throw new Error(await errorMessage(r));
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    while (!ended) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        if (e.name === "AbortError") throw e;
        throw new Error(`connection lost after ${plural(run.pieces, "piece")} of text (${e.message})`);
      }
      if (chunk.done) break;
      buffer = parseEvents(buffer + decoder.decode(chunk.value, { stream: true }), (event, data) => {
        if (event === "start") {
          setStatus(`generating (seed ${data.seed})`);
          $("seed").placeholder = `random (last: ${data.seed})`;
          const unknown = data.unknown || [];
          if (unknown.length) {
            const more = unknown.length > 8 ? ` and ${unknown.length - 8} more` : "";
            setNotice(`not in vocabulary (read as <unk>): ${unknown.slice(0, 8).join(", ")}${more}`);
          }
        } else if (event === "token") {
          gen.textContent += data.text;
          run.pieces += 1;
        } else if (event === "done") {
          ended = true;
          gen.textContent = data.text;
          if (data.token_scores) gen.replaceChildren(...tokenSpans(data.token_scores));
          setStatus(`${data.tokens} tokens in ${fmt(data.seconds, 2)} s (${data.finish_reason})`);
        } else if (event === "error") {
          ended = true;
          throw new Error(data.error || "the server reported an error");
        }
      });
    }
    if (!ended) {
      throw new Error(
        `connection lost after ${plural(run.pieces, "piece")} of text: the stream ended before the server finished`,
      );
    }
    reader.cancel().catch(() => {});
  } catch (e) {
    if (e.name === "AbortError") setStatus(`stopped after ${plural(run.pieces, "piece")} of text`);
    else setStatus(e.message, true);
  } finally {
    current = null;
    setRunning(false);
  }
}

async function score() {
  const text = $("prompt").value;
  if (!text.trim()) { setStatus("type a text in the prompt box to score it", true); return; }
  setStatus("scoring…");
  try {
    const r = await getJSON("/v1/score", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: $("model").value, text, return_token_logprobs: true }),
    });
    const bpc = r.bpc != null ? `, ${fmt(r.bpc, 3)} bpc` : "";
    setStatus(`prompt: ppl ${fmt(r.ppl)}${bpc} over ${r.tokens} tokens (${r.unknown} unknown)`);
    const scored = document.createElement("span");
    scored.className = "scored";
    scored.replaceChildren(...tokenSpans(r.token_logprobs || []));
    $("output").replaceChildren(scored);
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function init() {
  try {
    const info = await getJSON("/v1/models");
    models = info.models;
    for (const m of models) {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = `${m.id} (${m.level})`;
      $("model").append(o);
    }
    for (const name of ["top_p", "repetition_penalty", "stop_at_eos"]) {
      $(`${name}_label`).hidden = !info.sampling.includes(name);
    }
    $("max_new_tokens").max = info.limits.max_new_tokens;
    $("max_new_tokens").value = Math.min(100, info.limits.max_new_tokens);
    limits = info.limits;
    showPromptCount();
    await selectModel();
  } catch (e) {
    setStatus(`cannot load models: ${e.message}`, true);
  }
}

$("model").addEventListener("change", selectModel);
$("xaxis").addEventListener("change", drawCurve);
$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => current && current.controller.abort());
$("score").addEventListener("click", score);
$("prompt").addEventListener("input", showPromptCount);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey)) return;
  e.preventDefault();
  if (!$("generate").disabled) generate();  // same rule as the button
});
init();
