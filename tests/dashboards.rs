//! Grafana dashboards generated from a site's configuration (`hazgate dashboards`):
//!
//! - `shipped_dashboards_are_the_demo_configs`: `dashboards/` is exactly what the command
//!   writes for `config/demo.toml` (one code path).
//! - `generated_dashboards_are_valid_and_draw_the_configured_limits`: for the demo and for
//!   `config/tankfarm-dust.toml` (another site, other equipment, other limits, Chinese), a strict
//!   check of the fields Grafana needs, every configured channel on exactly one equipment panel,
//!   and every threshold on a panel equal to the configured limits of that panel's channels
//!   (read from the rules here, not from the generator).
//! - `every_dashboard_query_returns_data`: every panel, variable and annotation query of both
//!   sites' dashboards runs on a real influxd fed by the demo (and a second gateway running the
//!   second site against the demo's simulated devices), and returns data.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use hazgate::config::{self, Resolved};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load(name: &str) -> Resolved {
    config::load(&root().join("config").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"))
        .0
}

/// Generated dashboards by file name.
fn dashboards(cfg: &Resolved) -> BTreeMap<String, Value> {
    hazgate::dashboards::generate(cfg)
        .into_iter()
        .filter(|f| f.path.extension().is_some_and(|e| e == "json"))
        .map(|f| {
            let v = serde_json::from_str(&f.contents)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", f.path.display()));
            (f.path.display().to_string(), v)
        })
        .collect()
}

#[test]
fn shipped_dashboards_are_the_demo_configs() {
    let cfg = load("demo.toml");
    let dir = root().join("dashboards");
    let mut expected = BTreeSet::new();
    for f in hazgate::dashboards::generate(&cfg) {
        let shipped = std::fs::read_to_string(dir.join(&f.path))
            .unwrap_or_else(|e| panic!("dashboards/{}: {e}", f.path.display()));
        assert!(
            shipped == f.contents,
            "dashboards/{} differs from `hazgate dashboards --config config/demo.toml`: regenerate it",
            f.path.display()
        );
        expected.insert(f.path);
    }
    for sub in ["", "provisioning"] {
        for e in std::fs::read_dir(dir.join(sub)).expect("dashboards/") {
            let p = e.expect("entry").path();
            if p.is_file() {
                let rel = p.strip_prefix(&dir).expect("inside").to_path_buf();
                assert!(
                    expected.contains(&rel),
                    "dashboards/{} is not generated",
                    rel.display()
                );
            }
        }
    }
    // The command writes the same files.
    let out = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["dashboards", "--config"])
        .arg(root().join("config/demo.toml"))
        .arg("--out")
        .arg(out.path())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run hazgate dashboards");
    assert!(status.success());
    for rel in &expected {
        let a = std::fs::read(out.path().join(rel)).expect("written");
        let b = std::fs::read(dir.join(rel)).expect("shipped");
        assert!(
            a == b,
            "`hazgate dashboards` wrote another {}",
            rel.display()
        );
    }
    let prov = std::fs::read_to_string(dir.join("provisioning/dashboards.yaml")).expect("yaml");
    assert!(prov.contains(&format!("path: {}\n", hazgate::dashboards::INSTALL_DIR)));
    let deb = std::fs::read_to_string(root().join("scripts/build-deb")).expect("scripts/build-deb");
    assert!(
        deb.contains(r#"dashboards/*.json "$stage/usr/share/hazgate/dashboards/""#),
        "the package installs the dashboards where the provisioning file points"
    );
}

// ---------------------------------------------------------------------------------------------
// A strict check of the dashboard model fields Grafana reads.

const PANEL_TYPES: [&str; 6] = [
    "row",
    "timeseries",
    "stat",
    "table",
    "state-timeline",
    "bargauge",
];
/// Grafana unit ids the generator may use (a custom unit is `suffix:…`).
const UNITS: [&str; 33] = [
    "none",
    "short",
    "s",
    "ppm",
    "ppb",
    "percent",
    "pressurepa",
    "pressurehpa",
    "pressurekpa",
    "pressurebar",
    "pressurembar",
    "celsius",
    "fahrenheit",
    "lengthm",
    "lengthmm",
    "lengthkm",
    "watt",
    "kwatt",
    "megwatt",
    "watth",
    "kwatth",
    "mwatth",
    "amp",
    "volt",
    "kvolt",
    "hertz",
    "conmgm3",
    "flowlpm",
    "litreh",
    "flowcms",
    "dateTimeFromNow",
    "dateTimeAsIso",
    "percentunit",
];
const COLOURS: [&str; 7] = ["green", "orange", "red", "yellow", "blue", "purple", "text"];

