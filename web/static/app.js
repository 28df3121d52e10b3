// fitplan's planning page. It renders what the JSON API answers and computes nothing of its own: every
// number comes from /api/plan, /api/timeline and /api/configs (the JSON `fitplan ... --json` prints).
"use strict";

const $ = (id) => document.getElementById(id);
const GiB = 2 ** 30;
const DEBOUNCE_MS = 250;
// The options offered, in order: the API parameter, its label and its kind (choices and help come from the
// command line's own parameters, /form.json)
const CARD_FIELDS = [["gpus", "GPUs per node", "number"], ["margin", "Margin", "number"]];
const TRAIN_FIELDS = [
  ["method", "Method", "select"], ["precision", "Precision", "select"], ["optimizer", "Optimizer", "select"],
  ["micro_batch", "Micro-batch", "number"], ["seq_len", "Sequence length", "number"],
  ["grad_ckpt", "Checkpointing", "switch"], ["sharding", "Sharding", "select"], ["offload", "Offload", "select"],
  ["attn", "Attention", "select"], ["lora_r", "LoRA rank", "number"], ["lora_targets", "LoRA targets", "text"],
  ["loss", "Loss kernel", "select"], ["liger_kernels", "Liger kernels", "switch"], ["batching", "Batching", "select"],
  ["loop", "Training loop", "select"], ["activation_offload", "Activation offload", "select"],
  ["interconnect", "Interconnect", "text"],
  ["global_batch", "Global batch", "number"], ["tokens", "Dataset tokens", "text"], ["prefer", "Prefer", "select"],
];
const DEFAULTS = { seq_len: "2048", margin: "0.1", prefer: "balanced", method: "auto" };
const PLAN_ONLY = ["prefer", "tokens", "epochs", "interconnect"];   // /api/configs and /api/timeline do not take these
// What fixes a plan's configuration when it is sent back for its timeline and its files
const PLAN_FIELDS = ["method", "precision", "optimizer", "micro_batch", "seq_len", "grad_ckpt", "attn", "sharding",
  "offload", "gpus", "nodes", "lora_r", "lora_alpha", "lora_targets", "grad_accum"];
const DEFAULT_CARD = "RTX 4090";

const state = { models: [], palette: null, upload: null, generation: 0, controller: null, timer: null,
  chart: null, files: {}, active: -1 };

class ApiError extends Error {}

async function getJSON(url, options = {}) {
  const response = await fetch(url, options);
  const data = await response.json();
  if (!response.ok) throw new ApiError(data.error || `HTTP ${response.status}`);
  return data;
}

const post = (endpoint, payload, signal) => getJSON(`/api/${endpoint}`, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload), signal });

const gib = (bytes) => `${(bytes / GiB).toFixed(2)} GiB`;
const number = (x) => (x === null || x === undefined ? "N/A" : Math.round(x).toLocaleString("en-US"));

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value; else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// --- the form ---------------------------------------------------------------------------------------------

function buildFields(container, fields, meta) {
  for (const [key, label, kind] of fields) {
    const info = meta[key] || { flag: "", help: "", choices: null };
    const id = `f-${key}`;
    const control = kind === "select" ? selectFor(key, info.choices || []) : kind === "switch" ? switchFor()
      : element("input", { type: kind === "number" ? "number" : "text", inputmode: kind === "number" ? "decimal" : "text" });
    control.id = id;
    control.name = key;
    control.title = info.help;
    if (DEFAULTS[key] !== undefined) control.value = DEFAULTS[key];
    if (kind === "number") control.setAttribute("step", key === "margin" ? "0.01" : "1");
    const flag = element("span", { class: "flag", text: (info.flag || "").split("/")[0] });
    container.append(element("div", {}, element("label", { for: id }, `${label} `, flag), control));
  }
}

function selectFor(key, choices) {
  const select = element("select");
  if (!choices.includes("auto") && key !== "prefer") select.append(element("option", { value: "", text: "auto" }));
  for (const choice of choices) select.append(element("option", { value: choice, text: choice }));
  return select;
}

function switchFor() {
  const select = element("select");
  for (const [value, text] of [["", "auto"], ["true", "on"], ["false", "off"]]) {
    select.append(element("option", { value, text }));
  }
  return select;
}

