// The infinity serve page: one form, one POST /v1/images/stream per Generate (/v1/images/edits/stream on the
// Edit tab), Server-Sent Events read from the response body (EventSource cannot POST). Cancel aborts the fetch;
// the server then drops the work. The Edit tab paints the mask on a canvas of the source's own pixel size.
"use strict";

const $ = (id) => document.getElementById(id);
const RATIO_NAMES = { 1: "1 : 1", 1.25: "5 : 4", 0.8: "4 : 5", 1.333: "4 : 3", 0.75: "3 : 4", 1.5: "3 : 2",
  0.666: "2 : 3", 1.75: "7 : 4", 0.571: "4 : 7", 2: "2 : 1", 0.5: "1 : 2", 2.5: "5 : 2", 0.4: "2 : 5",
  3: "3 : 1", 0.333: "1 : 3" };
const FIELDS = ["prompt", "negative_prompt", "ratio", "pn", "cfg", "tau", "seed", "num_images", "candidates",
  "source", "canvas-wrap", "outpaint", "keep_scales", "dilate"];
const FIELD_IDS = { image: "source", mask: "canvas-wrap" }; // server field -> element, where they differ

let model = null;
let controller = null;
let cards = [];
let tab = "generate";
let source = null; // { data: base64 data URL of the file as chosen, width, height }

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = String(value);
  o.textContent = text;
  select.appendChild(o);
}

async function loadModel() {
  const response = await fetch("/v1/model");
  model = await response.json();
  const m = model.model;
  const params = (n) => (n >= 1e9 ? (n / 1e9).toFixed(2) + "B" : (n / 1e6).toFixed(1) + "M");
  const preset = m.preset ? ` (${m.preset})` : "";
  $("model").textContent = `${m.source}${preset} · ${params(m.parameters)} parameters · ` +
    `${model.vae.codebook_dim}-bit VAE · ${model.device}`;
  for (const r of [...model.ratios].sort((a, b) => a - b)) {
    option($("ratio"), r, RATIO_NAMES[r] || String(r));
    option($("outpaint"), r, RATIO_NAMES[r] || String(r));
  }
  $("outpaint").value = "0.5";
  for (const pn of model.pixel_budgets) option($("pn"), pn, pn);
  const d = model.defaults;
  $("ratio").value = String(d.ratio);
  if ($("ratio").value === "") $("ratio").value = "1";
  $("pn").value = d.pn;
  $("cfg").value = d.cfg;
  $("tau").value = d.tau;
  $("candidates").value = d.candidates;
  $("candidates").max = model.limits.max_candidates;
  $("num_images").max = model.limits.max_images;
  showSize();
}

function chosenRatio() {
  // height / width of the canvas: the chosen ratio, the outpainting canvas, or the source's own
  if (tab === "generate") return Number($("ratio").value);
  if ($("mode").value === "outpaint") return Number($("outpaint").value);
  return source ? source.height / source.width : null;
}

function showSize() {
  // the size of the template nearest to the chosen ratio (the server picks it the same way)
  const ratio = chosenRatio();
  if (ratio === null) {
    $("size").textContent = "The template nearest to the source's aspect ratio is used.";
    return;
  }
  const nearest = model.ratios.reduce((a, b) => (Math.abs(b - ratio) < Math.abs(a - ratio) ? b : a));
  const key = Number.isInteger(nearest) ? nearest.toFixed(1) : String(nearest);
  const [h, w] = model.sizes[$("pn").value][key];
  $("size").textContent = `${w} × ${h} pixels, drawn in ${model.scales[$("pn").value]} scales`;
}

function readForm() {
  const body = { prompt: $("prompt").value };
  const negative = $("negative_prompt").value.trim();
  if (negative) body.negative_prompt = negative;
  if (tab === "generate") body.ratio = Number($("ratio").value);
  else Object.assign(body, readEdit());
  body.pn = $("pn").value;
  for (const name of ["cfg", "tau"]) if ($(name).value !== "") body[name] = Number($(name).value);
  for (const name of ["seed", "num_images", "candidates"]) {
    if ($(name).value !== "") body[name] = Number($(name).value);
  }
  return body;
}

function readEdit() {
  // the edit fields of POST /v1/images/edits: the source as chosen, and the mask as a white-on-black PNG
  const mode = $("mode").value;
  const body = { image: source.data };
  if (mode === "outpaint") body.outpaint = Number($("outpaint").value);
  if (mode === "inpaint") body.mask = maskPng();
  if (mode !== "outpaint" && $("keep_scales").value !== "") body.keep_scales = Number($("keep_scales").value);
  if (mode !== "variation" && $("dilate").value !== "") body.dilate = Number($("dilate").value);
  return body;
}