struct Check<'a> {
    file: &'a str,
    errors: Vec<String>,
}

impl Check<'_> {
    fn fail(&mut self, msg: String) {
        self.errors.push(format!("{}: {msg}", self.file));
    }
    fn keys(&mut self, what: &str, v: &Value, required: &[&str], optional: &[&str]) {
        let Some(o) = v.as_object() else {
            self.fail(format!("{what}: not an object"));
            return;
        };
        for k in required {
            if !o.contains_key(*k) {
                self.fail(format!("{what}: `{k}` missing"));
            }
        }
        for k in o.keys() {
            if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
                self.fail(format!("{what}: unknown field `{k}`"));
            }
        }
    }
    fn string(&mut self, what: &str, v: &Value) -> String {
        match v.as_str() {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => {
                self.fail(format!("{what}: not a non-empty string"));
                String::new()
            }
        }
    }
    fn unit(&mut self, what: &str, v: &Value) {
        let u = self.string(what, v);
        if !(UNITS.contains(&u.as_str())
            || u.strip_prefix("suffix:").is_some_and(|s| !s.is_empty()))
        {
            self.fail(format!("{what}: `{u}` is not a Grafana unit"));
        }
    }
    fn thresholds(&mut self, what: &str, t: &Value) {
        self.keys(what, t, &["mode", "steps"], &[]);
        if !matches!(t["mode"].as_str(), Some("absolute" | "percentage")) {
            self.fail(format!("{what}: mode {}", t["mode"]));
        }
        let Some(steps) = t["steps"].as_array().filter(|s| !s.is_empty()) else {
            self.fail(format!("{what}: no steps"));
            return;
        };
        let mut last = f64::NEG_INFINITY;
        for (i, s) in steps.iter().enumerate() {
            self.keys(&format!("{what}.steps[{i}]"), s, &["color", "value"], &[]);
            let c = s["color"].as_str().unwrap_or_default();
            if !COLOURS.contains(&c) {
                self.fail(format!("{what}.steps[{i}]: colour `{c}`"));
            }
            match (i, &s["value"]) {
                (0, Value::Null) => {}
                (0, v) => self.fail(format!("{what}: first step value {v}, must be null")),
                (_, v) => match v.as_f64() {
                    Some(x) if x > last => last = x,
                    _ => self.fail(format!("{what}.steps[{i}]: value {v} not ascending")),
                },
            }
        }
    }
    fn mappings(&mut self, what: &str, m: &Value) {
        for (i, m) in m.as_array().into_iter().flatten().enumerate() {
            let w = format!("{what}[{i}]");
            self.keys(&w, m, &["type", "options"], &[]);
            if m["type"] != "value" {
                self.fail(format!("{w}: type {}", m["type"]));
            }
            for (k, o) in m["options"].as_object().into_iter().flatten() {
                self.keys(
                    &format!("{w}.options.{k}"),
                    o,
                    &["text"],
                    &["color", "index"],
                );
            }
        }
    }
}

