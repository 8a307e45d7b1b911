//! Grafana dashboards and provisioning generated from a site's resolved configuration
//! (`hazgate dashboards --config FILE --out DIR`); the shipped `dashboards/` is this module's
//! output for `config/demo.toml`.
//!
//! - **Equipment kinds** ([`classify`]): each device is classed by the kinds of its channels
//!   (a channel of kind `generic` gets one from its unit: `%LEL` combustible gas, `ppm` toxic
//!   gas, `%VOL` oxygen, `Pa` differential pressure, `kPa` pressure, `kW` power, `kWh` energy;
//!   else from its register name: `lel`, `h2s`/`co`/`nh3`…, `o2`, `dp`, `level`, `flow`,
//!   `running`, `spark`, `speed`, …, see [`kind_of`]):
//!   differential pressure, spark or rotary-valve fault → dry dust collector; tank level with
//!   flow → wet dust collector (water tank and circulation); tank level → tank; combustible or
//!   toxic gas or oxygen → gas detector; power or energy → power feeder; running or speed →
//!   production line; anything else → other. One dashboard per equipment board (gas, tanks, dust,
//!   lines, power, other), one row per equipment kind (gas: per gas kind, toxic gases per
//!   species, i.e. the channel's last id segment), one panel per signal within it.
//! - **Thresholds** come from the channel's `[[rules]]` limits (LL/L/H/HH, in the channel's unit)
//!   and are coloured by the limit's priority; channels whose limits differ never share a panel,
//!   so every line drawn is the limit of every channel on that panel.
//! - **States** (`running`, `spark`, `valve_fault` and every bit register) are state timelines
//!   of `last()` with value mappings from [`state_words`].
//! - **Legends**: the channel's label (its id when it has none) and its area.
//! - **Annotations** per dashboard: alarm events of its channels, filtered by the `priority`
//!   variable, with tags transition, priority and `by` (who acted): raised in red, cleared in
//!   green, actions by people in blue.
//! - Texts in `[site] language` (`en` or `zh-CN`); times in the site's time zone
//!   (`alarms.schedule.timezone`, the browser's when it is left at UTC).
//!
//! Queries are InfluxQL (InfluxDB 1.8, 2.x through its v1 API, 3.x) over the schema in
//! docs/ARCHITECTURE.md; `tests/dashboards.rs` runs every one against a real influxd.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::{DataType, Language, Resolved, ResolvedChannel};
use crate::model::Priority;

/// Where the Debian package installs the dashboards (the provisioning file points there).
pub const INSTALL_DIR: &str = "/usr/share/hazgate/dashboards";

/// How far back the overview looks for the last event of each alarm (alarms whose last event is
/// older are not shown as open): the alarm journal's default retention.
pub const ALARM_LOOKBACK: &str = "90d";

/// How far back the overview looks for the last reading of each channel.
pub const READING_LOOKBACK: &str = "1d";

/// One generated file, relative to the output directory.
#[derive(Debug, Clone)]
pub struct File {
    /// Relative path, e.g. `gas.json` or `provisioning/dashboards.yaml`.
    pub path: PathBuf,
    /// Contents.
    pub contents: String,
}

/// Equipment kinds, in dashboard order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Equipment {
    /// Gas detectors (combustible, toxic, oxygen).
    Gas,
    /// Storage tanks (level, temperature, pressure).
    Tank,
    /// Dry (bag) dust collectors.
    DustDry,
    /// Wet dust collectors (water tank level, circulation flow).
    DustWet,
    /// Production lines (running, speed).
    Line,
    /// Power feeders (active power, energy).
    Power,
    /// Anything else.
    Other,
}

impl Equipment {
    /// The dashboard (file stem) the equipment is shown on.
    pub fn board(self) -> &'static str {
        match self {
            Equipment::Gas => "gas",
            Equipment::Tank => "tanks",
            Equipment::DustDry | Equipment::DustWet => "dust",
            Equipment::Line => "lines",
            Equipment::Power => "power",
            Equipment::Other => "other",
        }
    }

    fn name(self, lang: Language) -> &'static str {
        match self {
            Equipment::Gas => tr(lang, "Gas detectors", "气体探测器"),
            Equipment::Tank => tr(lang, "Tanks", "储罐"),
            Equipment::DustDry => tr(lang, "Dry dust collectors", "干式除尘器"),
            Equipment::DustWet => tr(lang, "Wet dust collectors", "湿式除尘器"),
            Equipment::Line => tr(lang, "Production lines", "生产线"),
            Equipment::Power => tr(lang, "Power feeders", "供电回路"),
            Equipment::Other => tr(lang, "Other signals", "其他信号"),
        }
    }
}

fn tr(lang: Language, en: &'static str, zh: &'static str) -> &'static str {
    match lang {
        Language::En => en,
        Language::ZhCn => zh,
    }
}

/// The channel's kind, or, when it is `generic` or unset, one derived from its unit and else
/// from its register name (the last segment of its id).
pub fn kind_of(ch: &ResolvedChannel) -> String {
    if !ch.kind.is_empty() && ch.kind != "generic" {
        return ch.kind.clone();
    }
    let by_unit = match ch.unit.as_str() {
        "%LEL" => Some("combustible_gas"),
        "ppm" => Some("toxic_gas"),
        "%VOL" => Some("oxygen"),
        "Pa" => Some("differential_pressure"),
        "kPa" | "MPa" => Some("pressure"),
        "kW" => Some("power"),
        "kWh" => Some("energy"),
        _ => None,
    };
    let register = ch.id.as_str().rsplit('.').next().unwrap_or_default();
    let by_name = match register.to_ascii_lowercase().as_str() {
        "lel" => "combustible_gas",
        "h2s" | "co" | "nh3" | "cl2" | "so2" | "no2" | "hcn" => "toxic_gas",
        "o2" => "oxygen",
        "dp" => "differential_pressure",
        "level" => "tank_level",
        "flow" => "flow",
        "running" | "run" => "running",
        "spark" => "spark",
        "speed" => "speed",
        "power" => "power",
        "energy" => "energy",
        "temperature" | "temp" => "temperature",
        "pressure" => "pressure",
        _ => "generic",
    };
    by_unit.unwrap_or(by_name).to_owned()
}

