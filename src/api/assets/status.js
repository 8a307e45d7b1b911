// hazgate status page: live channel values, device health and active alarms.
// Served from the binary; no external resources.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

function fmtValue(c) {
  if (c.value === null || c.value === undefined) return "—";
  const v = Math.abs(c.value) >= 100 ? c.value.toFixed(1) : Number(c.value.toPrecision(4));
  return `${v} ${esc(c.unit)}`;
}

function fmtTime(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return isNaN(d) ? esc(ts) : esc(d.toLocaleString());
}

function channelClass(c) {
  const limits = (c.alarms || []).filter((a) => a !== "fault");
  if (limits.length) return "alarm";
  if (c.quality === "bad" || (c.alarms || []).includes("fault")) return "fault";
  if (c.quality === "good") return "ok";
  return "unknown";
}

function renderChannels(data) {
  $("#site").textContent = data.site || "";
  const byArea = new Map();
  for (const c of data.channels) {
    if (!byArea.has(c.area)) byArea.set(c.area, []);
    byArea.get(c.area).push(c);
  }
  let html = "";
  let alarms = 0, faults = 0;
  for (const [area, chans] of byArea) {
    html += `<div class="area"><h3>${esc(area)}</h3><div class="grid">`;
    for (const c of chans) {
      const cls = channelClass(c);
      if (cls === "alarm") alarms++;
      if (cls === "fault") faults++;
      const state = cls === "alarm" ? `ALARM ${esc(c.alarms.filter((a) => a !== "fault").join(" "))}`
        : cls === "fault" ? `FAULT: ${esc(c.reason || "fault")}` : cls === "ok" ? "normal" : "no reading yet";
      html += `<div class="card ${cls}" data-channel="${esc(c.id)}">
        <div class="id">${esc(c.label || c.id)}</div>
        <div class="value">${fmtValue(c)}</div>
        <div class="state">${state}</div></div>`;
    }
    html += "</div></div>";
  }
  $("#areas").innerHTML = html;
  if (!window.hazgateAlarms) renderAlarmsFromChannels(data.channels);
  $("#summary").textContent = `${data.channels.length} channels · ${alarms} in alarm · ${faults} in fault`;
}

// Active conditions straight from the channel snapshot (used when the alarm API is not served).
function renderAlarmsFromChannels(channels) {
  const rows = [];
  for (const c of channels) {
    for (const a of c.alarms || []) {
      const cls = a === "fault" ? "fault" : "alarm";
      rows.push(`<tr class="${cls}" data-alarm="${esc(c.id)}:${esc(a)}"><td>${a === "HH" || a === "LL" ? "critical" : "high"}</td>
        <td>${esc(c.label || c.id)} ${esc(a)}</td><td>${a === "fault" ? esc(c.reason || "fault") : "active"}</td>
        <td>${fmtValue(c)}</td><td>${fmtTime(c.ts)}</td><td></td></tr>`);
    }
  }
  $("#alarms tbody").innerHTML = rows.join("");
  $("#alarms-empty").hidden = rows.length > 0;
}

function renderDevices(data) {
  const rows = Object.entries(data.devices || {}).map(([id, d]) => {
    const cls = d.consecutive_failures > 0 ? "fault" : "";
    return `<tr class="${cls}"><td>${esc(id)}</td><td>${esc(d.source)}</td><td>${esc(d.unit_id)}</td>
      <td>${d.last_success ? fmtTime(d.last_success) : "never"}</td><td>${esc(d.consecutive_failures)}</td>
      <td>${d.latency_ms == null ? "—" : d.latency_ms.toFixed(1) + " ms"}</td><td>${esc(d.last_error || "")}</td></tr>`;
  });
  $("#devices tbody").innerHTML = rows.join("");
}

async function refreshDevices() {
  try {
    const r = await fetch("/api/v1/devices", { headers: authHeaders() });
    if (r.ok) renderDevices(await r.json());
  } catch (_) { /* shown by the connection indicator */ }
}