fn check_dashboard(file: &str, d: &Value, uids: &HashSet<String>) -> Vec<String> {
    let mut c = Check {
        file,
        errors: Vec::new(),
    };
    c.keys(
        "dashboard",
        d,
        &[
            "uid",
            "title",
            "tags",
            "schemaVersion",
            "version",
            "time",
            "templating",
            "annotations",
            "panels",
        ],
        &[
            "timezone",
            "refresh",
            "editable",
            "graphTooltip",
            "timepicker",
            "links",
        ],
    );
    let uid = c.string("uid", &d["uid"]);
    if uid.len() > 40
        || !uid
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        c.fail(format!("uid `{uid}` is not a Grafana uid"));
    }
    c.string("title", &d["title"]);
    let tz = d["timezone"].as_str().unwrap_or_default();
    if !(tz == "browser" || tz == "utc" || tz.parse::<chrono_tz::Tz>().is_ok()) {
        c.fail(format!("timezone `{tz}`"));
    }
    if d["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
        c.fail("schemaVersion missing or old".into());
    }
    c.keys("time", &d["time"], &["from", "to"], &[]);
    // Variables.
    let mut vars: HashSet<String> = ["timeFilter", "__interval", "col"].map(String::from).into();
    for (i, v) in d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let w = format!("templating.list[{i}]");
        let name = c.string(&format!("{w}.name"), &v["name"]);
        if !vars.insert(name.clone()) {
            c.fail(format!("{w}: variable `{name}` twice"));
        }
        match v["type"].as_str() {
            Some("query") => {
                c.keys(
                    &w,
                    v,
                    &["name", "type", "datasource", "query", "refresh"],
                    &[
                        "label",
                        "definition",
                        "includeAll",
                        "multi",
                        "allValue",
                        "current",
                        "options",
                        "hide",
                        "sort",
                    ],
                );
                c.string(&format!("{w}.query"), &v["query"]);
            }
            Some("datasource") => {
                c.keys(
                    &w,
                    v,
                    &["name", "type", "query"],
                    &["label", "current", "hide", "options", "refresh"],
                );
            }
            Some("custom") => {
                c.keys(
                    &w,
                    v,
                    &["name", "type", "query"],
                    &[
                        "label",
                        "includeAll",
                        "multi",
                        "allValue",
                        "current",
                        "options",
                        "hide",
                    ],
                );
            }
            t => c.fail(format!("{w}: type {t:?}")),
        }
    }
    let check_refs = |c: &mut Check<'_>, what: &str, q: &str| {
        for (i, _) in q.match_indices('$') {
            let name: String = q[i + 1..]
                .chars()
                .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                .collect();
            // `$` before anything but a name is a regular expression's end anchor.
            if !(name.is_empty() || vars.contains(&name) || name.starts_with("tag_")) {
                c.fail(format!("{what}: unknown variable `${name}` in {q}"));
            }
        }
    };
    // Annotations.
    for (i, a) in d["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let w = format!("annotations.list[{i}]");
        if a["builtIn"] == 1 {
            continue;
        }
        c.keys(
            &w,
            a,
            &["name", "datasource", "enable", "iconColor", "query"],
            &["hide", "textColumn", "tagsColumn"],
        );
        let q = c.string(&format!("{w}.query"), &a["query"]);
        check_refs(&mut c, &w, &q);
    }
    // Links.
    for (i, l) in d["links"].as_array().into_iter().flatten().enumerate() {
        let url = l["url"].as_str().unwrap_or_default();
        let target = url.strip_prefix("/d/").unwrap_or_default();
        if l["type"] != "link" || !uids.contains(target) {
            c.fail(format!("links[{i}]: `{url}` is not a generated dashboard"));
        }
        c.string(&format!("links[{i}].title"), &l["title"]);
    }
    // Panels.
    let mut ids = HashSet::new();
    let mut cells: HashSet<(u64, u64)> = HashSet::new();
    for (i, p) in d["panels"].as_array().into_iter().flatten().enumerate() {
        let w = format!("panels[{i}] `{}`", p["title"].as_str().unwrap_or("?"));
        let ty = p["type"].as_str().unwrap_or_default();
        if !PANEL_TYPES.contains(&ty) {
            c.fail(format!("{w}: type `{ty}`"));
        }
        if !p["id"].as_u64().is_some_and(|id| id > 0 && ids.insert(id)) {
            c.fail(format!("{w}: id missing or repeated"));
        }
        c.string(&format!("{w}.title"), &p["title"]);
        let g = &p["gridPos"];
        c.keys(&format!("{w}.gridPos"), g, &["x", "y", "w", "h"], &[]);
        let [x, y, gw, gh] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap_or(0));
        if gw == 0 || gh == 0 || x + gw > 24 {
            c.fail(format!("{w}: gridPos {g}"));
        }
        for cx in x..x + gw {
            for cy in y..y + gh {
                if !cells.insert((cx, cy)) {
                    c.fail(format!("{w}: overlaps another panel at ({cx}, {cy})"));
                }
            }
        }
        if ty == "row" {
            c.keys(
                &w,
                p,
                &["id", "type", "title", "gridPos", "collapsed", "panels"],
                &[],
            );
            continue;
        }
        c.keys(
            &w,
            p,
            &[
                "id",
                "type",
                "title",
                "gridPos",
                "datasource",
                "targets",
                "fieldConfig",
                "options",
            ],
            &["description"],
        );
        if p["datasource"]["type"] != "influxdb" {
            c.fail(format!("{w}: datasource {}", p["datasource"]));
        }
        let mut refs = HashSet::new();
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            c.fail(format!("{w}: no targets"));
        }
        for (j, t) in targets.iter().enumerate() {
            let tw = format!("{w}.targets[{j}]");
            c.keys(
                &tw,
                t,
                &["refId", "datasource", "rawQuery", "query", "resultFormat"],
                &["alias"],
            );
            if !refs.insert(c.string(&format!("{tw}.refId"), &t["refId"])) {
                c.fail(format!("{tw}: refId repeated"));
            }
            if t["rawQuery"] != true
                || !matches!(t["resultFormat"].as_str(), Some("time_series" | "table"))
            {
                c.fail(format!("{tw}: rawQuery/resultFormat"));
            }
            let q = c.string(&format!("{tw}.query"), &t["query"]);
            check_refs(&mut c, &tw, &q);
        }
        let fc = &p["fieldConfig"];
        c.keys(
            &format!("{w}.fieldConfig"),
            fc,
            &["defaults", "overrides"],
            &[],
        );
        let de = &fc["defaults"];
        c.keys(
            &format!("{w}.fieldConfig.defaults"),
            de,
            &["unit", "thresholds"],
            &["custom", "color", "mappings", "min", "max"],
        );
        c.unit(&format!("{w}.unit"), &de["unit"]);
        c.thresholds(&format!("{w}.thresholds"), &de["thresholds"]);
        c.mappings(&format!("{w}.mappings"), &de["mappings"]);
        if ty == "state-timeline" && de["mappings"].as_array().is_none_or(Vec::is_empty) {
            c.fail(format!("{w}: a state timeline without value mappings"));
        }
        for (j, o) in fc["overrides"].as_array().into_iter().flatten().enumerate() {
            let ow = format!("{w}.overrides[{j}]");
            c.keys(&ow, o, &["matcher", "properties"], &[]);
            c.keys(
                &format!("{ow}.matcher"),
                &o["matcher"],
                &["id", "options"],
                &[],
            );
            for pr in o["properties"].as_array().into_iter().flatten() {
                c.keys(&ow, pr, &["id", "value"], &[]);
                if pr["id"] == "unit" {
                    c.unit(&ow, &pr["value"]);
                }
            }
        }
    }
    c.errors
}