function buildCards(probed, catalog) {
  const select = $("gpu");
  const here = element("optgroup", { label: "This machine" });
  const found = probed.gpus || [];
  const name = found.length ? `${found.length} x ${found[0].name} (${gib(found[0].memory_bytes)})` : "no NVIDIA GPU found";
  const option = element("option", { value: "", text: `This machine: ${name}` });
  if (!found.length) option.disabled = true;
  here.append(option);
  const listed = element("optgroup", { label: "Catalog" });
  for (const gpu of catalog.gpus) {
    listed.append(element("option", { value: gpu.name, text: `${gpu.name} (${gib(gpu.memory_bytes)})` }));
  }
  select.append(here, listed);
  select.value = found.length ? "" : DEFAULT_CARD;
}

function payload() {
  const out = {};
  for (const control of document.querySelectorAll("#options [name]")) {
    if (control.name === "model") continue;
    const value = control.value.trim();
    if (value === "" && control.name !== "gpu") continue;
    out[control.name] = value === "true" ? true : value === "false" ? false : value;
  }
  if (out.gpu === "") delete out.gpu;   // this machine: the API probes it
  if (state.upload) return { ...out, config: state.upload.text, config_name: state.upload.name };
  const model = $("model").value.trim();
  return model ? { ...out, model } : null;
}

// --- choosing a model: search the catalog as you type, or drop a config.json -------------------------------

function matches(text) {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  return state.models.filter((m) => words.every((w) => `${m.model} ${m.family}`.toLowerCase().includes(w)));
}

function showSuggestions(list) {
  const box = $("model-list");
  box.replaceChildren(...list.slice(0, 12).map((m, i) => element("li", { role: "option", id: `model-${i}`,
    "data-model": m.model, "aria-selected": String(i === state.active) }, m.model,
    element("small", { text: `${m.family}, ${(m.params / 1e9).toFixed(1)} B` }))));
  box.hidden = list.length === 0;
  $("model").setAttribute("aria-expanded", String(!box.hidden));
}

function pickModel(name) {
  $("model").value = name;
  state.active = -1;
  showSuggestions([]);
  schedule();
}

function onModelInput() {
  const text = $("model").value;
  state.active = -1;
  const found = text.trim() ? matches(text) : [];
  showSuggestions(found);
  if (state.models.some((m) => m.model.toLowerCase() === text.trim().toLowerCase())) schedule();
}

function onModelKey(event) {
  const options = [...$("model-list").children];
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    state.active = Math.max(0, Math.min(options.length - 1, state.active + (event.key === "ArrowDown" ? 1 : -1)));
    options.forEach((li, i) => li.setAttribute("aria-selected", String(i === state.active)));
  } else if (event.key === "Enter") {
    event.preventDefault();
    const chosen = options[Math.max(state.active, 0)];
    if (chosen) pickModel(chosen.dataset.model); else schedule();
  } else if (event.key === "Escape") {
    showSuggestions([]);
  }
}

async function loadConfig(file) {
  if (!file) return;
  state.upload = { name: file.name, text: await file.text() };
  $("drop").classList.add("loaded");
  $("drop-text").textContent = `using ${file.name}`;
  $("clear-config").hidden = false;
  $("model").disabled = true;
  schedule();
}

function clearConfig() {
  state.upload = null;
  $("config-file").value = "";
  $("drop").classList.remove("loaded");
  $("drop-text").replaceChildren("or drop a ", element("code", { text: "config.json" }), " here");
  $("clear-config").hidden = true;
  $("model").disabled = false;
  schedule();
}

function wireDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    loadConfig(e.dataTransfer.files[0]);
  });
  $("config-file").addEventListener("change", (e) => loadConfig(e.target.files[0]));
  $("clear-config").addEventListener("click", clearConfig);
}

// --- asking the API ------------------------------------------------------------------------------------------

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

function schedule() {
  setStatus("Planning...", "pending");
  clearTimeout(state.timer);
  state.timer = setTimeout(update, DEBOUNCE_MS);
}