// ------------------------------------------------------------------------------------------- the mask
function maskPng() {
  const mask = $("mask-canvas");
  const painted = mask.getContext("2d").getImageData(0, 0, mask.width, mask.height);
  const out = document.createElement("canvas");
  out.width = mask.width;
  out.height = mask.height;
  const ctx = out.getContext("2d");
  const pixels = ctx.createImageData(mask.width, mask.height);
  for (let i = 0; i < painted.data.length; i += 4) {
    const v = painted.data[i + 3] > 0 ? 255 : 0;
    pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = v;
    pixels.data[i + 3] = 255;
  }
  ctx.putImageData(pixels, 0, 0);
  return out.toDataURL("image/png");
}

function brushRadius() {
  // the slider is in screen pixels; the canvas holds the source's own pixels
  const mask = $("mask-canvas");
  return (Number($("brush").value) / 2) * (mask.width / Math.max(1, mask.clientWidth));
}

function paintAt(e, from) {
  const mask = $("mask-canvas");
  const rect = mask.getBoundingClientRect();
  const x = ((e.clientX - rect.left) / rect.width) * mask.width;
  const y = ((e.clientY - rect.top) / rect.height) * mask.height;
  const ctx = mask.getContext("2d");
  ctx.globalCompositeOperation = $("erase").checked ? "destination-out" : "source-over";
  ctx.strokeStyle = ctx.fillStyle = "rgb(0, 190, 255)";
  ctx.lineWidth = 2 * brushRadius();
  ctx.lineCap = "round";
  ctx.beginPath();
  if (from) {
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(x, y);
    ctx.stroke();
  } else {
    ctx.arc(x, y, brushRadius(), 0, 2 * Math.PI);
    ctx.fill();
  }
  return { x, y };
}

function setUpPainting() {
  const mask = $("mask-canvas");
  let last = null;
  mask.addEventListener("pointerdown", (e) => {
    mask.setPointerCapture(e.pointerId);
    last = paintAt(e, null);
  });
  mask.addEventListener("pointermove", (e) => {
    if (last) last = paintAt(e, last);
  });
  const stop = () => { last = null; };
  mask.addEventListener("pointerup", stop);
  mask.addEventListener("pointercancel", stop);
  $("clear-mask").addEventListener("click", () => mask.getContext("2d").clearRect(0, 0, mask.width, mask.height));
  const showBrush = () => { $("brush-size").textContent = `${$("brush").value} px`; };
  $("brush").addEventListener("input", showBrush);
  showBrush();
}

function loadSource() {
  const file = $("source").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    const img = new Image();
    img.onload = () => {
      source = { data: reader.result, width: img.naturalWidth, height: img.naturalHeight };
      for (const id of ["source-canvas", "mask-canvas"]) {
        $(id).width = img.naturalWidth;
        $(id).height = img.naturalHeight;
      }
      $("source-canvas").getContext("2d").drawImage(img, 0, 0);
      $("canvas-wrap").dataset.loaded = "1";
      $("source").classList.remove("invalid");
      showSize();
    };
    img.onerror = () => say(`${file.name} is not an image this browser can read`, true);
    img.src = reader.result;
  };
  reader.readAsDataURL(file);
}