/// The limits configured for `channel`, read from the compiled alarm plan.
fn configured_limits(cfg: &Resolved, channel: &str) -> BTreeSet<String> {
    cfg.plan
        .on_channel(channel)
        .filter_map(|a| match a.detector {
            hazgate::rules::plan::Detector::Limit { limit, .. } => Some(format!("{limit}")),
            _ => None,
        })
        .collect()
}

/// Channels named one by one in a panel's queries (`"channel" = '…'`).
fn panel_channels(p: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for t in p["targets"].as_array().into_iter().flatten() {
        let q = t["query"].as_str().unwrap_or_default();
        if let Some((_, rest)) = q.split_once(r#""channel" = '"#) {
            out.push(rest.split('\'').next().unwrap_or_default().to_owned());
        }
    }
    out
}

/// A state timeline maps each channel's values to the channel's own `states` when it has them:
/// through a field override of its query, else the panel's defaults.
fn check_state_words(cfg: &Resolved, file: &str, p: &Value, chans: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, id) in chans.iter().enumerate() {
        let Some(ch) = cfg.channels.iter().find(|c| c.id.as_str() == id) else {
            continue;
        };
        if ch.states.is_empty() {
            continue;
        }
        let ref_id = p["targets"][i]["refId"].clone();
        let mappings = p["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["matcher"]["options"] == ref_id)
            .map_or(&p["fieldConfig"]["defaults"]["mappings"], |o| {
                &o["properties"][0]["value"]
            });
        let drawn: BTreeMap<String, String> = mappings[0]["options"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v["text"].as_str().unwrap_or_default().to_owned()))
            .collect();
        let want: BTreeMap<String, String> = ch
            .states
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if drawn != want {
            errors.push(format!(
                "{file}: panel `{}` maps {id} to {drawn:?}, configured {want:?}",
                p["title"]
            ));
        }
    }
    errors
}