/// The equipment kind of a device from the kinds of its channels (see the module docs).
pub fn classify<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Equipment {
    let k: HashSet<&str> = kinds.into_iter().collect();
    let any = |xs: &[&str]| xs.iter().any(|x| k.contains(x));
    if any(&["differential_pressure", "spark", "valve_fault"]) {
        Equipment::DustDry
    } else if k.contains("tank_level") && k.contains("flow") {
        Equipment::DustWet
    } else if k.contains("tank_level") {
        Equipment::Tank
    } else if any(&["combustible_gas", "toxic_gas", "oxygen"]) {
        Equipment::Gas
    } else if any(&["power", "energy"]) {
        Equipment::Power
    } else if any(&["running", "speed"]) {
        Equipment::Line
    } else {
        Equipment::Other
    }
}

/// The words shown for 0 and 1 of a state channel, by kind: `(text, colour)` for 0 and for 1.
pub fn state_words(kind: &str, lang: Language) -> [(&'static str, &'static str); 2] {
    match kind {
        "running" => [
            (tr(lang, "stopped", "停机"), "orange"),
            (tr(lang, "running", "运行"), "green"),
        ],
        "spark" => [
            (tr(lang, "no spark", "无火花"), "green"),
            (tr(lang, "spark detected", "探测到火花"), "red"),
        ],
        "valve_fault" => [
            (tr(lang, "ok", "正常"), "green"),
            (tr(lang, "fault", "故障"), "red"),
        ],
        _ => [
            (tr(lang, "off", "关"), "blue"),
            (tr(lang, "on", "开"), "green"),
        ],
    }
}

/// A Grafana unit id for an engineering unit; units Grafana does not know become a custom
/// suffix (`suffix:%LEL`).
pub fn grafana_unit(unit: &str) -> String {
    let known = match unit {
        "" => "none",
        "ppm" => "ppm",
        "ppb" => "ppb",
        "Pa" => "pressurepa",
        "hPa" => "pressurehpa",
        "kPa" => "pressurekpa",
        "bar" => "pressurebar",
        "mbar" => "pressurembar",
        "°C" | "degC" | "C" => "celsius",
        "°F" => "fahrenheit",
        "m" => "lengthm",
        "mm" => "lengthmm",
        "km" => "lengthkm",
        "%" => "percent",
        "W" => "watt",
        "kW" => "kwatt",
        "MW" => "megwatt",
        "Wh" => "watth",
        "kWh" => "kwatth",
        "MWh" => "mwatth",
        "A" => "amp",
        "V" => "volt",
        "kV" => "kvolt",
        "Hz" => "hertz",
        "mg/m3" | "mg/m³" => "conmgm3",
        "L/min" => "flowlpm",
        "L/h" => "litreh",
        "m3/s" | "m³/s" => "flowcms",
        "s" => "s",
        _ => return format!("suffix:{}", unit.replace("m3", "m³")),
    };
    known.to_owned()
}

/// The limits configured on a channel, with their priorities.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Low-low.
    pub ll: Option<(f64, Priority)>,
    /// Low.
    pub l: Option<(f64, Priority)>,
    /// High.
    pub h: Option<(f64, Priority)>,
    /// High-high.
    pub hh: Option<(f64, Priority)>,
}

impl Limits {
    /// The limit values, in ascending order.
    pub fn values(&self) -> Vec<f64> {
        let mut v: Vec<f64> = [self.ll, self.l, self.h, self.hh]
            .iter()
            .flatten()
            .map(|(x, _)| *x)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn key(&self) -> String {
        format!("{:?}", self)
    }

    fn describe(&self) -> String {
        [
            ("LL", self.ll),
            ("L", self.l),
            ("H", self.h),
            ("HH", self.hh),
        ]
        .iter()
        .filter_map(|(n, l)| l.map(|(v, _)| format!("{n} {v}")))
        .collect::<Vec<_>>()
        .join(" · ")
    }
}

/// The limits of `channel` from the compiled alarm plan (explicit rules and kind defaults).
pub fn limits(cfg: &Resolved, channel: &str) -> Limits {
    let mut out = Limits::default();
    for a in cfg.plan.on_channel(channel) {
        let crate::rules::plan::Detector::Limit { limit, .. } = a.detector else {
            continue;
        };
        let slot = match a.condition.as_str() {
            "LL" => &mut out.ll,
            "L" => &mut out.l,
            "H" => &mut out.h,
            "HH" => &mut out.hh,
            _ => continue,
        };
        *slot = Some((limit, a.priority));
    }
    out
}

fn colour(p: Priority) -> &'static str {
    match p {
        Priority::Critical => "red",
        Priority::High => "orange",
        Priority::Medium => "yellow",
        Priority::Low => "blue",
    }
}

/// Grafana threshold steps for `l`: the band below LL/L and above H/HH in the limit's colour.
fn steps(l: &Limits) -> Value {
    let below = |x: Option<(f64, Priority)>| x.map(|(_, p)| colour(p));
    let base = below(l.ll).or(below(l.l)).unwrap_or("green");
    let mut s = vec![json!({"color": base, "value": null})];
    if let Some((v, _)) = l.ll {
        s.push(json!({"color": below(l.l).unwrap_or("green"), "value": v}));
    }
    if let Some((v, _)) = l.l {
        s.push(json!({"color": "green", "value": v}));
    }
    if let Some((v, p)) = l.h {
        s.push(json!({"color": colour(p), "value": v}));
    }
    if let Some((v, p)) = l.hh {
        s.push(json!({"color": colour(p), "value": v}));
    }
    Value::Array(s)
}

fn ds() -> Value {
    json!({"type": "influxdb", "uid": "${datasource}"})
}

const SITE: &str = r#""site" =~ /^$site$/"#;
const AREA: &str = r#""area" =~ /^$area$/"#;

/// `/^(a|b)$/` matching exactly these channel ids.
fn channel_regex<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let alts: Vec<String> = ids
        .into_iter()
        .map(|id| {
            id.chars()
                .flat_map(|c| {
                    let esc = !(c.is_ascii_alphanumeric() || c == '_');
                    esc.then_some('\\').into_iter().chain([c])
                })
                .collect()
        })
        .collect();
    format!("/^({})$/", alts.join("|"))
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// Legend of a channel: its label (or id) and its area's display name (`[[areas]] name`).
fn legend(ch: &ResolvedChannel, cfg: &Resolved) -> String {
    let label = if ch.label.is_empty() {
        ch.id.as_str()
    } else {
        ch.label.as_str()
    };
    format!("{label} · {}", cfg.area_name(&ch.area)).replace('$', "")
}

fn target(ref_id: usize, query: String, alias: Option<&str>, format: &str) -> Value {
    let mut t = json!({
        "refId": ref_name(ref_id),
        "datasource": ds(),
        "rawQuery": true,
        "query": query,
        "resultFormat": format,
    });
    if let Some(a) = alias {
        t["alias"] = json!(a);
    }
    t
}

