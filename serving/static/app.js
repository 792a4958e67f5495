// The demo page: send the photo to /explain and show label, probabilities and heatmap.
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function showBars(probabilities) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const [name, p] of Object.entries(probabilities)) {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.label = name;
    const label = document.createElement("span");
    label.textContent = name;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "probability";
    value.textContent = `${(p * 100).toFixed(1)}%`;
    row.append(label, track, value);
    bars.append(row);
  }
}

async function classify(file) {
  if (!file) return;
  $("result").hidden = true;
  setStatus("Classifying…");
  $("preview").src = URL.createObjectURL(file);
  const form = new FormData();
  form.append("file", file, file.name);
  let answer;
  try {
    let response = await fetch("/explain", { method: "POST", body: form, headers: headers() });
    answer = await response.json();
    if (response.status === 503 && answer.reason === "explain_busy") {
      // The server explains one photo at a time: show the label alone, without a heatmap.
      response = await fetch("/predict", { method: "POST", body: form, headers: headers() });
      answer = await response.json();
    }
    if (!response.ok) {
      setStatus(`${answer.error || "Request failed"} (${answer.reason || response.status})`, true);
      return;
    }
  } catch (err) {
    setStatus(`The server did not answer: ${err}`, true);
    return;
  }
  $("label").textContent = answer.label;
  $("confidence").textContent = `${(answer.confidence * 100).toFixed(1)}%`;
  $("model-version").textContent = answer.model_version;
  $("request-id").textContent = answer.request_id;
  $("inference-ms").textContent = answer.inference_ms.toFixed(1);
  $("heatmap").closest("figure").hidden = !answer.explanation;
  if (answer.explanation) {
    $("heatmap").src = `data:image/png;base64,${answer.explanation.overlay_png_base64}`;
  }
  showBars(answer.probabilities);
  $("result").hidden = false;
  setStatus("");
}

$("file").addEventListener("change", (event) => classify(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  classify(event.dataTransfer.files[0]);
});