fn check_site(cfg: &Resolved) {
    let errors = check_boards(cfg, &dashboards(cfg));
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Every problem of `boards` generated for `cfg`: Grafana fields, placement, thresholds.
fn check_boards(cfg: &Resolved, boards: &BTreeMap<String, Value>) -> Vec<String> {
    let uids: HashSet<String> = boards
        .values()
        .map(|d| d["uid"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(uids.contains("hazgate-site-overview") && uids.contains("hazgate-health"));
    let mut errors = Vec::new();
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    let mut thresholds_checked = 0;
    for (file, d) in boards {
        errors.extend(check_dashboard(file, d, &uids));
        for p in d["panels"].as_array().into_iter().flatten() {
            let chans = panel_channels(p);
            if chans.is_empty() {
                continue;
            }
            for ch in &chans {
                *placed.entry(ch.clone()).or_default() += 1;
            }
            if p["type"] == "state-timeline" {
                errors.extend(check_state_words(cfg, file, p, &chans));
            }
            let drawn: BTreeSet<String> = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["value"].as_f64())
                .map(|v| format!("{v}"))
                .collect();
            let energy = p["targets"][0]["query"]
                .as_str()
                .is_some_and(|q| q.contains("difference"));
            for ch in &chans {
                let want = if energy {
                    BTreeSet::new()
                } else {
                    configured_limits(cfg, ch)
                };
                if drawn != want {
                    errors.push(format!(
                        "{file}: panel `{}` draws {drawn:?} but {ch} is configured with {want:?}",
                        p["title"]
                    ));
                }
                thresholds_checked += 1;
            }
        }
    }
    for ch in &cfg.channels {
        let n = placed.get(ch.id.as_str()).copied().unwrap_or(0);
        if n != 1 {
            errors.push(format!("channel {} is on {n} equipment panels", ch.id));
        }
    }
    if thresholds_checked < cfg.channels.len() {
        errors.push(format!(
            "only {thresholds_checked} channel thresholds checked"
        ));
    }
    errors
}

#[test]
fn the_check_rejects_what_grafana_or_a_supervisor_would_not_take() {
    let cfg = load("demo.toml");
    let good = dashboards(&cfg);
    assert!(check_boards(&cfg, &good).is_empty());
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut b = good.clone();
        f(b.get_mut("tanks.json").expect("tanks"));
        check_boards(&cfg, &b).join("\n")
    };
    // A panel drawing another limit than the configuration's (the old generator's 25/50 on
    // 20/40 detectors).
    let e = broken(&|d| {
        d["panels"][1]["fieldConfig"]["defaults"]["thresholds"]["steps"][2]["value"] = 9.5.into()
    });
    assert!(e.contains("tankfarm.t101.level is configured with"), "{e}");
    // A unit Grafana does not know.
    let e = broken(&|d| d["panels"][3]["fieldConfig"]["defaults"]["unit"] = "kpa".into());
    assert!(e.contains("`kpa` is not a Grafana unit"), "{e}");
    // Overlapping panels, a missing refId, an unknown variable, an unknown field.
    let e = broken(&|d| d["panels"][2]["gridPos"]["x"] = 0.into());
    assert!(e.contains("overlaps"), "{e}");
    let e = broken(&|d| {
        d["panels"][1]["targets"][0]
            .as_object_mut()
            .expect("target")
            .remove("refId");
    });
    assert!(e.contains("`refId` missing"), "{e}");
    let e =
        broken(&|d| d["panels"][1]["targets"][0]["query"] = "SELECT 1 FROM x WHERE $nope".into());
    assert!(e.contains("unknown variable `$nope`"), "{e}");
    let e = broken(&|d| d["panels"][1]["fieldConfig"]["defaults"]["thresholdz"] = 1.into());
    assert!(e.contains("unknown field `thresholdz`"), "{e}");
    // A state timeline averaging 0/1 without words.
    let e = broken(&|d| {
        for p in d["panels"].as_array_mut().expect("panels") {
            if p["type"] == "state-timeline" {
                p["fieldConfig"]["defaults"]["mappings"] = serde_json::json!([]);
            }
        }
    });
    assert!(e.contains("state timeline without value mappings"), "{e}");
    // A state timeline showing the built-in words instead of the channel's own `states`.
    let mut b = good.clone();
    let dust = b.get_mut("dust.json").expect("dust");
    for p in dust["panels"].as_array_mut().expect("panels") {
        if p["type"] == "state-timeline" {
            p["fieldConfig"]["defaults"]["mappings"][0]["options"]["1"]["text"] = "on".into();
        }
    }
    let e = check_boards(&cfg, &b).join("\n");
    assert!(e.contains("maps dustline.dc1.spark to"), "{e}");
}

#[test]
fn generated_dashboards_are_valid_and_draw_the_configured_limits() {
    let demo = load("demo.toml");
    check_site(&demo);
    let other = load("tankfarm-dust.toml");
    check_site(&other);
    // The other site is in Chinese and has its own equipment.
    let boards = dashboards(&other);
    assert!(
        boards["gas.json"]["title"]
            .as_str()
            .is_some_and(|t| t.contains("气体检测"))
    );
    assert!(!boards.contains_key("power.json"), "no power feeders there");
    let dust = serde_json::to_string(&boards["dust.json"]).expect("json");
    for want in [
        "干式除尘器",
        "湿式除尘器",
        "水箱液位",
        "循环水流量",
        "探测到火花",
    ] {
        assert!(dust.contains(want), "dust dashboard lacks {want}");
    }
    // Legends carry the channel's label and area.
    assert!(dust.contains("PDT-201 布袋除尘器压差 · 木工车间"));
    // The demo's wet collector water level is not drawn with tank limits (the demo site is
    // zh-CN since the control-room work).
    let demo_dust = dashboards(&demo);
    let s = serde_json::to_string(&demo_dust["dust.json"]).expect("json");
    assert!(s.contains("水箱液位 (m)") && s.contains("循环水流量"));
}

// ---------------------------------------------------------------------------------------------
// Every query against a real influxd.

/// Every query in a dashboard with where it came from.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel `{}`", p["title"].as_str().unwrap_or("?")),
                t["query"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            out.push((
                format!("variable `{}`", v["name"].as_str().unwrap_or("?")),
                v["query"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if a["builtIn"] != 1 {
            out.push((
                format!("annotation `{}`", a["name"].as_str().unwrap_or("?")),
                a["query"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    out
}

/// Grafana's substitutions, as a dashboard opened with "All" selected would send.
fn substitute(q: &str, site: &str) -> String {
    q.replace("$timeFilter", "time > now() - 1h")
        .replace("$__interval", "1s")
        .replace("/^$site$/", &format!("/^{site}$/"))
        .replace("/^$area$/", "/^(.*)$/")
        .replace("/^$priority$/", "/^(.*)$/")
}

fn has_data(v: &Value) -> bool {
    v["results"][0]["series"].as_array().is_some_and(|series| {
        series.iter().any(|s| {
            s["values"].as_array().is_some_and(|rows| {
                rows.iter().any(|r| {
                    r.as_array()
                        .is_some_and(|cols| cols.iter().skip(1).any(|c| !c.is_null()))
                })
            })
        })
    })
}

async fn count(influx: &support::Server, q: &str) -> u64 {
    let v = support::influxql(influx, "hazgate", q).await;
    v["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

/// Acknowledges every unacknowledged alarm of the gateway at `api`.
async fn ack_all(api: std::net::SocketAddr, token: &str) -> usize {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let list: Value = http
        .get(format!("http://{api}/api/v1/alarms"))
        .send()
        .await
        .expect("GET alarms")
        .json()
        .await
        .expect("alarms JSON");
    let mut n = 0;
    for a in list["alarms"].as_array().into_iter().flatten() {
        if a["unacknowledged"] != true {
            continue;
        }
        let id = a["id"].as_str().unwrap_or_default();
        let r = http
            .post(format!("http://{api}/api/v1/alarms/{id}/ack"))
            .bearer_auth(token)
            .json(&serde_json::json!({"comment": "seen on the dashboard test"}))
            .send()
            .await
            .expect("POST ack");
        if r.status().is_success() {
            n += 1;
        }
    }
    n
}

/// The second site running against the demo's simulated devices and broker.
fn second_site(demo: &hazgate::demo::Demo, influx: &str, token: &str) -> Resolved {
    let path = root().join("config/tankfarm-dust.toml");
    let text = std::fs::read_to_string(&path).expect("read");
    let mut cfg = config::parse(&text, &path).expect("parse");
    for s in &mut cfg.sources {
        match s {
            config::Source::ModbusTcp(t) | config::Source::ModbusRtuOverTcp(t) => {
                t.address = demo.sim_addr.to_string();
            }
            config::Source::Mqtt(m) => m.address = demo.broker_addr.to_string(),
            config::Source::ModbusRtu(_) => {}
        }
    }
    cfg.api.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.gateway.self_monitoring = Some(Duration::from_secs(2));
    cfg.outputs.push(
        toml::from_str::<ConfigOutputs>(&format!(
            "[[outputs]]\nkind = \"influxdb_v1\"\nid = \"influx\"\nurl = \"{influx}\"\ndatabase = \"hazgate\"\n"
        ))
        .expect("output")
        .outputs
        .remove(0),
    );
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes())
    };
    cfg.alarms.tokens.push(config::alarms::ApiToken {
        name: "dashboard-test".into(),
        role: config::alarms::Role::Operator,
        sha256: Some(digest.iter().map(|b| format!("{b:02x}")).collect()),
        token: None,
    });
    config::validate(&cfg, &root().join("config"))
        .unwrap_or_else(|p| panic!("{p:?}"))
        .0
}

#[derive(serde::Deserialize)]
struct ConfigOutputs {
    outputs: Vec<config::Output>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE hazgate").await;
        // The whole demo (Modbus devices and the data units publishing to the embedded broker)
        // at 20x, with a scenario of no events: the test stages its incidents by hand.
        let quiet = hazgate_sim::Scenario::from_toml_str(
            "name = \"quiet\"\ndescription = \"nothing happens\"\nduration = \"1h\"\n",
        )
        .expect("scenario");
        let token = hazgate::demo::random_token();
        let opts = hazgate::demo::DemoOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            influx_url: Some(influx.url()),
            influx_db: "hazgate".into(),
            operator_token: Some(token.clone()),
        };
        let demo = hazgate::demo::start(&opts, quiet, 20.0)
            .await
            .unwrap_or_else(|e| panic!("demo does not start: {e:?}"));
        let other_cfg = second_site(&demo, &influx.url(), &token);
        let other = hazgate::app::start(other_cfg.clone())
            .await
            .unwrap_or_else(|e| panic!("second site does not start: {e:?}"));
        let sim = &demo.sim;
        // Process alarms on both sites: gas level 1, tank high level.
        sim.handle.set_value("gd101", "lel", 30.0).expect("set gas");
        sim.handle.set_value("t101", "level", 10.6).expect("set level");
        support::eventually(Duration::from_secs(60), "raised alarms of both sites", || async {
            let n = count(
                &influx,
                "SELECT count(seq) FROM alarm_event WHERE transition = 'raised' GROUP BY site",
            )
            .await;
            let sites = support::influxql(
                &influx,
                "hazgate",
                "SHOW TAG VALUES FROM alarm_event WITH KEY = site WHERE transition = 'raised'",
            )
            .await;
            let both = sites["results"][0]["series"][0]["values"]
                .as_array()
                .is_some_and(|v| v.len() == 2);
            (n > 0 && both).then_some(())
        })
        .await;
        // Every Modbus device silent: a fault on every Modbus channel of both sites.
        let modbus_points = |c: &Resolved| {
            c.modbus()
                .flat_map(|s| &s.devices)
                .map(|d| d.points.len())
                .sum::<usize>()
        };
        let modbus_channels = modbus_points(&load("demo.toml")) + modbus_points(&other_cfg);
        let devices = ["gd101", "gd102", "t101", "dc1", "pm1", "line1"];
        for d in devices {
            sim.handle.set_silent(d, true).expect("silent");
        }
        support::eventually(Duration::from_secs(90), "fault events on every device", || async {
            let v = support::influxql(
                &influx,
                "hazgate",
                "SELECT count(seq) FROM alarm_event WHERE transition = 'fault' GROUP BY site, channel",
            )
            .await;
            let n = v["results"][0]["series"].as_array().map_or(0, Vec::len);
            (n >= modbus_channels).then_some(())
        })
        .await;
        // People acknowledge what they see, on both gateways.
        // Devices of one connection go down one poll after another: a device's (or the whole
        // connection's) communication alarm can be raised a little after its channels' faults,
        // so people acknowledge until an action is recorded for every silent piece of equipment
        // (its channels' faults are consequences and take no acknowledgement).
        let acked = std::sync::atomic::AtomicUsize::new(0);
        support::eventually(Duration::from_secs(60), "an acknowledgement for every silent device", || async {
            let n = ack_all(demo.gateway.api_addr, &token).await + ack_all(other.api_addr, &token).await;
            acked.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            let v = support::influxql(
                &influx,
                "hazgate",
                "SELECT count(seq) FROM alarm_event WHERE transition = 'acknowledged' AND channel =~ /^(device|source)\\./ GROUP BY site, channel",
            )
            .await;
            let seen = serde_json::to_string(&v).unwrap_or_default();
            let covered = |device: &str, source: &str| seen.contains(device) || seen.contains(source);
            (covered("device.saw1", "source.rs485-a")
                && covered("device.bag1", "source.rs485-a")
                && covered("device.line1", "source.sim")
                && covered("device.dc1", "source.sim")
                && covered("device.pm1", "source.sim"))
            .then_some(())
        })
        .await;
        assert!(acked.into_inner() > 0, "nothing to acknowledge");
        for d in devices {
            sim.handle.set_silent(d, false).expect("answer again");
        }
        sim.handle.set_value("t101", "level", 5.0).expect("level back");
        support::eventually(Duration::from_secs(90), "faults cleared", || async {
            let v = support::influxql(
                &influx,
                "hazgate",
                "SELECT count(seq) FROM alarm_event WHERE transition = 'fault_cleared' GROUP BY site, channel",
            )
            .await;
            let n = v["results"][0]["series"].as_array().map_or(0, Vec::len);
            (n >= modbus_channels).then_some(())
        })
        .await;
        // A broken detector loop: a channel not reporting now.
        sim.handle.set_raw("gd102", "lel", 1000.0).expect("set raw");
        support::eventually(Duration::from_secs(30), "bad readings and several self-monitoring reports", || async {
            let bad = count(&influx, "SELECT count(quality) FROM reading WHERE quality = 'bad' AND time > now() - 10s").await;
            let v = support::influxql(
                &influx,
                "hazgate",
                "SELECT count(alarm_flood) FROM hazgate_internal GROUP BY site",
            )
            .await;
            let reports = v["results"][0]["series"].as_array().map_or(0, |s| {
                s.iter()
                    .map(|x| x["values"][0][1].as_u64().unwrap_or(0))
                    .min()
                    .unwrap_or(0)
                    * u64::from(s.len() == 2)
            });
            (bad > 0 && reports >= 3).then_some(())
        })
        .await;

        let mut checked = 0;
        let mut failures = Vec::new();
        let demo_cfg = load("demo.toml");
        for (cfg, site) in [(&demo_cfg, "demo"), (&other_cfg, "tankfarm-dust")] {
            for (file, d) in dashboards(cfg) {
                for (what, q) in queries(&d) {
                    let q = substitute(&q, site);
                    let v = support::influxql(&influx, "hazgate", &q).await;
                    if let Some(err) = v["results"][0]["error"].as_str().or(v["error"].as_str()) {
                        failures.push(format!("{site} {file}: {what}: error `{err}` for {q}"));
                    } else if !has_data(&v) {
                        failures.push(format!("{site} {file}: {what}: no data for {q}"));
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 100, "only {checked} queries found");
        eprintln!("{checked} dashboard queries returned data");
        // What the overview shows is right, not only present: the gas alarm is active (latched),
        // faults have durations, the broken loop is listed as not reporting.
        let overview = &dashboards(&demo_cfg)["site-overview.json"];
        let panel_query = |title: &str| {
            let p = overview["panels"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["title"].as_str().is_some_and(|t| t.starts_with(title)))
                .unwrap_or_else(|| panic!("no overview panel {title}"));
            substitute(p["targets"][0]["query"].as_str().unwrap_or_default(), "demo")
        };
        let active = support::influxql(&influx, "hazgate", &panel_query("当前报警（")).await;
        let rows = serde_json::to_string(&active["results"][0]["series"]).expect("json");
        eprintln!("active alarms: {rows}");
        assert!(
            rows.contains("tankfarm.gd101.lel") && rows.contains("active_acknowledged"),
            "{rows}"
        );
        let faults =
            support::influxql(&influx, "hazgate", &panel_query("各通道故障时长")).await;
        let total: f64 = faults["results"][0]["series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["values"][0][1].as_f64())
            .sum();
        eprintln!("fault time over all channels: {total:.1} s");
        assert!(total > 0.0, "{faults}");
        let silent =
            support::influxql(&influx, "hazgate", &panel_query("当前无有效数据的通道")).await;
        let rows = serde_json::to_string(&silent).expect("json");
        assert!(rows.contains("tankfarm.gd102.lel") && !rows.contains("tankfarm.gd101.lel"), "{rows}");
        assert!(
            failures.is_empty(),
            "{} of {checked} queries failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        other.stop().await.expect("stop second site");
        demo.stop().await.expect("stop");
    })
    .await
    .expect("test timed out");
}