fn ref_name(i: usize) -> String {
    let mut n = i;
    let mut s = String::new();
    loop {
        s.insert(0, char::from(b'A' + u8::try_from(n % 26).unwrap_or(0)));
        n /= 26;
        if n == 0 {
            return s;
        }
        n -= 1;
    }
}

/// A dashboard being laid out: panels placed two per row of the grid.
struct Layout {
    panels: Vec<Value>,
    next_id: u64,
    x: u64,
    y: u64,
    /// Height of the tallest panel on the current line of the grid.
    line_h: u64,
}

impl Layout {
    fn new() -> Self {
        Self {
            panels: Vec::new(),
            next_id: 1,
            x: 0,
            y: 0,
            line_h: 0,
        }
    }

    fn row(&mut self, title: &str) {
        self.new_line();
        let id = self.id();
        self.panels.push(json!({
            "id": id, "type": "row", "title": title, "collapsed": false, "panels": [],
            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
        }));
        self.y += 1;
    }

    fn new_line(&mut self) {
        if self.x > 0 {
            self.x = 0;
            self.y += self.line_h;
            self.line_h = 0;
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    /// Places `p` `w` wide and `h` high.
    fn add(&mut self, mut p: Value, w: u64, h: u64) {
        if self.x + w > 24 {
            self.new_line();
        }
        p["id"] = json!(self.id());
        p["gridPos"] = json!({"x": self.x, "y": self.y, "w": w, "h": h});
        p["datasource"] = ds();
        self.x += w;
        self.line_h = self.line_h.max(h);
        if self.x >= 24 {
            self.new_line();
        }
        self.panels.push(p);
    }
}

fn panel(kind: &str, title: &str, targets: Vec<Value>, defaults: Value) -> Value {
    json!({
        "type": kind,
        "title": title,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": true}},
    })
}

/// The role of a channel on its equipment, for titles.
fn role_title(kind: &str, eq: Equipment, lang: Language) -> String {
    let t = match (kind, eq) {
        ("combustible_gas", _) => tr(lang, "Combustible gas", "可燃气体"),
        ("toxic_gas", _) => tr(lang, "Toxic gas", "有毒气体"),
        ("oxygen", _) => tr(lang, "Oxygen", "氧气"),
        ("tank_level", Equipment::DustWet) => tr(lang, "Water tank level", "水箱液位"),
        ("tank_level", _) => tr(lang, "Tank level", "储罐液位"),
        ("temperature", Equipment::Tank) => tr(lang, "Tank temperature", "储罐温度"),
        ("temperature", Equipment::DustDry) => tr(lang, "Hopper temperature", "灰斗温度"),
        ("temperature", _) => tr(lang, "Temperature", "温度"),
        ("pressure", Equipment::Tank) => tr(lang, "Tank pressure", "储罐压力"),
        ("pressure", _) => tr(lang, "Pressure", "压力"),
        ("differential_pressure", _) => tr(lang, "Filter differential pressure", "滤袋压差"),
        ("flow", Equipment::DustWet) => tr(lang, "Circulation flow", "循环水流量"),
        ("flow", _) => tr(lang, "Flow", "流量"),
        ("running", Equipment::DustDry | Equipment::DustWet) => {
            tr(lang, "Collector running", "除尘器运行")
        }
        ("running", Equipment::Line) => tr(lang, "Line running", "生产线运行"),
        ("running", _) => tr(lang, "Running", "运行"),
        ("speed", _) => tr(lang, "Line speed", "线速度"),
        ("spark", _) => tr(lang, "Spark detection", "火花探测"),
        ("valve_fault", _) => tr(lang, "Rotary valve fault", "卸灰阀故障"),
        ("power", _) => tr(lang, "Active power", "有功功率"),
        ("energy", _) => tr(lang, "Energy per interval", "区间电量"),
        (other, _) => return other.replace('_', " "),
    };
    t.to_owned()
}

/// One panel's worth of channels.
struct Group<'a> {
    eq: Equipment,
    row: String,
    kind: String,
    unit: String,
    limits: Limits,
    state: bool,
    channels: Vec<&'a ResolvedChannel>,
}

/// Channels by board, in configuration order, grouped into panels.
fn groups(cfg: &Resolved) -> BTreeMap<&'static str, Vec<Group<'_>>> {
    let lang = cfg.site.language;
    let bits: HashSet<&str> = cfg
        .modbus()
        .flat_map(|s| &s.devices)
        .flat_map(|d| &d.points)
        .filter(|p| p.def.data_type() == DataType::Bool)
        .map(|p| p.channel.as_str())
        .collect();
    let mut by_device: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for ch in &cfg.channels {
        by_device
            .entry(ch.device.as_str())
            .or_default()
            .insert(kind_of(ch));
    }
    let mut out: BTreeMap<&'static str, Vec<Group<'_>>> = BTreeMap::new();
    for ch in &cfg.channels {
        let kinds = &by_device[ch.device.as_str()];
        let eq = classify(kinds.iter().map(String::as_str));
        let kind = kind_of(ch);
        let state = bits.contains(ch.id.as_str())
            || matches!(kind.as_str(), "running" | "spark" | "valve_fault");
        let row = match (eq, kind.as_str()) {
            (Equipment::Gas, "combustible_gas" | "oxygen") => role_title(&kind, eq, lang),
            (Equipment::Gas, "toxic_gas") => {
                let species = ch.id.as_str().rsplit('.').next().unwrap_or_default();
                format!("{} {}", role_title(&kind, eq, lang), species.to_uppercase())
            }
            _ => eq.name(lang).to_owned(),
        };
        let limits = limits(cfg, ch.id.as_str());
        let list = out.entry(eq.board()).or_default();
        match list.iter_mut().find(|g| {
            g.eq == eq
                && g.row == row
                && g.kind == kind
                && g.unit == ch.unit
                && g.limits.key() == limits.key()
                && g.state == state
        }) {
            Some(g) => g.channels.push(ch),
            None => list.push(Group {
                eq,
                row,
                kind,
                unit: ch.unit.clone(),
                limits,
                state,
                channels: vec![ch],
            }),
        }
    }
    for list in out.values_mut() {
        // Rows in equipment order, panels in configuration order within a row (stable sort).
        list.sort_by_key(|g| g.eq);
        let mut rows: Vec<String> = Vec::new();
        for g in list.iter() {
            if !rows.contains(&g.row) {
                rows.push(g.row.clone());
            }
        }
        list.sort_by_key(|g| (g.eq, rows.iter().position(|r| *r == g.row)));
    }
    out
}

fn group_panel(g: &Group<'_>, lang: Language, cfg: &Resolved) -> (Value, u64) {
    let mut title = role_title(&g.kind, g.eq, lang);
    if !g.unit.is_empty() {
        title = format!("{title} ({})", g.unit);
    }
    if !g.limits.values().is_empty() && g.kind != "energy" {
        title = format!("{title} · {}", g.limits.describe());
    }
    let where_ch = |ch: &ResolvedChannel| {
        format!(
            r#""channel" = '{}' AND {SITE} AND {AREA} AND $timeFilter"#,
            quote(ch.id.as_str())
        )
    };
    let targets: Vec<Value> = g
        .channels
        .iter()
        .enumerate()
        .map(|(i, ch)| {
            let q = if g.state {
                format!(
                    r#"SELECT last("value") FROM "reading" WHERE {} GROUP BY time($__interval) fill(previous)"#,
                    where_ch(ch)
                )
            } else if g.kind == "energy" {
                format!(
                    r#"SELECT non_negative_difference(last("value")) FROM "reading" WHERE {} GROUP BY time($__interval) fill(none)"#,
                    where_ch(ch)
                )
            } else {
                format!(
                    r#"SELECT mean("value") FROM "reading" WHERE {} GROUP BY time($__interval) fill(none)"#,
                    where_ch(ch)
                )
            };
            target(i, q, Some(&legend(ch, cfg)), "time_series")
        })
        .collect();
    let description = if g.limits.values().is_empty() {
        String::new()
    } else {
        format!(
            "{} {}",
            tr(lang, "Alarm limits:", "报警限值："),
            g.limits.describe()
        )
    };
    if g.state {
        let words = state_words(&g.kind, lang);
        let builtin = json!([{
            "type": "value",
            "options": {
                "0": {"text": words[0].0, "color": words[0].1, "index": 0},
                "1": {"text": words[1].0, "color": words[1].1, "index": 1},
            },
        }]);
        // The channel's own state words (`states`) win over the built-in table of its kind;
        // 0 and 1 keep the kind's colours.
        let own = |ch: &ResolvedChannel| {
            let options: serde_json::Map<String, Value> = ch
                .states
                .iter()
                .enumerate()
                .map(|(index, (v, text))| {
                    let mut o = json!({"text": text, "index": index});
                    if let Some(&(_, colour)) = usize::try_from(*v).ok().and_then(|v| words.get(v))
                    {
                        o["color"] = json!(colour);
                    }
                    (v.to_string(), o)
                })
                .collect();
            json!([{"type": "value", "options": options}])
        };
        let shared = g
            .channels
            .first()
            .filter(|f| !f.states.is_empty() && g.channels.iter().all(|c| c.states == f.states));
        let mappings = shared.map_or(builtin, |f| own(f));
        let overrides: Vec<Value> = if shared.is_some() {
            Vec::new()
        } else {
            g.channels
                .iter()
                .enumerate()
                .filter(|(_, ch)| !ch.states.is_empty())
                .map(|(i, ch)| {
                    json!({
                        "matcher": {"id": "byFrameRefID", "options": ref_name(i)},
                        "properties": [{"id": "mappings", "value": own(ch)}],
                    })
                })
                .collect()
        };
        let mut p = panel(
            "state-timeline",
            &title,
            targets,
            json!({
                "unit": "none",
                "mappings": mappings,
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}]},
                "color": {"mode": "thresholds"},
            }),
        );
        p["fieldConfig"]["overrides"] = json!(overrides);
        p["options"]["mergeValues"] = json!(true);
        p["options"]["showValue"] = json!("auto");
        p["description"] = json!(description);
        let h = (3 + 2 * g.channels.len() as u64).min(16);
        return (p, h);
    }
    let has_limits = !g.limits.values().is_empty();
    let mut defaults = json!({
        "unit": grafana_unit(&g.unit),
        "thresholds": {"mode": "absolute", "steps": steps(&g.limits)},
        "custom": {"thresholdsStyle": {"mode": if has_limits { "line+area" } else { "off" }}},
        "color": {"mode": "palette-classic"},
    });
    if let Some(r) = g.channels.iter().find_map(|c| c.range) {
        if has_limits {
            defaults["min"] = json!(r[0]);
            defaults["max"] = json!(r[1]);
        }
    }
    if g.kind == "energy" {
        defaults["thresholds"]["steps"] = json!([{"color": "green", "value": null}]);
        defaults["custom"]["thresholdsStyle"]["mode"] = json!("off");
    }
    let mut p = panel("timeseries", &title, targets, defaults);
    p["description"] = json!(description);
    (p, 8)
}