function showTab(name) {
  tab = name;
  document.body.dataset.tab = name;
  for (const button of document.querySelectorAll(".tabs button")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  $("generate").textContent = name === "edit" ? "Edit" : "Generate";
  if (model) showSize();
}

function showMode() {
  $("edit-panel").dataset.mode = $("mode").value;
  if (model) showSize();
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", isError);
}

function busy(on) {
  $("generate").disabled = on;
  $("cancel").disabled = !on;
}

function newCards(count, settings) {
  $("empty")?.remove();
  const made = [];
  for (let i = 0; i < count; i++) {
    const card = $("card").content.firstElementChild.cloneNode(true);
    card.querySelector(".frame").style.aspectRatio = `${settings.width} / ${settings.height}`;
    $("results").prepend(card);
    made.push(card);
  }
  return made.reverse(); // prepend reversed them: image 0 first on the page
}

function setState(card, state, badge) {
  card.dataset.state = state;
  if (badge !== undefined) card.querySelector(".badge").textContent = badge;
}

function showPreview(card, event) {
  const src = "data:image/png;base64," + event.png;
  card.querySelector(".frame img").src = src;
  card.dataset.previews = String(Number(card.dataset.previews) + 1);
  card.querySelector(".bar div").style.width = `${(100 * event.scale) / event.scales}%`;
  setState(card, "preview", `scale ${event.scale} / ${event.scales}`);
  const thumb = document.createElement("li");
  const img = document.createElement("img");
  img.src = src;
  img.alt = `scale ${event.scale}`;
  img.title = `after scale ${event.scale} of ${event.scales}`;
  thumb.appendChild(img);
  card.querySelector(".strip").appendChild(thumb);
}

function showImage(card, event) {
  const s = event.settings;
  const src = "data:image/png;base64," + event.png;
  card.querySelector(".frame img").src = src;
  card.querySelector(".frame img").alt = s.prompt;
  card.querySelector(".bar div").style.width = "100%";
  setState(card, "final");
  card.querySelector(".seed").textContent = `seed ${s.seed}`;
  card.querySelector(".seed").title = `${s.width} × ${s.height} pixels`;
  const link = card.querySelector(".download");
  link.href = src;
  link.download = `infinity-${s.seed}.png`;
  link.hidden = false;
  const dl = card.querySelector(".settings");
  if (s.edit) link.download = `infinity-edit-${s.seed}.png`;
  const rows = { prompt: s.prompt, negative: s.negative_prompt ?? "—", size: `${s.width} × ${s.height}`,
    ratio: s.ratio, "pixel budget": s.pn,
    cfg: s.cfg, tau: s.tau, "top-k": s.top_k, "top-p": s.top_p, candidates: s.candidates, seed: s.seed };
  if (s.edit) {
    rows.edit = s.edit.mode;
    if (s.edit.keep_scales !== null) rows["keep scales"] = s.edit.keep_scales;
    if (s.edit.mode !== "variation") rows["grow mask"] = s.edit.dilate;
  }
  for (const [key, value] of Object.entries(rows)) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = Array.isArray(value) ? value.join(", ") : String(value);
    dl.append(dt, dd);
  }
  card.querySelector(".command code").textContent = s.command;
  card.querySelector(".copy").addEventListener("click", () => navigator.clipboard?.writeText(s.command));
}

function finishAll(state, badge) {
  for (const card of cards) if (card.dataset.state !== "final") setState(card, state, badge);
}

function handle(event) {
  switch (event.type) {
    case "queued":
      cards = newCards(event.num_images, event.settings);
      say((event.notices || []).concat(["Waiting for the sampler…"]).join(" "));
      break;
    case "started":
      for (const i of event.images) setState(cards[i], "running", "starting");
      say(event.batch > event.images.length
        ? `Drawing, in one batch of ${event.batch} images with other requests…` : "Drawing…");
      break;
    case "preview":
      showPreview(cards[event.index], event);
      break;
    case "image":
      showImage(cards[event.index], event);
      break;
    case "done":
      say(`Done: ${cards.length} image${cards.length > 1 ? "s" : ""}.`);
      break;
    case "cancelled":
      finishAll("cancelled", "cancelled");
      say("Cancelled.");
      break;
    case "error":
      finishAll("error", "failed");
      say(event.message, true);
      break;
  }
}

async function readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) handle(JSON.parse(data));
    }
  }
}

async function generate(e) {
  e.preventDefault();
  for (const name of FIELDS) $(name).classList.remove("invalid");
  if (tab === "edit" && !source) {
    $("source").classList.add("invalid");
    say("Choose a source image to edit.", true);
    return;
  }
  busy(true);
  say("Sending…");
  cards = [];
  controller = new AbortController();
  try {
    const response = await fetch(tab === "edit" ? "/v1/images/edits/stream" : "/v1/images/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(readForm()),
      signal: controller.signal,
    });
    if (!response.ok) {
      const error = (await response.json()).error || {};
      const id = FIELD_IDS[error.field] || error.field;
      if (id && $(id)) $(id).classList.add("invalid");
      const wait = response.headers.get("Retry-After");
      say((error.message || `HTTP ${response.status}`) + (wait ? ` (retry in ${wait} s)` : ""), true);
      return;
    }
    await readEvents(response);
  } catch (err) {
    if (err.name === "AbortError") {
      finishAll("cancelled", "cancelled");
      say("Cancelled.");
    } else {
      say(String(err), true);
    }
  } finally {
    controller = null;
    busy(false);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", generate);
  $("cancel").addEventListener("click", () => controller?.abort());
  for (const button of document.querySelectorAll(".tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("mode").addEventListener("change", showMode);
  $("outpaint").addEventListener("change", showSize);
  $("source").addEventListener("change", loadSource);
  setUpPainting();
  showTab("generate");
  showMode();
  $("ratio").addEventListener("change", showSize);
  $("pn").addEventListener("change", showSize);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.metaKey || e.ctrlKey)) $("form").requestSubmit();
  });
  loadModel().catch((err) => say(`Could not read /v1/model: ${err}`, true));
});