// The token entered below; sent with every request (needed for reads when the gateway is
// configured with `[api] reads = "viewer"`, and always for actions).
function token() { return sessionStorage.getItem("hazgate-token") || ""; }
function authHeaders() { return token() ? { "Authorization": `Bearer ${token()}` } : {}; }

let source = null;
// The stream's URL never carries the token: with a token the page first buys a single-use
// ticket (valid 60 s) and buys a new one for every reconnection.
async function connect() {
  if (source) { source.close(); source = null; }
  let q = "";
  if (token()) {
    try {
      const r = await fetch("/api/v1/stream/ticket", { method: "POST", headers: authHeaders() });
      // Refused (unknown token): try without one; that works when reads are open.
      if (r.ok) q = `?ticket=${encodeURIComponent((await r.json()).ticket)}`;
    } catch (_) { // gateway unreachable: try again
      $("#conn").textContent = "reconnecting…";
      setTimeout(() => { if (!source) connect(); }, 2000);
      return;
    }
  }
  if (source) return; // a newer connect() won the race
  const es = new EventSource(`/api/v1/stream${q}`);
  source = es;
  es.addEventListener("channels", (e) => {
    $("#conn").textContent = "live";
    renderChannels(JSON.parse(e.data));
  });
  es.onerror = () => {
    $("#conn").textContent = "reconnecting…";
    if (q && source === es) { // a used ticket cannot reconnect: start over with a new one
      es.close();
      source = null;
      setTimeout(() => { if (!source) connect(); }, 2000);
    }
  };
}

// Alarms from the alarm engine: acknowledge and reset need an operator token.
const alarms = {
  token,
  async call(method, path, body) {
    const r = await fetch(path, {
      method,
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
    return data;
  },
  async refresh() {
    try {
      const data = await this.call("GET", "/api/v1/alarms");
      window.hazgateAlarms = this;
      $("#alarm-error").textContent = "";
      const rows = (data.alarms || []).map((a) => {
        const cls = a.class === "fault" ? "fault" : "alarm";
        const value = a.value == null ? "—" : `${Number(a.value.toPrecision(4))} ${esc(a.unit)}`;
        const ack = a.unacknowledged ? `<button data-act="ack">Acknowledge</button>` : "";
        const reset = a.latched && !a.condition_active ? `<button data-act="reset">Reset</button>` : "";
        return `<tr class="${cls}" data-alarm="${esc(a.id)}"><td>${esc(a.priority)}</td><td>${esc(a.id)}</td>
          <td>${esc(a.state.replace(/_/g, " "))}</td><td>${value}</td><td>${fmtTime(a.since)}</td><td>${ack}${reset}</td></tr>`;
      });
      $("#alarms tbody").innerHTML = rows.join("");
      $("#alarms-empty").hidden = rows.length > 0;
      const m = data.site_mode || {};
      const mode = typeof m === "string" ? m : (m.mode || "normal");
      $("#mode").textContent = mode === "normal" ? "" : `site mode: ${mode}${m.by ? ` (set by ${m.by})` : ""}`;
    } catch (e) {
      $("#alarm-error").textContent = `Alarms: ${e.message}`;
    }
  },
  async act(id, action) {
    try {
      await this.call("POST", `/api/v1/alarms/${encodeURIComponent(id)}/${action}`, { comment: $("#user-note").value || undefined });
      $("#alarm-error").textContent = "";
    } catch (e) {
      $("#alarm-error").textContent = `${action} ${id}: ${e.message}`;
    }
    this.refresh();
  },
};

$("#token").value = alarms.token();
$("#token").addEventListener("change", () => {
  sessionStorage.setItem("hazgate-token", $("#token").value.trim());
  connect();
  refreshDevices();
  alarms.refresh();
});
$("#alarms").addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-act]");
  if (!b) return;
  alarms.act(b.closest("tr").dataset.alarm, b.dataset.act);
});

connect();
refreshDevices();
alarms.refresh();
setInterval(refreshDevices, 5000);
setInterval(() => alarms.refresh(), 2000);