fn variables(lang: Language) -> Value {
    let var = |name: &str, label: &str, query: String| {
        json!({
            "name": name, "label": label, "type": "query", "datasource": ds(), "query": query,
            "definition": query, "refresh": 2, "includeAll": true, "multi": true, "allValue": ".*",
            "current": {"selected": true, "text": ["All"], "value": ["$__all"]},
            "options": [], "hide": 0, "sort": 1,
        })
    };
    json!({"list": [
        {"name": "datasource", "label": "InfluxDB", "type": "datasource", "query": "influxdb",
         "current": {}, "hide": 0, "options": [], "refresh": 1},
        var("site", tr(lang, "Site", "厂区"),
            r#"SHOW TAG VALUES FROM "reading" WITH KEY = "site""#.to_owned()),
        var("area", tr(lang, "Area", "区域"),
            format!(r#"SHOW TAG VALUES FROM "reading" WITH KEY = "area" WHERE {SITE}"#)),
        {"name": "priority", "label": tr(lang, "Alarm priority", "报警级别"), "type": "custom",
         "query": "critical,high,medium,low", "includeAll": true, "multi": true, "allValue": ".*",
         "current": {"selected": true, "text": ["All"], "value": ["$__all"]},
         "options": [], "hide": 0},
    ]})
}

/// Annotations of alarm events (of `channels` when given), by priority.
fn annotations(channels: Option<&str>, lang: Language) -> Value {
    let filter = channels.map_or(String::new(), |r| format!(r#""channel" =~ {r} AND "#));
    let q = |transitions: &str| {
        format!(
            r#"SELECT "message", "transition", "priority", "by" FROM "alarm_event" WHERE {filter}"transition" =~ /^({transitions})$/ AND "priority" =~ /^$priority$/ AND {SITE} AND $timeFilter"#
        )
    };
    let a = |name: &str, colour: &str, query: String| {
        json!({
            "name": name, "datasource": ds(), "enable": true, "hide": false, "iconColor": colour,
            "query": query, "textColumn": "message", "tagsColumn": "transition,priority,by",
        })
    };
    json!({"list": [
        {"name": "Annotations & Alerts", "builtIn": 1, "type": "dashboard", "enable": true,
         "hide": true, "iconColor": "rgba(0, 211, 255, 1)",
         "datasource": {"type": "grafana", "uid": "-- Grafana --"}},
        a(tr(lang, "Alarms raised", "报警产生"), "red", q("raised|fault|flood|chattering")),
        a(tr(lang, "Alarms cleared", "报警消除"), "green", q("cleared|fault_cleared|reset|flood_ended")),
        a(tr(lang, "Actions by people", "人员操作"), "blue",
          q("acknowledged|shelved|unshelved|out_of_service|returned_to_service|site_mode")),
    ]})
}

fn links(boards: &[(&str, String)], lang: Language) -> Value {
    let mut l: Vec<Value> = vec![json!({
        "title": tr(lang, "Site overview", "厂区总览"), "type": "link",
        "url": "/d/hazgate-site-overview", "icon": "dashboard", "tooltip": "",
        "targetBlank": false, "keepTime": true, "includeVars": true, "asDropdown": false, "tags": [],
    })];
    for (board, title) in boards {
        l.push(json!({
            "title": title, "type": "link", "url": format!("/d/hazgate-{board}"),
            "icon": "dashboard", "tooltip": "", "targetBlank": false, "keepTime": true,
            "includeVars": true, "asDropdown": false, "tags": [],
        }));
    }
    Value::Array(l)
}

fn dashboard(
    uid: &str,
    title: String,
    layout: Layout,
    annotations: Value,
    cfg: &Resolved,
    links: Value,
) -> Value {
    json!({
        "uid": uid,
        "title": title,
        "tags": ["hazgate", cfg.site.id],
        "timezone": timezone(cfg),
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "editable": true,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "templating": variables(cfg.site.language),
        "annotations": annotations,
        "links": links,
        "panels": layout.panels,
    })
}

/// The site's time zone (`[site] timezone`, else `alarms.schedule.timezone`) so that every time
/// on the dashboards is the site's; the viewer's browser zone when neither is set (or UTC).
fn timezone(cfg: &Resolved) -> &str {
    let zone = cfg
        .site
        .timezone
        .as_deref()
        .or(cfg.alarms.schedule.timezone.as_deref());
    match zone.unwrap_or("") {
        "" | "UTC" => "browser",
        tz => tz,
    }
}

fn board_title(board: &str, lang: Language) -> String {
    match board {
        "gas" => tr(lang, "Gas detection", "气体检测"),
        "tanks" => tr(lang, "Tanks", "储罐"),
        "dust" => tr(lang, "Dust collectors", "除尘器"),
        "lines" => tr(lang, "Production lines", "生产线"),
        "power" => tr(lang, "Power load", "用电负荷"),
        "health" => tr(lang, "Gateway health", "网关运行状况"),
        _ => tr(lang, "Other signals", "其他信号"),
    }
    .to_owned()
}

fn site_name(cfg: &Resolved) -> &str {
    if cfg.site.name.is_empty() {
        &cfg.site.id
    } else {
        &cfg.site.name
    }
}

/// Every dashboard and provisioning file for `cfg`.
pub fn generate(cfg: &Resolved) -> Vec<File> {
    let lang = cfg.site.language;
    let groups = groups(cfg);
    let order = ["gas", "tanks", "dust", "lines", "power", "other"];
    let boards: Vec<(&str, String)> = order
        .iter()
        .filter(|b| groups.contains_key(*b))
        .map(|b| (*b, board_title(b, lang)))
        .chain([("health", board_title("health", lang))])
        .collect();
    let nav = links(&boards, lang);
    let mut files = Vec::new();
    let mut json_file = |name: &str, v: Value| {
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        files.push(File {
            path: PathBuf::from(format!("{name}.json")),
            contents: s,
        });
    };
    json_file("site-overview", overview(cfg, nav.clone()));
    for (board, title) in &boards {
        let Some(list) = groups.get(board) else {
            continue;
        };
        let mut layout = Layout::new();
        let mut row = String::new();
        for g in list {
            if g.row != row {
                layout.row(&g.row);
                row.clone_from(&g.row);
            }
            let (p, h) = group_panel(g, lang, cfg);
            layout.add(p, 12, h);
        }
        let ids: Vec<&str> = list
            .iter()
            .flat_map(|g| g.channels.iter().map(|c| c.id.as_str()))
            .collect();
        let re = channel_regex(ids.iter().copied());
        // Annotations also show the communication alarms of the devices and sources of this
        // board's channels (`device.{id}`, `source.{id}`: one alarm for a silent device or
        // connection, its channels' faults are recorded as its consequences).
        let on_board: HashSet<&str> = ids.iter().copied().collect();
        let comm: BTreeSet<String> = crate::rules::groups::groups(cfg)
            .into_iter()
            .filter(|g| {
                g.members.iter().any(|&i| {
                    cfg.channels
                        .get(i)
                        .is_some_and(|c| on_board.contains(c.id.as_str()))
                })
            })
            .map(|g| g.channel.as_str().to_owned())
            .collect();
        let annotated = channel_regex(ids.iter().copied().chain(comm.iter().map(String::as_str)));
        layout.row(tr(lang, "Signal quality", "信号质量"));
        let mut q = panel(
            "state-timeline",
            tr(
                lang,
                "Quality (bad = fault or not reporting)",
                "信号质量（故障或无数据）",
            ),
            vec![target(
                0,
                format!(
                    r#"SELECT last("quality") FROM "reading" WHERE "channel" =~ {re} AND {SITE} AND {AREA} AND $timeFilter GROUP BY time($__interval), "channel" fill(previous)"#
                ),
                Some("$tag_channel"),
                "time_series",
            )],
            quality_defaults(lang),
        );
        q["options"]["mergeValues"] = json!(true);
        layout.add(q, 24, (3 + ids.len() as u64).min(20));
        let title = format!("{} · {title}", site_name(cfg));
        json_file(
            board,
            dashboard(
                &format!("hazgate-{board}"),
                title,
                layout,
                annotations(Some(&annotated), lang),
                cfg,
                nav.clone(),
            ),
        );
    }
    json_file("gateway-health", health(cfg, nav));
    files.push(File {
        path: PathBuf::from("provisioning/dashboards.yaml"),
        contents: provisioning_dashboards(),
    });
    files.push(File {
        path: PathBuf::from("provisioning/datasource.yaml"),
        contents: provisioning_datasource(cfg),
    });
    files
}

fn quality_defaults(lang: Language) -> Value {
    json!({
        "unit": "none",
        "color": {"mode": "thresholds"},
        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}]},
        "mappings": [{"type": "value", "options": {
            "good": {"text": tr(lang, "good", "正常"), "color": "green", "index": 0},
            "bad": {"text": tr(lang, "fault", "故障"), "color": "red", "index": 1},
        }}],
    })
}

fn overview(cfg: &Resolved, nav: Value) -> Value {
    let lang = cfg.site.language;
    let mut l = Layout::new();
    let last_per_alarm = |fields: &str, extra: &str| {
        format!(
            r#"SELECT {fields} FROM "alarm_event" WHERE {SITE} AND {AREA} AND time > now() - {ALARM_LOOKBACK} GROUP BY "channel", "condition"{extra}"#
        )
    };
    let red_from_1 = json!({"mode": "absolute", "steps": [
        {"color": "green", "value": null}, {"color": "red", "value": 1}]});
    l.row(tr(lang, "Alarms now", "当前报警"));
    let mut p = panel(
        "stat",
        tr(lang, "Active alarms by priority", "按级别的当前报警"),
        vec![target(
            0,
            format!(
                r#"SELECT sum("active") FROM ({}) GROUP BY "priority""#,
                last_per_alarm(r#"last("active") AS "active""#, r#", "priority""#)
            ),
            Some("$tag_priority"),
            "time_series",
        )],
        json!({"unit": "none", "thresholds": red_from_1, "color": {"mode": "thresholds"}}),
    );
    p["options"] = json!({"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
        "colorMode": "background", "graphMode": "none", "textMode": "value_and_name", "orientation": "auto"});
    l.add(p, 8, 6);
    let mut p = panel(
        "bargauge",
        tr(lang, "Active alarms by area", "按区域的当前报警"),
        vec![target(
            0,
            format!(
                r#"SELECT sum("active") FROM ({}) GROUP BY "area""#,
                last_per_alarm(r#"last("active") AS "active""#, r#", "area""#)
            ),
            Some("$tag_area"),
            "time_series",
        )],
        json!({"unit": "none", "min": 0, "thresholds": red_from_1, "color": {"mode": "thresholds"}}),
    );
    p["options"] = json!({"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
        "orientation": "horizontal", "displayMode": "basic", "showUnfilled": true});
    l.add(p, 8, 6);
    let mut p = panel(
        "stat",
        tr(lang, "Unacknowledged alarms", "未确认报警"),
        vec![target(
            0,
            format!(
                r#"SELECT sum("unacked") FROM ({})"#,
                last_per_alarm(r#"last("unacked") AS "unacked""#, "")
            ),
            Some(tr(lang, "unacknowledged", "未确认")),
            "time_series",
        )],
        json!({"unit": "none", "thresholds": red_from_1, "color": {"mode": "thresholds"}}),
    );
    p["options"] = json!({"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
        "colorMode": "background", "graphMode": "none", "textMode": "value", "orientation": "auto"});
    l.add(p, 8, 6);
    let mut p = panel(
        "table",
        tr(
            lang,
            "Active alarms (raised = time since the alarm was raised)",
            "当前报警（产生时间 = 距报警产生的时长）",
        ),
        vec![target(
            0,
            format!(
                r#"SELECT "state", "raised_at", "value", "message" FROM ({}) WHERE "active" = 1 GROUP BY "priority", "area", "channel", "condition""#,
                last_per_alarm(
                    r#"last("active") AS "active", last("state") AS "state", last("raised_at") AS "raised_at", last("value") AS "value", last("message") AS "message""#,
                    r#", "priority", "area""#
                )
            ),
            None,
            "table",
        )],
        json!({"unit": "none", "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}]}}),
    );
    p["fieldConfig"]["overrides"] = json!([
        {"matcher": {"id": "byName", "options": "raised_at"}, "properties": [
            {"id": "unit", "value": "dateTimeFromNow"},
            {"id": "displayName", "value": tr(lang, "raised", "产生")}]},
        {"matcher": {"id": "byName", "options": "Time"}, "properties": [
            {"id": "custom.hidden", "value": true}]},
    ]);
    p["options"] = json!({"showHeader": true, "cellHeight": "sm"});
    l.add(p, 24, 9);

    l.row(tr(lang, "Channels", "通道"));
    let mut p = panel(
        "table",
        tr(
            lang,
            "Channels not reporting now (last reading bad)",
            "当前无有效数据的通道（最后读数故障）",
        ),
        vec![target(
            0,
            format!(
                r#"SELECT "quality", "reason" FROM (SELECT last("quality") AS "quality", last("reason") AS "reason" FROM "reading" WHERE {SITE} AND {AREA} AND time > now() - {READING_LOOKBACK} GROUP BY "channel", "area") WHERE "quality" = 'bad' GROUP BY "area", "channel""#
            ),
            None,
            "table",
        )],
        json!({"unit": "none", "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}]}}),
    );
    p["options"] = json!({"showHeader": true, "cellHeight": "sm"});
    l.add(p, 12, 8);
    let mut p = panel(
        "table",
        tr(
            lang,
            "Fault time per channel (faults ended in the range)",
            "各通道故障时长（时间范围内结束的故障）",
        ),
        vec![target(
            0,
            format!(
                r#"SELECT sum("duration") AS "fault_time", count("duration") AS "faults" FROM "alarm_event" WHERE "transition" = 'fault_cleared' AND {SITE} AND {AREA} AND $timeFilter GROUP BY "area", "channel""#
            ),
            None,
            "table",
        )],
        json!({"unit": "none", "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}]}}),
    );
    p["fieldConfig"]["overrides"] = json!([
        {"matcher": {"id": "byName", "options": "fault_time"}, "properties": [
            {"id": "unit", "value": "s"},
            {"id": "displayName", "value": tr(lang, "fault time", "故障时长")}]},
    ]);
    p["options"] = json!({"showHeader": true, "cellHeight": "sm"});
    l.add(p, 12, 8);
    let mut q = panel(
        "state-timeline",
        tr(lang, "Quality over time per channel", "各通道信号质量"),
        vec![target(
            0,
            format!(
                r#"SELECT last("quality") FROM "reading" WHERE {SITE} AND {AREA} AND $timeFilter GROUP BY time($__interval), "channel" fill(previous)"#
            ),
            Some("$tag_channel"),
            "time_series",
        )],
        quality_defaults(lang),
    );
    q["options"]["mergeValues"] = json!(true);
    l.add(q, 24, (4 + cfg.channels.len() as u64).min(24));
    l.row(tr(lang, "Alarm log", "报警记录"));
    let mut p = panel(
        "table",
        tr(
            lang,
            "Alarm transitions in the range",
            "时间范围内的报警变化",
        ),
        vec![target(
            0,
            format!(
                r#"SELECT "area", "channel", "condition", "transition", "priority", "state", "by", "value", "message" FROM "alarm_event" WHERE "priority" =~ /^$priority$/ AND {SITE} AND {AREA} AND $timeFilter ORDER BY time DESC LIMIT 500"#
            ),
            None,
            "table",
        )],
        json!({"unit": "none", "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}]}}),
    );
    p["options"] = json!({"showHeader": true, "cellHeight": "sm"});
    l.add(p, 24, 10);
    let title = format!(
        "{} · {}",
        site_name(cfg),
        tr(lang, "Site overview", "厂区总览")
    );
    dashboard(
        "hazgate-site-overview",
        title,
        l,
        annotations(None, lang),
        cfg,
        nav,
    )
}

fn health(cfg: &Resolved, nav: Value) -> Value {
    let lang = cfg.site.language;
    let m = crate::tsdb::internal::MEASUREMENT;
    let w = format!("{SITE} AND $timeFilter");
    let mut l = Layout::new();
    let ts = |title: &str, q: String, alias: &str, unit: &str| {
        panel(
            "timeseries",
            title,
            vec![target(0, q, Some(alias), "time_series")],
            json!({"unit": unit, "color": {"mode": "palette-classic"},
                   "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}]},
                   "custom": {"thresholdsStyle": {"mode": "off"}}}),
        )
    };
    l.row(tr(lang, "Acquisition", "数据采集"));
    l.add(ts(tr(lang, "Samples per second by quality", "每秒采样数（按质量）"),
        format!(r#"SELECT non_negative_derivative(last("samples_total"), 1s) FROM "{m}" WHERE {w} GROUP BY time($__interval), "source", "quality" fill(none)"#),
        "$tag_source $tag_quality", "short"), 12, 8);
    l.add(ts(tr(lang, "Modbus polls per interval by result", "Modbus 轮询次数（按结果）"),
        format!(r#"SELECT sum("polls") FROM (SELECT non_negative_difference(last("modbus_device_polls_total")) AS "polls" FROM "{m}" WHERE {w} GROUP BY time($__interval), "device", "result") GROUP BY time($__interval), "result" fill(none)"#),
        "$tag_result", "short"), 12, 8);
    l.add(ts(tr(lang, "MQTT connections per interval by result", "MQTT 连接次数（按结果）"),
        format!(r#"SELECT non_negative_difference(last("mqtt_connections_total")) FROM "{m}" WHERE {w} GROUP BY time($__interval), "source", "result" fill(none)"#),
        "$tag_source $tag_result", "short"), 12, 8);
    l.add(ts(tr(lang, "Channels without a good reading", "无有效读数的通道数"),
        format!(r#"SELECT last("channels_bad") FROM "{m}" WHERE {w} GROUP BY time($__interval) fill(none)"#),
        tr(lang, "channels bad", "故障通道"), "short"), 12, 8);
    l.row(tr(lang, "Time-series outputs", "时序数据输出"));
    l.add(ts(tr(lang, "Backlog: output queue and disk spool (points)", "积压：输出队列与磁盘缓存（点）"),
        format!(r#"SELECT last("output_queue_points") AS "queue", last("spool_points") AS "spool" FROM "{m}" WHERE {w} GROUP BY time($__interval), "output" fill(none)"#),
        "$tag_output $col", "short"), 12, 8);
    l.add(ts(tr(lang, "Points written, dropped and failed writes per interval", "每区间写入、丢弃点数与写入失败次数"),
        format!(r#"SELECT non_negative_difference(last("points_written_total")) AS "written", non_negative_difference(last("points_dropped_total")) AS "dropped", non_negative_difference(last("write_errors_total")) AS "write errors" FROM "{m}" WHERE {w} GROUP BY time($__interval), "output", "reason", "status" fill(none)"#),
        "$tag_output $tag_reason $tag_status $col", "short"), 12, 8);
    l.add(ts(tr(lang, "Sample queue full (sources waited) per interval", "采样队列满（数据源等待）次数"),
        format!(r#"SELECT non_negative_difference(last("sample_queue_full_total")) FROM "{m}" WHERE {w} GROUP BY time($__interval) fill(none)"#),
        tr(lang, "queue full", "队列满"), "short"), 12, 8);
    l.row(tr(lang, "Alarms and notifications", "报警与通知"));
    l.add(ts(tr(lang, "Alarm flood and notifications pending", "报警泛滥与待发送通知"),
        format!(r#"SELECT last("alarm_flood") AS "alarm flood", last("outbox_pending") AS "outbox pending" FROM "{m}" WHERE {w} GROUP BY time($__interval), "receiver" fill(none)"#),
        "$col $tag_receiver", "short"), 12, 8);
    l.add(ts(tr(lang, "Alarm events per interval", "每区间报警事件数"),
        format!(r#"SELECT non_negative_difference(last("alarm_events_total")) FROM "{m}" WHERE {w} GROUP BY time($__interval), "transition" fill(none)"#),
        "$tag_transition", "short"), 12, 8);
    let title = format!("{} · {}", site_name(cfg), board_title("health", lang));
    dashboard(
        "hazgate-health",
        title,
        l,
        annotations(None, lang),
        cfg,
        nav,
    )
}

fn provisioning_dashboards() -> String {
    format!(
        "# Grafana dashboard provisioning, generated by `hazgate dashboards`: copy to\n\
         # /etc/grafana/provisioning/dashboards/. The Debian package installs the dashboards in\n\
         # {INSTALL_DIR}; when you generate your own with --out, change `path` below.\n\
         apiVersion: 1\n\
         providers:\n  \
           - name: hazgate\n    \
             folder: hazgate\n    \
             type: file\n    \
             disableDeletion: false\n    \
             allowUiUpdates: false\n    \
             options:\n      \
               path: {INSTALL_DIR}\n"
    )
}

fn provisioning_datasource(cfg: &Resolved) -> String {
    let (url, db) = cfg
        .outputs
        .iter()
        .map(|o| match o {
            crate::config::Output::InfluxdbV1(v) => (v.url.clone(), v.database.clone()),
            crate::config::Output::InfluxdbV2(v) => (v.url.clone(), v.bucket.clone()),
        })
        .next()
        .unwrap_or_else(|| ("http://127.0.0.1:8086".into(), "hazgate".into()));
    format!(
        "# Grafana datasource provisioning for hazgate's InfluxDB, generated by `hazgate dashboards`\n\
         # (InfluxQL works on 1.8, 2.x via its v1 compatibility API, and 3.x). Copy to\n\
         # /etc/grafana/provisioning/datasources/ (for 2.x: a DBRP mapping to the bucket, and the\n\
         # token as a password).\n\
         apiVersion: 1\n\
         datasources:\n  \
           - name: hazgate InfluxDB\n    \
             uid: hazgate-influx\n    \
             type: influxdb\n    \
             access: proxy\n    \
             url: {url}\n    \
             jsonData:\n      \
               dbName: {db}\n      \
               httpMode: POST\n    \
             isDefault: true\n"
    )
}

/// Writes [`generate`]'s files under `out` (creating directories); returns the paths written.
/// An equipment dashboard written there earlier for equipment the site no longer has (a file of
/// that name tagged `hazgate`) is removed, so Grafana does not keep showing it.
pub fn write(cfg: &Resolved, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let files = generate(cfg);
    for board in ["gas", "tanks", "dust", "lines", "power", "other"] {
        let name = PathBuf::from(format!("{board}.json"));
        if files.iter().any(|f| f.path == name) {
            continue;
        }
        let p = out.join(&name);
        let ours = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|d| d["tags"][0] == "hazgate");
        if ours {
            std::fs::remove_file(&p)?;
        }
    }
    let mut written = Vec::new();
    for f in files {
        let p = out.join(&f.path);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&p, f.contents)?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equipment_from_channel_kinds() {
        assert_eq!(
            classify(["tank_level", "temperature", "pressure"]),
            Equipment::Tank
        );
        assert_eq!(
            classify(["tank_level", "flow", "running"]),
            Equipment::DustWet
        );
        assert_eq!(
            classify(["differential_pressure", "running", "spark"]),
            Equipment::DustDry
        );
        assert_eq!(classify(["running", "speed"]), Equipment::Line);
        assert_eq!(classify(["power", "energy"]), Equipment::Power);
        assert_eq!(classify(["toxic_gas"]), Equipment::Gas);
        assert_eq!(classify(["generic"]), Equipment::Other);
        let ch = |id: &str, unit: &str| ResolvedChannel {
            id: crate::model::ChannelId::new(id),
            device: crate::model::DeviceId::new("d"),
            area: "a".into(),
            kind: "generic".into(),
            unit: unit.into(),
            label: String::new(),
            range: None,
            max_age: std::time::Duration::from_secs(3),
            states: Default::default(),
            device_name: String::new(),
        };
        assert_eq!(kind_of(&ch("a.d.x", "%LEL")), "combustible_gas");
        assert_eq!(kind_of(&ch("a.d.h2s", "")), "toxic_gas");
        assert_eq!(kind_of(&ch("a.d.level", "m")), "tank_level");
        assert_eq!(kind_of(&ch("a.d.x", "")), "generic");
    }

    #[test]
    fn rewriting_for_a_site_without_power_feeders_removes_the_old_power_dashboard() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let (demo, _) = crate::config::load(&base.join("demo.toml")).expect("demo");
        let (other, _) = crate::config::load(&base.join("tankfarm-dust.toml")).expect("other");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("mine.json"), "{}").expect("own file");
        write(&demo, dir.path()).expect("write demo");
        assert!(dir.path().join("power.json").exists());
        write(&other, dir.path()).expect("write other");
        assert!(!dir.path().join("power.json").exists());
        assert!(dir.path().join("gas.json").exists());
        assert!(
            dir.path().join("mine.json").exists(),
            "files not ours are kept"
        );
    }

    #[test]
    fn state_timelines_map_values_to_the_channels_own_words() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let (cfg, _) = crate::config::load(&base.join("demo.toml")).expect("demo");
        let mut a = cfg.channels[0].clone();
        a.kind = "running".into();
        a.states = [(0, "停止".to_owned()), (1, "运行".to_owned())].into();
        let mut b = a.clone();
        b.states.clear();
        let mut g = Group {
            eq: Equipment::Line,
            row: String::new(),
            kind: "running".into(),
            unit: String::new(),
            limits: Limits::default(),
            state: true,
            channels: vec![&a, &a],
        };
        // The same words on every channel: the panel's mappings.
        let (p, _) = group_panel(&g, Language::ZhCn, &cfg);
        let m = &p["fieldConfig"]["defaults"]["mappings"][0]["options"];
        assert_eq!(m["0"]["text"], "停止");
        assert_eq!(m["1"]["text"], "运行");
        assert_eq!(p["fieldConfig"]["overrides"], json!([]));
        // Different words: the kind's table, and an override for the channel's own query.
        g.channels = vec![&b, &a];
        let (p, _) = group_panel(&g, Language::ZhCn, &cfg);
        let m = &p["fieldConfig"]["defaults"]["mappings"][0]["options"];
        assert_eq!(m["0"]["text"], state_words("running", Language::ZhCn)[0].0);
        let o = &p["fieldConfig"]["overrides"];
        assert_eq!(o.as_array().map(Vec::len), Some(1), "{o}");
        assert_eq!(o[0]["matcher"]["options"], "B");
        assert_eq!(
            o[0]["properties"][0]["value"][0]["options"]["0"]["text"],
            "停止"
        );
        assert_eq!(
            o[0]["properties"][0]["value"][0]["options"]["1"]["color"],
            "green"
        );
    }

    #[test]
    fn units_grafana_knows() {
        assert_eq!(grafana_unit("%LEL"), "suffix:%LEL");
        assert_eq!(grafana_unit("kPa"), "pressurekpa");
        assert_eq!(grafana_unit("Pa"), "pressurepa");
        assert_eq!(grafana_unit("m3/h"), "suffix:m³/h");
        assert_eq!(grafana_unit("°C"), "celsius");
    }

    #[test]
    fn threshold_steps_follow_limits_and_priorities() {
        let l = Limits {
            ll: None,
            l: Some((1.0, Priority::High)),
            h: Some((10.0, Priority::High)),
            hh: Some((11.0, Priority::Critical)),
        };
        assert_eq!(
            steps(&l),
            json!([{"color": "orange", "value": null}, {"color": "green", "value": 1.0},
                   {"color": "orange", "value": 10.0}, {"color": "red", "value": 11.0}])
        );
        assert_eq!(channel_regex(["a.b-1.c"]), r"/^(a\.b\-1\.c)$/");
        assert_eq!(ref_name(0), "A");
        assert_eq!(ref_name(26), "AA");
    }
}
