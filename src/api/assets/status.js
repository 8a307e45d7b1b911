// hazgate status page: live channel values, device health and active alarms.
// Served from the binary; no external resources.
//
// Loss of view: the page never shows data it no longer receives as normal. It declares
// communication lost (banner, every value greyed and hatched with its age) when the live stream
// drops, when no engine heartbeat arrives within its deadline (a stalled gateway keeps the
// connection open but stops beating), or when the API stops answering. A channel whose reading
// is older than its max_age is greyed on its own. Times are shown in the site's time zone.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

// ---- Strings (zh-CN and en: every text a person reads on this page) ----
const STRINGS = {
  "zh-CN": {
    switch_to: "English", title: "监测预警", alarms: "当前报警", channels: "监测点", devices: "设备",
    token: "操作令牌", comment: "处置说明", priority: "级别", alarm: "报警", state: "状态", value: "数值",
    since: "时间", device: "设备", source: "连接", unit_id: "从站号", last_success: "最近成功",
    failures: "连续失败", latency: "延迟", last_error: "最近错误", never: "从未",
    no_alarms: "无活动报警。", alarms_unknown: "通信中断：报警状态未知。",
    connecting: "正在连接…", live: "实时", lost: "通信中断",
    banner: (t) => `通信中断 · 自 ${t} 起未收到数据，以下数值均为旧值`,
    cause_stream: "实时数据流断开", cause_heartbeat: "网关无心跳（可能已停止响应）", cause_api: "接口无应答",
    normal: "正常", no_reading: "尚无读数", alarm_word: "报警", fault: "故障", stale: "数据过期",
    unknown_state: "状态未知", age: (s) => `${s} 前`,
    summary: (n, a, f) => `${n} 个监测点 · ${a} 个报警 · ${f} 个故障`,
    ack: "确认", reset: "复位", response: "处置措施", sound: "紧急报警声音", raised_at: "报警于",
    in_composite: "参与报警", audit: "处理记录", recent: "最近数值（本页收到）", close: "关闭", by: "处理人", none: "无",
    current: "当前值", quality: { good: "正常", bad: "无效", unknown: "未知" }, site_mode: "站点模式",
    modes: { normal: "正常", suspended: "停产整顿", maintenance: "检修" }, set_by: "设置人",
    priorities: { critical: "紧急", high: "高", medium: "中", low: "低" },
    states: { normal: "正常", active_unacknowledged: "未确认", active_acknowledged: "已确认", returned_unacknowledged: "已恢复未确认", latched: "锁存", shelved: "搁置", suppressed: "按设计抑制", out_of_service: "停用" },
    reasons: { comm: "通信失败", exception: "设备异常应答", out_of_range: "超出量程（回路断线？）", device_fault: "设备故障码", stale: "数据过期", decode: "无法解析" },
    alarms_error: "报警", units_s: "秒", units_min: "分", units_h: "小时",
    ledger: "通知记录", ledger_time: "生成时间", ledger_to: "通知对象", ledger_answer: "确认",
    ledger_empty: "暂无通知记录。", ledger_token: "查看通知记录需要查看或操作令牌（通知记录含值班人员电话）。",
    ledger_off: "本网关未启用告警通知。", ledger_error: "通知记录读取失败", tier: (n) => `第 ${n} 级`,
    attempts: (n) => `尝试 ${n} 次`, call: "请联系",
  },
  en: {
    switch_to: "中文", title: "Safety monitoring", alarms: "Active alarms", channels: "Channels", devices: "Devices",
    token: "Operator token", comment: "Comment", priority: "Priority", alarm: "Alarm", state: "State", value: "Value",
    since: "Since", device: "Device", source: "Source", unit_id: "Unit", last_success: "Last success",
    failures: "Failures", latency: "Latency", last_error: "Last error", never: "never",
    no_alarms: "No active alarms.", alarms_unknown: "Communication lost: alarm state unknown.",
    connecting: "connecting…", live: "live", lost: "communication lost",
    banner: (t) => `Communication lost since ${t}: the values below are old`,
    cause_stream: "live stream dropped", cause_heartbeat: "no gateway heartbeat (it may have stalled)", cause_api: "API not answering",
    normal: "normal", no_reading: "no reading yet", alarm_word: "ALARM", fault: "FAULT", stale: "STALE",
    unknown_state: "state unknown", age: (s) => `${s} ago`,
    summary: (n, a, f) => `${n} channels · ${a} in alarm · ${f} in fault`,
    ack: "Acknowledge", reset: "Reset", response: "Response", sound: "Sound for critical alarms", raised_at: "raised",
    in_composite: "in alarm", audit: "Audit trail", recent: "Recent values (seen by this page)", close: "Close", by: "by", none: "none",
    current: "now", quality: { good: "good", bad: "bad", unknown: "unknown" }, site_mode: "site mode",
    modes: { normal: "normal", suspended: "suspended", maintenance: "maintenance" }, set_by: "set by",
    priorities: { critical: "critical", high: "high", medium: "medium", low: "low" },
    states: { normal: "normal", active_unacknowledged: "unacknowledged", active_acknowledged: "acknowledged", returned_unacknowledged: "returned, unacknowledged", latched: "latched", shelved: "shelved", suppressed: "suppressed by design", out_of_service: "out of service" },
    reasons: { comm: "communication failure", exception: "device exception", out_of_range: "out of range (open loop?)", device_fault: "device fault code", stale: "stale", decode: "undecodable" },
    alarms_error: "Alarms", units_s: "s", units_min: "min", units_h: "h",
    ledger: "Notification ledger", ledger_time: "Made", ledger_to: "To", ledger_answer: "Acknowledged",
    ledger_empty: "No notifications yet.", ledger_token: "The ledger needs a viewer or operator token (it lists the phone numbers of the people on duty).",
    ledger_off: "Alert delivery is not enabled on this gateway.", ledger_error: "Could not read the ledger", tier: (n) => `tier ${n}`,
    attempts: (n) => `${n} attempts`, call: "call",
  },
};