async function update() {
  const generation = ++state.generation;
  if (state.controller) state.controller.abort();
  const controller = state.controller = new AbortController();
  const asked = payload();
  if (!asked) return setStatus("Choose a model to start: type its name, or drop its config.json.", "ready");
  try {
    const plan = await post("plan", asked, controller.signal);
    if (generation !== state.generation) return;
    showPlan(plan);
    const chosen = plan.recommended === null ? null : plan.plans[plan.recommended];
    if (chosen) await showRecommended(chosen, asked, controller.signal, generation);
    setStatus(`Planned ${plan.model} on ${cardName(plan)}.`, "ready");
  } catch (err) {
    if (err.name === "AbortError" || generation !== state.generation) return;
    showError(err.message);
  }
}

function showError(message) {
  for (const id of ["recommended", "nothing", "timeline-box", "plans-box", "run-box", "warnings"]) $(id).hidden = true;
  $("error").textContent = message;
  $("error").hidden = false;
  setStatus("The planner cannot answer this; see the sentence below.", "ready");
}

function fixedBy(plan, asked) {
  // the recommended plan's own configuration, fixed, so its timeline and files are of exactly that plan
  const out = Object.fromEntries(Object.entries(asked).filter(([key]) => !PLAN_ONLY.includes(key)));
  for (const key of PLAN_FIELDS) if (plan[key] !== undefined) out[key] = plan[key];
  return out;
}

async function showRecommended(chosen, asked, signal, generation) {
  const { global_batch: _, grad_accum: __, ...fixed } = fixedBy(chosen, asked);
  const [timeline, configs] = await Promise.all([
    post("timeline", { ...fixed, grad_accum: chosen.grad_accum }, signal),   // gradients carried between micro-batches
    post("configs", { ...fixed, global_batch: chosen.global_batch }, signal),
  ]);
  if (generation !== state.generation) return;
  showTimeline(timeline);
  showFiles(configs);
}

// --- showing the answers ---------------------------------------------------------------------------------------

function cardName(plan) {
  const gpus = plan.hardware.gpus;
  return gpus.length ? `${gpus.length} x ${gpus[0].name}` : "no GPU";
}

function describe(p) {
  const gpus = p.gpus * p.nodes;
  return [p.method, p.precision, p.optimizer, `micro-batch ${p.micro_batch} x ${p.seq_len.toLocaleString("en-US")} tokens`,
    p.grad_ckpt ? "checkpointing" : "no checkpointing", `${gpus} GPU${gpus > 1 ? "s" : ""}`,
    p.sharding === "none" ? "" : p.sharding, p.offload === "none" ? "" : `offload ${p.offload}`]
    .filter(Boolean).join(" · ");
}

function showPlan(plan) {
  $("error").hidden = true;
  const warnings = plan.warnings || [];
  $("warnings").replaceChildren(...warnings.map((w) => element("li", { text: w })));
  $("warnings").hidden = warnings.length === 0;
  const chosen = plan.recommended === null ? null : plan.plans[plan.recommended];
  $("recommended").hidden = !chosen;
  $("nothing").hidden = Boolean(chosen);
  $("timeline-box").hidden = $("run-box").hidden = !chosen;
  $("plans-box").hidden = plan.plans.length === 0;
  if (chosen) {
    $("recommended-summary").textContent = `${describe(chosen)}: needs ${gib(chosen.per_gpu.total_bytes)} of ` +
      `${gib(plan.usable_bytes)} usable per GPU, ${number(chosen.tokens_per_s)} tokens/s`;
    $("reason").textContent = plan.reason;
  } else {
    showNothingFits(plan.nothing_fits || {});
  }
  showTable(plan.plans);
}

function showNothingFits(nothing) {
  $("nothing-summary").textContent = nothing.unsupported ? nothing.unsupported
    : `The smallest plan needs ${gib(nothing.min_total_bytes)} per GPU; ${gib(nothing.usable_bytes)} is usable.`;
  $("suggestions").replaceChildren(...(nothing.suggestions || []).map((s) => element("li", { text: s })));
}

