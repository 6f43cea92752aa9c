// The demo page: plain JavaScript against the gateway's native API (same origin, no build step, no CDN).
"use strict";
const $ = (id) => document.getElementById(id);

async function call(path, body) {
  const t0 = performance.now();
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const ms = performance.now() - t0;
  const isJson = (r.headers.get("Content-Type") || "").includes("json");
  const data = isJson ? await r.json() : await r.blob();
  if (!r.ok) throw new Error(isJson ? `${data.error}${data.field ? " (" + data.field + ")" : ""}` : `HTTP ${r.status}`);
  return { data, ms, headers: r.headers };
}
function meta(el, d, ms) {
  $(el).textContent = `model ${d.model || "?"} v${d.version || "?"} on ${d.device || "?"} · ${ms.toFixed(0)} ms`;
}
function fail(el, e) { $(el).innerHTML = `<span class="error">${e.message}</span>`; }

// ---------------------------------------------------------------- MNIST: draw on a canvas
const pad = $("pad"), ctx = pad.getContext("2d");
function clearPad() { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); $("digit").textContent = "–"; $("probs").innerHTML = ""; }
clearPad();
let drawing = false, last = null, pending = null;
function pos(e) { const b = pad.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; }
pad.addEventListener("pointerdown", (e) => { drawing = true; last = pos(e); pad.setPointerCapture(e.pointerId); });
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const p = pos(e);
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 18; ctx.lineCap = "round";
  ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke();
  last = p;
  schedulePredict();
});
pad.addEventListener("pointerup", () => { drawing = false; schedulePredict(); });
$("clear").onclick = clearPad;
function schedulePredict() { clearTimeout(pending); pending = setTimeout(predictDigit, 120); }
async function predictDigit() {
  try {
    const { data, ms } = await call("/api/mnist/predict", { image: pad.toDataURL("image/png") });
    const p = data.predictions[0];
    $("digit").textContent = `${p.digit}  (${(100 * p.confidence).toFixed(1)}%)`;
    $("probs").innerHTML = p.probabilities.map((v, i) =>
      `<div>${i} <span class="bar" style="width:${(200 * v).toFixed(0)}px"></span> ${(100 * v).toFixed(1)}%</div>`).join("");
    meta("mnist-meta", data, ms);
  } catch (e) { fail("mnist-meta", e); }
}

// ---------------------------------------------------------------- sentiment
$("classify").onclick = async () => {
  try {
    const { data, ms } = await call("/api/sentiment/predict", { text: $("review").value });
    const p = data.predictions[0];
    $("sentiment-out").textContent = `${p.label} (${p.score.toFixed(3)})`;
    meta("sentiment-meta", data, ms);
  } catch (e) { fail("sentiment-meta", e); }
};

// ---------------------------------------------------------------- translation
$("translate-btn").onclick = async () => {
  try {
    const { data, ms } = await call("/api/translate", { text: $("english").value, model: $("tmodel").value,
      beam_size: Number($("beam").value) });
    $("german").textContent = data.translation;
    meta("translate-meta", data, ms);
  } catch (e) { fail("translate-meta", e); }
};

// ---------------------------------------------------------------- generation, streamed (SSE over fetch)
$("generate-btn").onclick = async () => {
  const out = $("generated");
  out.textContent = "";
  const body = { prompt: $("prompt").value, stream: true, temperature: Number($("temp").value),
    top_k: Number($("topk").value), top_p: Number($("topp").value), seed: Number($("seed").value),
    max_tokens: Number($("maxtok").value) };
  const t0 = performance.now();
  let first = null;
  try {
    const r = await fetch("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!r.ok) { const d = await r.json(); throw new Error(d.error); }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, i); buf = buf.slice(i + 2);
        const line = event.split("\n").find((l) => l.startsWith("data: "));
        if (!line) continue;
        const d = JSON.parse(line.slice(6));
        if (event.startsWith("event: done")) {
          meta("generate-meta", d, performance.now() - t0);
          $("generate-meta").textContent += ` · first token ${first.toFixed(0)} ms · ${d.tokens} tokens · ${d.finish_reason}`;
        } else {
          if (first === null) first = performance.now() - t0;
          out.textContent += d.token;
        }
      }
    }
  } catch (e) { fail("generate-meta", e); }
};

// ---------------------------------------------------------------- GAN
async function showGrid(body) {
  try {
    const { data, ms, headers } = await call("/api/gan/sample", { ...body, format: "png" });
    $("grid").src = URL.createObjectURL(data);
    $("grid").hidden = false;  // shown once there is a first sample: no broken-image placeholder
    $("gan-meta").textContent =
      `model gan v${headers.get("X-Model-Version")} on ${headers.get("X-Model-Device") || "?"} · ${ms.toFixed(0)} ms`;
  } catch (e) { fail("gan-meta", e); }
}
$("sample-btn").onclick = () => showGrid({ n: Number($("gn").value), seed: Number($("gseed").value) });
$("interp-btn").onclick = () => showGrid({ interpolate: { from_seed: Number($("gfrom").value), to_seed: Number($("gto").value),
  steps: Number($("gsteps").value) }, columns: Number($("gsteps").value) });

// ---------------------------------------------------------------- imported models: their tensors, and their sample
const tensors = (ts) => ts.map((t) => `${t.name} ${t.datatype} [${t.shape.join(", ")}]`).join("; ");
function shown(o) {
  const data = o.data || [];
  return `${o.name} ${o.datatype} [${o.shape.join(", ")}]: ${data.slice(0, 8).map((v) =>
    typeof v === "number" ? Number(v.toPrecision(4)) : v).join(", ")}${data.length > 8 ? ", …" : ""}`;
}
async function listImported() {
  const box = $("imported-list");
  try {
    const r = await fetch("/api/models");
    const models = (await r.json()).models.filter((m) => m.service === "models");
    const seen = new Set();
    box.innerHTML = "";
    for (const m of models) {
      if (seen.has(m.name)) continue;  // newest version first
      seen.add(m.name);
      const div = document.createElement("div");
      div.className = "imported";
      div.dataset.model = m.name;
      const head = document.createElement("h3");
      head.textContent = m.state === "AVAILABLE" ? `${m.name} v${m.version}` : `${m.name}: ${m.state} (${m.error || ""})`;
      div.appendChild(head);
      if (m.state === "AVAILABLE") {
        const info = document.createElement("p");
        info.textContent = `inputs ${tensors(m.inputs)} → outputs ${tensors(m.outputs)}`;
        const button = document.createElement("button");
        button.textContent = "Send the sample";
        const out = document.createElement("pre");
        out.className = "out";
        button.onclick = async () => {
          try {
            const { data, ms } = await call(`/v2/models/${m.name}/infer`, m.example);
            out.textContent = data.outputs.map(shown).join("\n") + `\nv${data.model_version} · ${ms.toFixed(0)} ms`;
          } catch (e) { out.textContent = e.message; out.classList.add("error"); }
        };
        div.append(info, button, out);
      }
      box.appendChild(div);
    }
    if (!seen.size) box.textContent = "No imported model yet.";
  } catch (e) { box.textContent = e.message; box.classList.add("error"); }
}
listImported();