function pickLanguage() {
  const saved = localStorage.getItem("hazgate-lang");
  if (saved && STRINGS[saved]) return saved;
  const nav = (navigator.languages && navigator.languages[0]) || navigator.language || "zh-CN";
  return nav.toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}
let lang = pickLanguage();
const t = (k) => STRINGS[lang][k];

// ---- Site time ----
let site = { id: "", name: "", timezone: undefined };
function fmtParts(date, opts) {
  try {
    return new Intl.DateTimeFormat(lang === "zh-CN" ? "zh-CN" : "en-GB", { timeZone: site.timezone, hourCycle: "h23", ...opts }).format(date);
  } catch (_) {
    return new Intl.DateTimeFormat(lang === "zh-CN" ? "zh-CN" : "en-GB", { hourCycle: "h23", ...opts }).format(date);
  }
}
// The offset of the site's zone at `date`, as +08:00.
function offset(date) {
  try {
    const p = new Intl.DateTimeFormat("en-US", { timeZone: site.timezone, timeZoneName: "longOffset" }).formatToParts(date);
    const z = (p.find((x) => x.type === "timeZoneName") || {}).value || "GMT";
    return z === "GMT" ? "+00:00" : z.replace("GMT", "");
  } catch (_) { return ""; }
}
// `2026-11-30 05:28:18 +08:00`: the same shape in every language.
function fmtTime(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  if (isNaN(d)) return esc(ts);
  let p;
  try {
    p = new Intl.DateTimeFormat("en-CA", { timeZone: site.timezone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" }).formatToParts(d);
  } catch (_) {
    p = new Intl.DateTimeFormat("en-CA", { hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" }).formatToParts(d);
  }
  const g = (k) => (p.find((x) => x.type === k) || {}).value || "";
  return esc(`${g("year")}-${g("month")}-${g("day")} ${g("hour")}:${g("minute")}:${g("second")} ${offset(d)}`);
}
function fmtClock(d) {
  return `${fmtParts(d, { hour: "2-digit", minute: "2-digit", second: "2-digit" })} ${offset(d)}`;
}
function fmtAge(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return t("age")(`${s} ${t("units_s")}`);
  if (s < 7200) return t("age")(`${Math.round(s / 60)} ${t("units_min")}`);
  return t("age")(`${Math.round(s / 3600)} ${t("units_h")}`);
}

// ---- Loss of view ----
// The server's clock, estimated from the last heartbeat, so ages do not depend on the
// browser's clock.
const link = {
  streamOpen: false, lastBeat: 0, beatServer: 0, deadline: 5000,
  apiFailing: false, lastGood: null, everLive: false,
};
function serverNow() { return link.beatServer ? link.beatServer + (Date.now() - link.lastBeat) : Date.now(); }
function lostCause() {
  if (!link.everLive) return null;
  if (!link.streamOpen) return "cause_stream";
  if (Date.now() - link.lastBeat > link.deadline) return "cause_heartbeat";
  if (link.apiFailing) return "cause_api";
  return null;
}
function isLost() { return lostCause() !== null; }

function updateLink() {
  const cause = lostCause();
  const banner = $("#banner");
  document.body.classList.toggle("lost", cause !== null);
  document.body.classList.toggle("connecting", !link.everLive);
  if (cause) {
    const since = link.lastGood ? fmtClock(new Date(link.lastGood)) : "—";
    banner.hidden = false;
    banner.dataset.cause = cause.replace("cause_", "");
    banner.innerHTML = `<strong>${esc(t("banner")(since))}</strong> <span class="cause">(${esc(t(cause))})</span>`;
    $("#conn").textContent = t("lost");
  } else {
    banner.hidden = true;
    banner.textContent = "";
    $("#conn").textContent = link.everLive ? t("live") : t("connecting");
  }
  $("#clock").textContent = fmtClock(new Date(serverNow()));
  if (lastChannels) renderChannels(lastChannels);
  // The alarm table is redrawn when its data or the link state changes (not every second:
  // a button under a finger must not be replaced).
  if (cause !== shownCause) { shownCause = cause; renderAlarmTable(); }
}
let shownCause;

// ---- Channels ----
let lastChannels = null;
// A channel with state words (`states`, e.g. {"0": "停止", "1": "运行"}) shows the word for its value.
function stateWord(c) {
  if (!c.states || !Number.isInteger(c.value)) return null;
  const key = String(c.value);
  return Object.prototype.hasOwnProperty.call(c.states, key) ? c.states[key] : null;
}
// `stale`: the value is no longer received. A state word ("正常", "运行") would then state
// something nobody knows any more, so only the number is shown (greyed, with its age).
function fmtValue(c, stale = false) {
  if (c.value === null || c.value === undefined) return "—";
  const word = stale ? null : stateWord(c);
  if (word !== null) return esc(word);
  const v = Math.abs(c.value) >= 100 ? c.value.toFixed(1) : Number(c.value.toPrecision(4));
  return `${v} ${esc(c.unit)}`;
}

function channelClass(c) {
  const limits = (c.alarms || []).filter((a) => a !== "fault");
  if (limits.length) return "alarm";
  if (c.quality === "bad" || (c.alarms || []).includes("fault")) return "fault";
  if (c.quality === "good") return "ok";
  return "unknown";
}

// Recent values per channel as this page received them (for the alarm detail view).
const recent = new Map();
function remember(data) {
  for (const c of data.channels) {
    if (!c.ts) continue;
    const list = recent.get(c.id) || [];
    if (!list.length || list[list.length - 1].ts !== c.ts) list.push({ ts: c.ts, value: c.value, quality: c.quality });
    while (list.length > 30) list.shift();
    recent.set(c.id, list);
  }
}

// Channels read by an active composite alarm: their tiles are marked so none contradicts it.
function compositeMarks() {
  const marks = new Map();
  for (const a of (alarmData && alarmData.alarms) || []) {
    if (!(a.inputs && a.inputs.length) || !(a.condition_active || a.state === "latched" || a.unacknowledged)) continue;
    for (const ch of a.inputs) {
      if (!marks.has(ch)) marks.set(ch, []);
      marks.get(ch).push(a.label || a.id);
    }
  }
  return marks;
}

function renderChannels(data) {
  lastChannels = data;
  const marks = compositeMarks();
  if (data.site_info) {
    site = data.site_info;
    $("#site").textContent = site.name || site.id;
  } else {
    $("#site").textContent = data.site || "";
  }
  const lost = isLost();
  const now = serverNow();
  const byArea = new Map();
  for (const c of data.channels) {
    const name = c.area_name || c.area;
    if (!byArea.has(name)) byArea.set(name, []);
    byArea.get(name).push(c);
  }
  let html = "";
  let alarms = 0, faults = 0;
  for (const [area, chans] of byArea) {
    html += `<div class="area"><h3>${esc(area)}</h3><div class="grid">`;
    for (const c of chans) {
      const cls = channelClass(c);
      if (cls === "alarm") alarms++;
      if (cls === "fault") faults++;
      const ts = c.ts ? Date.parse(c.ts) : NaN;
      const age = isNaN(ts) ? null : now - ts;
      const old = age !== null && c.max_age_ms && age > c.max_age_ms;
      const stale = lost || old;
      let state = cls === "alarm" ? `${t("alarm_word")} ${esc(c.alarms.filter((a) => a !== "fault").join(" "))}`
        : cls === "fault" ? `${t("fault")}: ${esc(t("reasons")[c.reason_kind] || c.reason || "fault")}`
          : cls === "ok" ? t("normal") : t("no_reading");
      // Never "normal" for data that is no longer received.
      if (stale && cls === "ok") state = t("unknown_state");
      const inAlarm = marks.get(c.id);
      const markText = inAlarm ? `<div class="in-composite">${esc(t("in_composite"))}: ${esc(inAlarm.join("、"))}</div>` : "";
      const ageText = stale && age !== null ? `<div class="age">${esc(t("stale"))} · ${esc(fmtAge(age))}</div>` : "";
      html += `<div class="card ${cls}${stale ? " stale" : ""}${inAlarm ? " in-alarm" : ""}" data-channel="${esc(c.id)}">
        <div class="id">${esc(c.label || c.id)}</div>${c.device_name ? `<div class="dev">${esc(c.device_name)}</div>` : ""}
        <div class="value">${fmtValue(c, stale)}</div>
        <div class="state">${state}</div>${markText}${ageText}</div>`;
    }
    html += "</div></div>";
  }
  // Only redraw what changed: an element under a finger (or a test) stays put.
  if (html !== renderedAreas) { $("#areas").innerHTML = html; renderedAreas = html; }
  if (!alarmData) renderAlarmsFromChannels(data.channels);
  $("#summary").textContent = t("summary")(data.channels.length, alarms, faults);
}

// Active conditions straight from the channel snapshot (used when the alarm API is not served).
function renderAlarmsFromChannels(channels) {
  const rows = [];
  for (const c of channels) {
    for (const a of c.alarms || []) {
      const cls = a === "fault" ? "fault" : "alarm";
      const p = a === "HH" || a === "LL" ? "critical" : "high";
      rows.push(`<tr class="${cls}" data-alarm="${esc(c.id)}:${esc(a)}"><td>${esc(t("priorities")[p])}</td>
        <td>${esc(c.label || c.id)} ${esc(a)}${c.device_name ? ` · ${esc(c.device_name)}` : ""}</td><td>${a === "fault" ? esc(t("reasons")[c.reason_kind] || c.reason || "fault") : esc(t("states").active_unacknowledged)}</td>
        <td>${fmtValue(c)}</td><td>${fmtTime(c.ts)}</td><td></td></tr>`);
    }
  }
  setAlarmRows(rows);
}

let renderedAreas = "";
let renderedRows = "";
function setAlarmRows(rows) {
  const html = rows.join("");
  if (html !== renderedRows) { $("#alarms tbody").innerHTML = html; renderedRows = html; }
  $("#alarms").classList.toggle("stale", isLost());
  const empty = $("#alarms-empty");
  empty.hidden = rows.length > 0 && !isLost();
  // "No active alarms" is a claim about the present: not made without communication.
  empty.textContent = isLost() ? t("alarms_unknown") : t("no_alarms");
  empty.classList.toggle("error", isLost());
}

// ---- Devices ----
function renderDevices(data) {
  const rows = Object.entries(data.devices || {}).map(([id, d]) => {
    const cls = d.consecutive_failures > 0 ? "fault" : "";
    return `<tr class="${cls}"><td>${esc(id)}</td><td>${esc(d.source)}</td><td>${esc(d.unit_id)}</td>
      <td>${d.last_success ? fmtTime(d.last_success) : esc(t("never"))}</td><td>${esc(d.consecutive_failures)}</td>
      <td>${d.latency_ms == null ? "—" : d.latency_ms.toFixed(1) + " ms"}</td><td>${esc(d.last_error || "")}</td></tr>`;
  });
  $("#devices tbody").innerHTML = rows.join("");
}

// Every request has a deadline: a stopped gateway must not leave a request hanging forever.
async function timedFetch(path, opts = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 4000);
  try {
    return await fetch(path, { ...opts, signal: ctl.signal });
  } finally {
    clearTimeout(timer);
  }
}

async function refreshDevices() {
  try {
    const r = await timedFetch("/api/v1/devices", { headers: authHeaders() });
    if (r.ok) renderDevices(await r.json());
  } catch (_) { /* shown by the connection banner */ }
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
      const r = await timedFetch("/api/v1/stream/ticket", { method: "POST", headers: authHeaders() });
      // Refused (unknown token): try without one; that works when reads are open.
      if (r.ok) q = `?ticket=${encodeURIComponent((await r.json()).ticket)}`;
    } catch (_) { // gateway unreachable: try again
      link.streamOpen = false;
      updateLink();
      setTimeout(() => { if (!source) connect(); }, 2000);
      return;
    }
  }
  if (source) return; // a newer connect() won the race
  const es = new EventSource(`/api/v1/stream${q}`);
  source = es;
  es.onopen = () => { link.streamOpen = true; };
  es.addEventListener("channels", (e) => {
    link.streamOpen = true;
    const data = JSON.parse(e.data);
    remember(data);
    renderChannels(data);
  });
  es.addEventListener("heartbeat", (e) => {
    const hb = JSON.parse(e.data);
    link.streamOpen = true;
    link.lastBeat = Date.now();
    link.beatServer = hb.ts ? Date.parse(hb.ts) : Date.now();
    link.deadline = hb.deadline_ms || 5000;
    link.lastGood = link.beatServer;
    link.everLive = true;
    updateLink();
  });
  es.onerror = () => {
    link.streamOpen = false;
    updateLink();
    if (q && source === es) { // a used ticket cannot reconnect: start over with a new one
      es.close();
      source = null;
      setTimeout(() => { if (!source) connect(); }, 2000);
    }
  };
}

// ---- Alarms from the alarm engine: acknowledge and reset need an operator token ----
let alarmData = null;
function renderAlarmTable() {
  if (!alarmData) { if (lastChannels) renderAlarmsFromChannels(lastChannels.channels); return; }
  const rows = (alarmData.alarms || []).map((a) => {
    const cls = a.class === "fault" ? "fault" : "alarm";
    const value = a.value == null ? "—" : `${Number(a.value.toPrecision(4))} ${esc(a.unit)}`;
    // A latched alarm shows the current value and when it was raised (not when it cleared).
    const latched = a.state === "latched";
    const when = latched && a.raised_at ? `${esc(t("raised_at"))} ${fmtTime(a.raised_at)}` : fmtTime(a.since);
    const valueCell = latched ? `${esc(t("current"))} ${value}` : value;
    const ack = a.unacknowledged ? `<button data-act="ack">${esc(t("ack"))}</button>` : "";
    const reset = a.latched && !a.condition_active ? `<button data-act="reset">${esc(t("reset"))}</button>` : "";
    const what = `<div class="al-label">${esc(a.label || a.id)} <span class="al-cond">${esc(a.condition)}</span></div>
      <div class="al-where">${esc(a.area_name || a.area)}${a.device_name ? ` · <span class="al-dev">${esc(a.device_name)}</span>` : ""} · <code>${esc(a.id)}</code></div>
      ${a.message ? `<div class="al-msg">${esc(a.message)}</div>` : ""}
      ${a.response ? `<div class="al-resp"><strong>${esc(t("response"))}：</strong>${esc(a.response)}</div>` : ""}`;
    return `<tr class="${cls} st-${esc(a.state)}" data-alarm="${esc(a.id)}"><td>${esc(t("priorities")[a.priority] || a.priority)}</td><td class="al-what">${what}</td>
      <td class="al-state"><span class="badge">${esc(t("states")[a.state] || a.state)}</span></td><td>${valueCell}</td><td>${when}</td><td class="al-actions">${ack}${reset}</td></tr>`;
  });
  setAlarmRows(rows);
  renderCounts();
  announce();
  const m = alarmData.site_mode || {};
  const mode = typeof m === "string" ? m : (m.mode || "normal");
  $("#mode").textContent = mode === "normal" ? "" : `${t("site_mode")}: ${t("modes")[mode] || mode}${m.by ? ` (${t("set_by")} ${m.by})` : ""}`;
}

const alarms = {
  token,
  async call(method, path, body) {
    const r = await timedFetch(path, {
      method,
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const err = new Error(data.error || `HTTP ${r.status}`);
      err.answered = true;
      throw err;
    }
    return data;
  },
  async refresh() {
    try {
      const fresh = await this.call("GET", "/api/v1/alarms");
      link.apiFailing = false;
      $("#alarm-error").textContent = "";
      if (JSON.stringify(fresh) !== JSON.stringify(alarmData)) { alarmData = fresh; renderAlarmTable(); }
    } catch (e) {
      // No answer at all (network error, timeout, gateway gone): communication lost.
      link.apiFailing = !e.answered;
      $("#alarm-error").textContent = `${t("alarms_error")}: ${e.message}`;
    }
    updateLink();
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

// Counts by priority in the header; the header takes the colour of the worst unacknowledged
// alarm.
const ORDER = ["critical", "high", "medium", "low"];
function renderCounts() {
  const list = (alarmData && alarmData.alarms) || [];
  const counts = { critical: 0, high: 0, medium: 0, low: 0 };
  let worst = null;
  for (const a of list) {
    if (a.state === "normal") continue;
    counts[a.priority] = (counts[a.priority] || 0) + 1;
    if (a.unacknowledged && (worst === null || ORDER.indexOf(a.priority) < ORDER.indexOf(worst))) worst = a.priority;
  }
  $("#counts").innerHTML = ORDER.map((p) => `<span class="count p-${p}" data-priority="${p}">${esc(t("priorities")[p])} ${counts[p]}</span>`).join("");
  const h = $("#header");
  for (const p of ORDER) h.classList.toggle(`worst-${p}`, worst === p);
}

// Optional audible cue (Web Audio, nothing downloaded; off by default, the switch in the header
// is remembered in localStorage). A critical alarm that becomes active and unacknowledged while
// the page is open starts the cue once: a pulsing tone that goes on until every alarm that
// started it is acknowledged (or leaves that state), or the switch is turned off. Alarms already
// active when the page opens start none.
const heard = new Set();
const sounding = new Set();
let firstAnnounce = true;
let audio = null;
let tone = null;
function announce() {
  const list = (alarmData && alarmData.alarms) || [];
  const now = new Set();
  let fresh = false;
  for (const a of list) {
    if (a.priority !== "critical" || a.state !== "active_unacknowledged") continue;
    now.add(a.id);
    if (!heard.has(a.id)) {
      heard.add(a.id);
      if (!firstAnnounce && $("#sound").checked) { sounding.add(a.id); fresh = true; }
    }
  }
  for (const id of [...heard]) if (!now.has(id)) heard.delete(id);
  for (const id of [...sounding]) if (!now.has(id)) sounding.delete(id);
  if (fresh) startCue();
  else if (sounding.size === 0) stopCue();
  firstAnnounce = false;
}
function audioContext() {
  if (!audio) {
    try { audio = new (window.AudioContext || window.webkitAudioContext)(); } catch (_) { audio = null; }
  }
  return audio;
}
function startCue() {
  stopCue();
  const ctx = audioContext();
  if (!ctx) return;
  try {
    if (ctx.state === "suspended" && ctx.resume) ctx.resume();
    const o = ctx.createOscillator();
    const g = ctx.createGain();
    o.frequency.value = 880;
    o.connect(g); g.connect(ctx.destination);
    // 0.6 s on, 1.4 s off, for at most 10 minutes unless acknowledged before.
    const t0 = ctx.currentTime;
    for (let i = 0; i < 300; i++) {
      g.gain.setValueAtTime(0.2, t0 + i * 2);
      g.gain.setValueAtTime(0, t0 + i * 2 + 0.6);
    }
    o.start();
    o.stop(t0 + 600);
    tone = o;
  } catch (_) { tone = null; /* no audio device */ }
}
function stopCue() {
  if (!tone) return;
  try { tone.stop(); } catch (_) { /* already stopped */ }
  tone = null;
}
$("#sound").checked = localStorage.getItem("hazgate-sound") === "on";
$("#sound").addEventListener("change", () => {
  const on = $("#sound").checked;
  localStorage.setItem("hazgate-sound", on ? "on" : "off");
  if (on) audioContext(); // created under the click: browsers let it sound
  else { sounding.clear(); stopCue(); }
});
// A context made at load (switch remembered on) may start suspended until the page is used.
document.addEventListener("click", () => { if (audio && audio.state === "suspended" && audio.resume) audio.resume(); });

// ---- The notification ledger (who was notified, when, delivered or not): needs a token ----
// Its words and times come from the API in the page's language (`?lang=`), times in the site's
// zone with their offset.
async function refreshLedger() {
  const box = $("#ledger");
  if (!box.open) return;
  const note = $("#ledger-note");
  let rows = [];
  try {
    const r = await timedFetch(`/api/v1/notifications?limit=50&lang=${encodeURIComponent(lang)}`, { headers: authHeaders() });
    const data = await r.json().catch(() => ({}));
    if (r.status === 401 || r.status === 403) {
      note.textContent = t("ledger_token");
    } else if (r.status === 503) {
      note.textContent = t("ledger_off");
    } else if (!r.ok) {
      note.textContent = `${t("ledger_error")}: ${data.error || `HTTP ${r.status}`}`;
    } else {
      rows = (data.notifications || []).map((n) => {
        const x = n.text || {};
        const call = (n.call || []).length ? `<div class="muted">${esc(t("call"))} ${esc(n.call.join("、"))}</div>` : "";
        const err = n.last_error ? `<div class="error">${esc(n.last_error)}</div>` : "";
        return `<tr class="ld-${esc(n.status)}" data-ledger="${esc(n.id)}"><td>${esc(x.created)}</td>
          <td>${esc(x.priority)} ${esc(x.transition || "")} <code>${esc((n.alarms || []).join(", "))}</code><div class="muted">${esc(x.reason)}</div></td>
          <td>${esc(n.receiver)} · ${esc(n.route)} · ${esc(t("tier")(n.tier))}${call}</td>
          <td>${esc(x.status)}<div class="muted">${esc(t("attempts")(n.attempts))}${x.finished ? ` · ${esc(x.finished)}` : ""}</div>${err}</td>
          <td>${n.answered_by ? `${esc(n.answered_by)}<div class="muted">${esc(x.answered_at || "")}</div>` : ""}</td></tr>`;
      });
      note.textContent = rows.length ? "" : t("ledger_empty");
    }
  } catch (e) {
    note.textContent = `${t("ledger_error")}: ${e.message}`;
  }
  $("#ledger-table tbody").innerHTML = rows.join("");
}
$("#ledger").addEventListener("toggle", refreshLedger);

// Clicking an alarm: its audit trail (who acknowledged, reset, shelved, with comments) and the
// channel's recent values.
async function showDetail(id) {
  const box = $("#detail");
  box.hidden = false;
  box.dataset.alarm = id;
  let audit = [];
  let alarm = null;
  try {
    const r = await alarms.call("GET", `/api/v1/alarms/${encodeURIComponent(id)}/audit`);
    audit = r.events || [];
    alarm = r.alarm;
  } catch (e) {
    audit = null;
    box.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
  if (audit === null) return;
  const rows = audit.map((e) => `<tr><td>${fmtTime(e.ts)}</td><td>${esc((TRANSITIONS[lang] || {})[e.transition] || e.transition)}</td>
    <td>${esc(e.by || "")}</td><td>${esc(e.comment || "")}</td></tr>`).join("");
  const ch = alarm && alarm.channel;
  const vals = (recent.get(ch) || []).slice().reverse().map((v) => `<tr><td>${fmtTime(v.ts)}</td><td>${v.value == null ? "—" : esc(Number(v.value.toPrecision(4)))} ${esc(alarm.unit || "")}</td><td>${esc(t("quality")[v.quality] || v.quality)}</td></tr>`).join("");
  box.innerHTML = `<div class="detail-head"><strong>${esc((alarm && alarm.label) || id)}</strong> <code>${esc(id)}</code>
      <button type="button" data-close>${esc(t("close"))}</button></div>
    <h3>${esc(t("audit"))}</h3><div class="scroll"><table class="audit"><tbody>${rows || `<tr><td>${esc(t("none"))}</td></tr>`}</tbody></table></div>
    <h3>${esc(t("recent"))}</h3><div class="scroll"><table class="recent"><tbody>${vals || `<tr><td>${esc(t("none"))}</td></tr>`}</tbody></table></div>`;
}
const TRANSITIONS = {
  "zh-CN": { raised: "报警", cleared: "报警消除", fault: "故障", fault_cleared: "故障恢复", acknowledged: "已确认", reset: "已复位", shelved: "已搁置", unshelved: "取消搁置", out_of_service: "停用", returned_to_service: "恢复投用", suppressed: "按设计抑制", unsuppressed: "取消抑制", chattering: "报警抖动", removed: "已因配置变更移除", config_changed: "配置已重新加载" },
  en: { raised: "raised", cleared: "cleared", fault: "fault", fault_cleared: "fault cleared", acknowledged: "acknowledged", reset: "reset", shelved: "shelved", unshelved: "unshelved", out_of_service: "out of service", returned_to_service: "returned to service", suppressed: "suppressed", unsuppressed: "unsuppressed", chattering: "chattering", removed: "removed by a configuration change", config_changed: "configuration reloaded" },
};
$("#detail").addEventListener("click", (ev) => {
  if (ev.target.closest("[data-close]")) { $("#detail").hidden = true; }
});

// ---- Language ----
function applyLanguage() {
  document.documentElement.lang = lang;
  document.title = `${site.name || site.id || "hazgate"} · ${t("title")}`;
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
  $("#lang").textContent = t("switch_to");
  $("#user-note").placeholder = lang === "zh-CN" ? "已采取的措施" : "what was done";
  updateLink();
  renderAlarmTable();
  const open = $("#detail");
  if (!open.hidden && open.dataset.alarm) showDetail(open.dataset.alarm);
}
$("#lang").addEventListener("click", () => {
  lang = lang === "zh-CN" ? "en" : "zh-CN";
  localStorage.setItem("hazgate-lang", lang);
  applyLanguage();
  refreshDevices();
  refreshLedger();
});

$("#token").value = alarms.token();
$("#token").addEventListener("change", () => {
  sessionStorage.setItem("hazgate-token", $("#token").value.trim());
  connect();
  refreshDevices();
  alarms.refresh();
  refreshLedger();
});
$("#alarms").addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-act]");
  const tr = ev.target.closest("tr[data-alarm]");
  if (b) { alarms.act(b.closest("tr").dataset.alarm, b.dataset.act); return; }
  if (tr) showDetail(tr.dataset.alarm);
});

applyLanguage();
connect();
refreshDevices();
alarms.refresh();
setInterval(refreshDevices, 5000);
setInterval(refreshLedger, 10000);
setInterval(() => alarms.refresh(), 2000);
setInterval(updateLink, 1000);