const COLUMNS = [["", (p) => (p.recommended ? "*" : "")], ["method", (p) => p.method], ["precision", (p) => p.precision],
  ["GPUs", (p) => p.gpus * p.nodes], ["sharding", (p) => p.sharding], ["offload", (p) => p.offload],
  ["ckpt", (p) => (p.grad_ckpt ? "yes" : "no")], ["seq", (p) => p.seq_len, true], ["micro-batch", (p) => p.micro_batch, true],
  ["accum", (p) => p.grad_accum, true], ["batch", (p) => p.global_batch, true],
  ["need/GPU", (p) => gib(p.per_gpu.total_bytes), true], ["headroom", (p) => gib(p.headroom_bytes), true],
  ["tokens/s", (p) => number(p.tokens_per_s), true], ["time", (p) => hours(p.time_s), true],
  ["cost", (p) => usd(p.cost_usd), true]];

// time and cost as the command line's table shows them (cli/render.py)
function hours(seconds) {
  if (seconds === null) return "N/A";
  if (seconds < 60) return "<1 min";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  const h = seconds / 3600;
  return h < 1e6 ? `${h.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 })} h`
    : `${h.toExponential(1)} h`;
}

function usd(x) {
  if (x === null) return "N/A";
  if (x < 0.01) return "<$0.01";
  if (x < 1) return `$${x.toFixed(2)}`;
  return x < 1e9 ? `$${Math.round(x).toLocaleString("en-US")}` : `$${x.toExponential(1)}`;
}

function showTable(plans) {
  const head = element("tr", {}, ...COLUMNS.map(([name, , num]) => element("th", { class: num ? "num" : "", text: name })));
  const rows = plans.map((p) => element("tr", { class: p.recommended ? "recommended" : "" },
    ...COLUMNS.map(([, value, num]) => element("td", { class: num ? "num" : "", text: String(value(p)) }))));
  $("plans").replaceChildren(element("thead", {}, head), element("tbody", {}, ...rows));
}

function showFiles(configs) {
  state.files = configs.files;
  $("downloads").replaceChildren(...Object.keys(configs.files).map((name) =>
    element("button", { type: "button", "data-file": name, text: `download ${name}` })));
  $("launch").textContent = `# save the files into ${configs.run_dir}/, then:\n${configs.launch}`;
}

function download(name) {
  const url = URL.createObjectURL(new Blob([state.files[name]], { type: "text/plain" }));
  const link = element("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// --- the timeline ----------------------------------------------------------------------------------------------

function phaseSpans(points) {
  const spans = [];
  points.forEach((p, i) => {
    const last = spans[spans.length - 1];
    if (last && last.phase === p.phase) last.last = i; else spans.push({ phase: p.phase, first: i, last: i });
  });
  return spans;
}

const phaseBands = {   // shades every other phase and names each at the top
  id: "phaseBands",
  beforeDatasetsDraw(chart, _args, options) {
    const { ctx, chartArea: area, scales: { x } } = chart;
    const half = (x.getPixelForValue(1) - x.getPixelForValue(0)) / 2;
    ctx.save();
    (options.spans || []).forEach((span, k) => {
      const left = x.getPixelForValue(span.first) - half, right = x.getPixelForValue(span.last) + half;
      if (k % 2 === 0) { ctx.fillStyle = "#f0f0f0"; ctx.fillRect(left, area.top, right - left, area.bottom - area.top); }
      ctx.fillStyle = "#555";
      ctx.textAlign = "center";
      ctx.fillText(options.names[span.phase] || span.phase, (left + right) / 2, area.top + 12);
    });
    ctx.restore();
  },
};

function referenceLines(data, count) {
  const line = (label, bytes, dash, color) => ({ type: "line", label: `${label}: ${(bytes / GiB).toFixed(1)} GiB`,
    data: Array(count).fill(bytes / GiB), borderColor: color, borderDash: dash, borderWidth: 1.5, pointRadius: 0,
    pointStyle: "line", stack: label, order: 0 });
  const lines = [];
  if (data.gpu) {
    lines.push(line("card", data.gpu.memory_bytes, [], "#000"));
    lines.push(line(`usable (${Math.round(data.margin * 100)}% kept free)`, data.usable_bytes, [6, 4], "#000"));
  }
  lines.push(line("peak + allocator reserve", data.per_gpu.reserved_peak_bytes, [8, 3, 2, 3], "#555"));
  lines.push(line("+ CUDA context = total", data.per_gpu.total_bytes, [2, 3], "#555"));
  return lines;
}

function peakMarker(data, count) {
  const peak = data.timeline.peak;
  const values = Array(count).fill(null);
  values[peak.index] = peak.allocated_bytes / GiB;
  return { type: "line", label: `peak ${gib(peak.allocated_bytes)}: ${peak.step}`,
    data: values, showLine: false, pointStyle: "triangle", rotation: 180, pointRadius: 8, backgroundColor: "#000",
    borderColor: "#000", stack: "peak", order: 0 };
}

function showTimeline(data) {
  const points = data.timeline.points;
  const { colors, labels, phases } = state.palette;
  const bars = data.timeline.components.filter((c) => points.some((p) => p.components[c] > 0)).map((c) => ({
    type: "bar", label: labels[c], data: points.map((p) => p.components[c] / GiB), backgroundColor: colors[c],
    stack: "memory", order: 1, barPercentage: 1, categoryPercentage: 1, pointStyle: "rect" }));
  const datasets = [...bars, ...referenceLines(data, points.length), peakMarker(data, points.length)];
  if (state.chart) state.chart.destroy();
  state.chart = new Chart($("timeline"), {
    data: { labels: points.map((p) => p.step), datasets },
    options: chartOptions(phaseSpans(points), phases, headroom(datasets)),
    plugins: [phaseBands],
  });
  const c = data.config;
  $("timeline-caption").textContent = `${data.model}: ${describe({ ...c, optimizer: c.optimizer })}. Memory per GPU ` +
    `at each moment of one step, layer by layer${c.grad_ckpt ? " (each layer recomputed before its backward)" : ""}.`;
}

function headroom(datasets) {
  // room above the highest line or bar for the phase names
  const stacked = datasets.filter((d) => d.type === "bar").reduce((sum, d) => sum.map((v, i) => v + d.data[i]),
    datasets[0].data.map(() => 0));
  const lines = datasets.filter((d) => d.type === "line").flatMap((d) => d.data.filter((v) => v !== null));
  return 1.12 * Math.max(...stacked, ...lines);
}

function chartOptions(spans, names, top) {
  return {
    animation: false, maintainAspectRatio: false, interaction: { mode: "index", intersect: false },
    scales: {
      x: { stacked: true, ticks: { autoSkip: true, maxTicksLimit: 12, maxRotation: 30 }, grid: { display: false } },
      y: { stacked: true, title: { display: true, text: "GiB per GPU" }, beginAtZero: true, max: Math.ceil(top) },
    },
    plugins: {
      phaseBands: { spans, names },
      legend: { position: "right", labels: { boxWidth: 14, usePointStyle: true } },
      tooltip: { filter: (item) => item.raw !== null && item.raw > 0,
        callbacks: { label: (item) => `${item.dataset.label.split(":")[0]}: ${item.raw.toFixed(2)} GiB` } },
    },
  };
}

// --- start -----------------------------------------------------------------------------------------------------

async function start() {
  const [form, palette, models, probed, catalog] = await Promise.all([getJSON("/form.json"),
    getJSON("/palette.json"), getJSON("/api/models"), getJSON("/api/gpus"), getJSON("/api/gpus?catalog=true")]);
  state.palette = palette;
  state.models = models;
  buildFields($("card-fields"), CARD_FIELDS, form);
  buildFields($("train-fields"), TRAIN_FIELDS, form);
  buildCards(probed, catalog);
  $("options").addEventListener("input", (e) => { if (e.target.id !== "model" && e.target.type !== "file") schedule(); });
  $("options").addEventListener("change", (e) => { if (e.target.id === "model") schedule(); });
  $("options").addEventListener("submit", (e) => e.preventDefault());
  $("model").addEventListener("input", onModelInput);
  $("model").addEventListener("keydown", onModelKey);
  $("model-list").addEventListener("mousedown", (e) => {
    const li = e.target.closest("li");
    if (li) { e.preventDefault(); pickModel(li.dataset.model); }
  });
  $("model").addEventListener("blur", () => showSuggestions([]));
  $("downloads").addEventListener("click", (e) => { if (e.target.dataset.file) download(e.target.dataset.file); });
  $("copy-launch").addEventListener("click", () => navigator.clipboard.writeText($("launch").textContent));
  wireDrop();
  setStatus("Choose a model to start: type its name, or drop its config.json.", "ready");
}

window.addEventListener("DOMContentLoaded", () => start().catch((err) => showError(err.message)));
