//! Compiles the alarm plan ([`crate::rules::plan`]) from `[[rules]]`, `[rule_defaults.<kind>]`
//! and the rule kinds of `[alarms]`: each table is checked once, with its path, and every
//! default is applied here and nowhere else (a kind's defaults under a channel's own rule,
//! latching on gas channels, a deadband percentage turned absolute, priorities by limit).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::alarms::{Alarms, LimitFields, LimitRule, RESERVED, RuleDefaults, is_gas};
use crate::check::Problems;
use crate::model::{Channel, ChannelId, Priority, SiteMode, check_id};
use crate::rules::expr::Expr;
use crate::rules::plan::{AlarmDef, Detector, Plan};

/// A value and the configuration path it came from.
#[derive(Clone, Debug)]
struct At<T> {
    v: T,
    at: String,
}

/// The effective fields of one channel's limit alarms: its rule over its kind's defaults.
#[derive(Debug, Default)]
struct Effective {
    /// `(name, value)` of LL, L, H, HH.
    limits: [Option<At<f64>>; 4],
    deadband: Option<At<Deadband>>,
    on_delay: Duration,
    off_delay: Duration,
    /// Given priorities (the rule's over the defaults'); unset ones take their limit's default.
    priorities: [Option<Priority>; 4],
    latch: Option<bool>,
    message: Option<String>,
    response: Option<String>,
    suppress_in: Vec<SiteMode>,
    /// The kind whose defaults supplied any field.
    defaults_from: Option<String>,
}

#[derive(Clone, Copy, Debug)]
enum Deadband {
    Abs(f64),
    Pct(f64),
}

/// Limit names in the order of `Effective::limits`, their field names and directions.
const LIMITS: [(&str, &str, bool); 4] = [
    ("LL", "ll", false),
    ("L", "l", false),
    ("H", "h", true),
    ("HH", "hh", true),
];

fn limits_of(f: &LimitFields) -> [Option<f64>; 4] {
    [f.ll, f.l, f.h, f.hh]
}

fn priorities_of(f: &LimitFields) -> [Option<Priority>; 4] {
    let p = &f.priority;
    [p.ll, p.l, p.h, p.hh]
}

/// Merges `own` (at `own_path`) over `base` (a kind's defaults at `base_path`), field by field.
fn merge(own: Option<(&LimitFields, &str)>, base: Option<(&LimitFields, &str, &str)>) -> Effective {
    let mut e = Effective::default();
    let pick = |o: Option<f64>, b: Option<f64>, field: &str| -> Option<At<f64>> {
        match (o, own, b, base) {
            (Some(v), Some((_, op)), _, _) => Some(At {
                v,
                at: format!("{op}.{field}"),
            }),
            (_, _, Some(v), Some((_, bp, _))) => Some(At {
                v,
                at: format!("{bp}.{field}"),
            }),
            _ => None,
        }
    };
    let (ol, bl) = (
        own.map(|(f, _)| limits_of(f)).unwrap_or_default(),
        base.map(|(f, _, _)| limits_of(f)).unwrap_or_default(),
    );
    let mut from_base = false;
    for (k, (_, field, _)) in LIMITS.iter().enumerate() {
        e.limits[k] = pick(ol[k], bl[k], field);
        from_base |= ol[k].is_none() && bl[k].is_some();
    }
    let deadband_of = |f: &LimitFields, path: &str| -> Option<At<Deadband>> {
        match (f.deadband, f.deadband_pct) {
            (_, Some(p)) => Some(At {
                v: Deadband::Pct(p),
                at: format!("{path}.deadband_pct"),
            }),
            (Some(d), None) => Some(At {
                v: Deadband::Abs(d),
                at: format!("{path}.deadband"),
            }),
            (None, None) => None,
        }
    };
    let own_db = own.and_then(|(f, p)| deadband_of(f, p));
    let base_db = base.and_then(|(f, p, _)| deadband_of(f, p));
    from_base |= own_db.is_none() && base_db.is_some();
    e.deadband = own_db.or(base_db);
    let of = own.map(|(f, _)| f);
    let bf = base.map(|(f, _, _)| f);
    macro_rules! field {
        ($name:ident) => {{
            let o = of.and_then(|f| f.$name.clone());
            let b = bf.and_then(|f| f.$name.clone());
            from_base |= o.is_none() && b.is_some();
            o.or(b)
        }};
    }
    e.on_delay = field!(on_delay).unwrap_or_default();
    e.off_delay = field!(off_delay).unwrap_or_default();
    e.latch = field!(latch);
    e.message = field!(message);
    e.response = field!(response);
    e.suppress_in = field!(suppress_in).unwrap_or_default();
    let (op, bp) = (
        of.map(priorities_of).unwrap_or_default(),
        bf.map(priorities_of).unwrap_or_default(),
    );
    for k in 0..LIMITS.len() {
        from_base |= op[k].is_none() && bp[k].is_some();
        e.priorities[k] = op[k].or(bp[k]);
    }
    if from_base {
        e.defaults_from = base.map(|(_, _, kind)| kind.to_owned());
    }
    e
}

/// Checks of one table's own fields: the deadband forms and values.
fn check_own(f: &LimitFields, path: &str, p: &mut Problems) {
    if let Some(pct) = f.deadband_pct {
        if f.deadband.is_some() {
            p.err(
                format!("{path}.deadband_pct"),
                "give either `deadband` or `deadband_pct`, not both",
            );
        }
        if !(0.0..=50.0).contains(&pct) {
            p.err(
                format!("{path}.deadband_pct"),
                "must be between 0 and 50 (% of span)",
            );
        }
    }
    if f.deadband.is_some_and(|d| d.is_nan() || d < 0.0) {
        p.err(format!("{path}.deadband"), "must be 0 or more");
    }
}

/// Checks of the effective limits: order, and the warnings of the standards for gas channels.
fn check_effective(e: &Effective, kind_unit: Option<(&str, &str)>, path: &str, p: &mut Problems) {
    let given: Vec<(&str, &At<f64>)> = LIMITS
        .iter()
        .zip(&e.limits)
        .filter_map(|((_, f, _), l)| l.as_ref().map(|l| (*f, l)))
        .collect();
    for w in given.windows(2) {
        if w[0].1.v >= w[1].1.v {
            p.err(
                w[1].1.at.clone(),
                format!(
                    "limits must be ordered ll < l < h < hh: {} = {} is not above {} = {}",
                    w[1].0, w[1].1.v, w[0].0, w[0].1.v
                ),
            );
        }
    }
    let Some((kind, unit)) = kind_unit else {
        return;
    };
    if crate::model::is_gas_kind(kind) {
        let no_deadband = match e.deadband.as_ref().map(|d| d.v) {
            None => true,
            Some(Deadband::Abs(d) | Deadband::Pct(d)) => d <= 0.0,
        };
        if no_deadband && e.on_delay.is_zero() {
            p.warn(
                path,
                format!(
                    "{kind} limit rule with neither `deadband` (or `deadband_pct`) nor `on_delay`: a reading hovering at the limit raises the alarm again and again (ISA-18.2: a deadband of about 2-5 % of span, or a few seconds' on-delay)"
                ),
            );
        }
    }
    let [_, _, h, hh] = &e.limits;
    let warn_above = |p: &mut Problems, l: &Option<At<f64>>, max: f64, msg: &str| {
        if let Some(l) = l.as_ref().filter(|l| l.v > max) {
            p.warn(l.at.clone(), msg);
        }
    };
    if kind == "combustible_gas" && unit == "%LEL" {
        warn_above(
            p,
            h,
            25.0,
            "level-1 combustible gas alarm above 25 %LEL (GB/T 50493-2019 5.5.2)",
        );
        warn_above(
            p,
            hh,
            50.0,
            "level-2 combustible gas alarm above 50 %LEL (GB/T 50493-2019 5.5.2)",
        );
    }
    if kind == "toxic_gas" && unit == "%OEL" {
        warn_above(
            p,
            h,
            100.0,
            "level-1 toxic gas alarm above 100 % OEL (GB/T 50493-2019 5.5.2)",
        );
        warn_above(
            p,
            hh,
            200.0,
            "level-2 toxic gas alarm above 200 % OEL (GB/T 50493-2019 5.5.2)",
        );
    }
}

/// The limit alarms of `ch` from its effective fields.
fn limit_alarms(e: &Effective, ch: &Channel, p: &mut Problems, out: &mut Vec<AlarmDef>) {
    let deadband = match e.deadband.as_ref() {
        None => 0.0,
        Some(At {
            v: Deadband::Abs(d),
            ..
        }) => *d,
        Some(At {
            v: Deadband::Pct(pct),
            at,
        }) => match ch.range {
            Some([lo, hi]) => (hi - lo).abs() * pct / 100.0,
            None => {
                p.err(
                    at.clone(),
                    format!("channel `{}` has no range to take a percentage of", ch.id),
                );
                0.0
            }
        },
    };
    // Engine order: HH, H, L, LL.
    for k in [3, 2, 1, 0] {
        let Some(limit) = &e.limits[k] else { continue };
        let (name, _, high) = LIMITS[k];
        // Defaults: LL and HH critical, L and H high.
        let priority = e.priorities[k].unwrap_or(if matches!(name, "LL" | "HH") {
            Priority::Critical
        } else {
            Priority::High
        });
        let detector = Detector::Limit {
            limit: limit.v,
            high,
            deadband,
        };
        let mut al = channel_alarm(ch, name, detector, limit.at.clone());
        set_options(
            &mut al,
            priority,
            e.latch,
            &e.suppress_in,
            (e.on_delay, e.off_delay),
            (&e.message, &e.response),
        );
        al.limit = Some(limit.v);
        al.defaults_from = e.defaults_from.clone();
        out.push(al);
    }
}

/// A channel alarm with the fields every rule kind shares.
fn channel_alarm(ch: &Channel, condition: &str, detector: Detector, origin: String) -> AlarmDef {
    AlarmDef {
        id: format!("{}:{condition}", ch.id),
        condition: condition.into(),
        channel: Some(ch.id.clone()),
        area: ch.area.clone(),
        kind: ch.kind.clone(),
        label: ch.label.clone(),
        unit: ch.unit.clone(),
        fault: false,
        priority: Priority::High,
        latching: is_gas(&ch.kind),
        suppress_in: Vec::new(),
        on_delay: Duration::ZERO,
        off_delay: Duration::ZERO,
        limit: None,
        message: None,
        response: None,
        inputs: Vec::new(),
        detector,
        origin,
        defaults_from: None,
    }
}

/// Sets the options a channel rule gives its alarm; `latch` unset latches on gas channels.
fn set_options(
    al: &mut AlarmDef,
    priority: Priority,
    latch: Option<bool>,
    suppress_in: &[SiteMode],
    (on, off): (Duration, Duration),
    (message, response): (&Option<String>, &Option<String>),
) {
    al.priority = priority;
    al.latching = latch.unwrap_or_else(|| is_gas(&al.kind));
    al.suppress_in = suppress_in.to_vec();
    al.on_delay = on;
    al.off_delay = off;
    al.message.clone_from(message);
    al.response.clone_from(response);
}

/// Compiles and checks every alarm rule; `calendar` is the compiled schedule, whose windows
/// the composite expressions may name. The plan keeps it.
pub fn compile(
    rules: &[LimitRule],
    defaults: &BTreeMap<String, RuleDefaults>,
    a: &Alarms,
    calendar: crate::rules::schedule::Calendar,
    channels: &[Channel],
    p: &mut Problems,
) -> Plan {
    let by_id: HashMap<&str, &Channel> = channels.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut ids: HashSet<String> = HashSet::new();
    let mut plan = Plan::default();

    // The kinds' defaults, and the channels of a kind that measure in another unit.
    for (kind, d) in defaults {
        let path = format!("rule_defaults.{kind}");
        let f = d.fields();
        check_own(&f, &path, p);
        if limits_of(&f).iter().all(Option::is_none) {
            p.err(path.clone(), "give at least one of `ll`, `l`, `h`, `hh`");
        }
        let of_kind: Vec<&Channel> = channels.iter().filter(|c| c.kind == *kind).collect();
        if of_kind.is_empty() {
            p.warn(path.clone(), format!("no channel is of kind `{kind}`"));
        }
        if let Some(unit) = &d.unit {
            let other: Vec<&str> = of_kind
                .iter()
                .filter(|c| c.unit != *unit)
                .map(|c| c.id.as_str())
                .collect();
            if !other.is_empty() {
                p.warn(
                    format!("{path}.unit"),
                    format!(
                        "{} channel(s) of kind `{kind}` do not measure in {unit} and take none of these defaults (give them a [[rules]] entry): {}",
                        other.len(),
                        preview(&other)
                    ),
                );
            }
        }
        let e = merge(None, Some((&f, &path, kind)));
        let unit = d
            .unit
            .as_deref()
            .unwrap_or_else(|| of_kind.first().map_or("", |c| c.unit.as_str()));
        check_effective(&e, Some((kind.as_str(), unit)), &path, p);
    }
    let defaults_of = |c: &Channel| -> Option<(String, &RuleDefaults)> {
        let d = defaults.get(&c.kind)?;
        d.unit
            .as_ref()
            .is_none_or(|u| *u == c.unit)
            .then(|| (c.kind.clone(), d))
    };

    // Explicit limit rules, each over its channel's kind defaults.
    let mut ruled: HashSet<&str> = HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        let ch = by_id.get(r.channel.as_str()).copied();
        if ch.is_none() {
            p.err(
                format!("{path}.channel"),
                format!("unknown channel `{}`", r.channel),
            );
        }
        if ch.is_some() && !ruled.insert(r.channel.as_str()) {
            p.err(
                format!("{path}.channel"),
                format!(
                    "a second limit rule for `{}`: put all its limits in one rule",
                    r.channel
                ),
            );
            continue;
        }
        let own = r.fields();
        check_own(&own, &path, p);
        let base = match (&r.opt_out, ch) {
            (Some(reason), ch) => {
                if reason.trim().is_empty() {
                    p.err(
                        format!("{path}.opt_out"),
                        "give the reason this channel takes none of its kind's defaults",
                    );
                }
                if let Some(ch) = ch {
                    match defaults_of(ch) {
                        None => p.warn(
                            format!("{path}.opt_out"),
                            format!(
                                "`{}` has no [rule_defaults.{}] to opt out of",
                                ch.id, ch.kind
                            ),
                        ),
                        Some((kind, _)) => p.warn(
                            format!("{path}.opt_out"),
                            format!(
                                "`{}` takes none of the [rule_defaults.{kind}] limits: {}",
                                ch.id,
                                reason.trim()
                            ),
                        ),
                    }
                    plan.opted_out
                        .push((ch.id.clone(), reason.trim().to_owned()));
                }
                None
            }
            (None, Some(ch)) => defaults_of(ch),
            (None, None) => None,
        };
        let base_path = base.as_ref().map(|(k, _)| format!("rule_defaults.{k}"));
        let base_fields = base.as_ref().map(|(_, d)| d.fields());
        let e = merge(
            Some((&own, &path)),
            base_fields
                .as_ref()
                .zip(base_path.as_deref())
                .zip(base.as_ref().map(|(k, _)| k.as_str()))
                .map(|((f, bp), k)| (f, bp, k)),
        );
        if e.limits.iter().all(Option::is_none) {
            if r.opt_out.is_none() {
                p.err(path.clone(), "give at least one of `ll`, `l`, `h`, `hh`");
            }
            continue;
        }
        check_effective(&e, ch.map(|c| (c.kind.as_str(), c.unit.as_str())), &path, p);
        if let Some(ch) = ch {
            limit_alarms(&e, ch, p, &mut plan.alarms);
        }
    }

    // Channels that take their kind's defaults only.
    for ch in channels {
        if ruled.contains(ch.id.as_str()) {
            continue;
        }
        let Some((kind, d)) = defaults_of(ch) else {
            continue;
        };
        let path = format!("rule_defaults.{kind}");
        let f = d.fields();
        let e = merge(None, Some((&f, &path, &kind)));
        limit_alarms(&e, ch, p, &mut plan.alarms);
    }

    // Rate and discrete alarms.
    let mut check_name = |p: &mut Problems, path: &str, channel: &str, name: &str| {
        if RESERVED.contains(&name) {
            p.err(
                format!("{path}.name"),
                format!("`{name}` is reserved for limit and fault alarms"),
            );
        } else if name.is_empty() || name.contains([':', ' ', '/']) {
            p.err(
                format!("{path}.name"),
                "must be non-empty without `:`, `/` or spaces",
            );
        } else if !ids.insert(format!("{channel}:{name}")) {
            p.err(
                format!("{path}.name"),
                format!("alarm `{channel}:{name}` is defined twice"),
            );
        }
    };
    let channel_of = |p: &mut Problems, path: &str, channel: &str| -> Option<&Channel> {
        let ch = by_id.get(channel).copied();
        if ch.is_none() {
            p.err(
                format!("{path}.channel"),
                format!("unknown channel `{channel}`"),
            );
        }
        ch
    };
    for (i, r) in a.rate.iter().enumerate() {
        let path = format!("alarms.rate[{i}]");
        let ch = channel_of(p, &path, &r.channel);
        check_name(p, &path, &r.channel, &r.name);
        if r.rise_per_min.is_none() && r.fall_per_min.is_none() {
            p.err(path.clone(), "give `rise_per_min`, `fall_per_min` or both");
        }
        for (f, v) in [
            ("rise_per_min", r.rise_per_min),
            ("fall_per_min", r.fall_per_min),
        ] {
            if v.is_some_and(|v| v.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)) {
                p.err(
                    format!("{path}.{f}"),
                    "must be above 0 (a speed in units per minute)",
                );
            }
        }
        if r.deadband.is_nan() || r.deadband < 0.0 {
            p.err(format!("{path}.deadband"), "must be 0 or more");
        }
        if r.window < Duration::from_secs(2) {
            p.err(format!("{path}.window"), "must be at least 2s");
        }
        let Some(ch) = ch else { continue };
        let mut al = channel_alarm(
            ch,
            &r.name,
            Detector::Rate {
                rise: r.rise_per_min,
                fall: r.fall_per_min,
                deadband: r.deadband,
                window: r.window,
            },
            path,
        );
        set_options(
            &mut al,
            r.priority,
            r.latch,
            &r.suppress_in,
            (r.on_delay, r.off_delay),
            (&r.message, &r.response),
        );
        al.limit = r.rise_per_min.or(r.fall_per_min);
        al.unit = format!("{}/min", ch.unit);
        plan.alarms.push(al);
    }
    for (i, r) in a.discrete.iter().enumerate() {
        let path = format!("alarms.discrete[{i}]");
        let ch = channel_of(p, &path, &r.channel);
        check_name(p, &path, &r.channel, &r.name);
        let Some(ch) = ch else { continue };
        let mut al = channel_alarm(
            ch,
            &r.name,
            Detector::Discrete {
                active_when: r.active_when,
            },
            path,
        );
        set_options(
            &mut al,
            r.priority,
            r.latch,
            &r.suppress_in,
            (r.on_delay, r.off_delay),
            (&r.message, &r.response),
        );
        plan.alarms.push(al);
    }
    for (i, r) in a.stuck.iter().enumerate() {
        let path = format!("alarms.stuck[{i}]");
        let ch = channel_of(p, &path, &r.channel);
        if !ids.insert(format!("{}:stuck", r.channel)) {
            p.err(
                format!("{path}.channel"),
                format!("`{}` has two flat-line rules", r.channel),
            );
        }
        if r.after < Duration::from_secs(1) {
            p.err(format!("{path}.after"), "must be at least 1s");
        }
        if r.band.is_nan() || r.band < 0.0 {
            p.err(format!("{path}.band"), "must be 0 or more");
        }
        let Some(ch) = ch else { continue };
        let mut al = channel_alarm(
            ch,
            "stuck",
            Detector::Stuck {
                band: r.band,
                after: r.after,
            },
            path,
        );
        al.fault = true;
        al.latching = false;
        al.priority = r.priority;
        plan.alarms.push(al);
    }

    // Composite alarms.
    for (i, r) in a.composite.iter().enumerate() {
        let path = format!("alarms.composite[{i}]");
        if let Err(e) = check_id(&r.id, false) {
            p.err(format!("{path}.id"), e);
        }
        if !ids.insert(format!("rule:{}", r.id)) {
            p.err(
                format!("{path}.id"),
                format!("duplicate composite id `{}`", r.id),
            );
        }
        let expr = match Expr::parse(&r.expr) {
            Ok(e) => e,
            Err(e) => {
                p.err(format!("{path}.expr"), e.to_string());
                continue;
            }
        };
        let mut known = true;
        for c in &expr.channels {
            if !by_id.contains_key(c.as_str()) {
                p.err(format!("{path}.expr"), format!("unknown channel `{c}`"));
                known = false;
            }
        }
        for w in &expr.windows {
            if !calendar.has_window(w) {
                p.err(
                    format!("{path}.expr"),
                    format!("unknown window `{w}` (define it in [[alarms.schedule.windows]])"),
                );
                known = false;
            }
        }
        if !known {
            continue;
        }
        plan.alarms.push(AlarmDef {
            id: r.id.clone(),
            condition: r.id.clone(),
            channel: None,
            area: r.area.clone(),
            kind: r.kind.clone().unwrap_or_else(|| "composite".into()),
            label: r.message.clone().unwrap_or_else(|| r.id.clone()),
            unit: String::new(),
            fault: false,
            priority: r.priority,
            latching: r.latch,
            suppress_in: r.suppress_in.clone(),
            on_delay: r.on_delay,
            off_delay: r.off_delay,
            limit: None,
            message: Some(
                r.message
                    .clone()
                    .unwrap_or_else(|| format!("{}: {}", r.id, r.expr)),
            ),
            response: r.response.clone(),
            inputs: expr.channels.iter().map(ChannelId::new).collect(),
            detector: Detector::Composite(expr),
            origin: path,
            defaults_from: None,
        });
    }
    plan.calendar = calendar;
    plan
}

/// The first few of `ids`, and how many more.
fn preview(ids: &[&str]) -> String {
    const SHOWN: usize = 5;
    let head = ids[..ids.len().min(SHOWN)].join(", ");
    if ids.len() > SHOWN {
        format!("{head} and {} more", ids.len() - SHOWN)
    } else {
        head
    }
}

/// The effective alarms of a site, one line each, with where each was configured (for
/// `hazgate rules --config`), then the channels that opted out of their kind's defaults and
/// the gas channels left without any limit alarm. In the site's language.
pub fn describe(plan: &Plan, channels: &[Channel], lang: crate::i18n::Language) -> String {
    use std::fmt::Write as _;
    let w = crate::i18n::rules_words(lang);
    let mut rows: Vec<[String; 7]> = Vec::new();
    for a in &plan.alarms {
        let limit = match (&a.detector, a.limit) {
            (Detector::Composite(_), _) => a.message.clone().unwrap_or_default(),
            (Detector::Discrete { active_when }, _) => format!("= {active_when}"),
            (Detector::Stuck { band, after }, _) => format!(
                "±{band} {} / {}",
                a.unit,
                humantime::format_duration(*after)
            ),
            (Detector::Limit { high, .. }, Some(l)) => {
                format!("{} {l} {}", if *high { "≥" } else { "≤" }, a.unit)
            }
            (_, Some(l)) => format!("{l} {}", a.unit),
            (_, None) => String::new(),
        };
        let deadband = match &a.detector {
            Detector::Limit { deadband, .. } | Detector::Rate { deadband, .. }
                if *deadband > 0.0 =>
            {
                format!("{deadband} {}", a.unit)
            }
            _ => String::new(),
        };
        let delays = if a.on_delay.is_zero() && a.off_delay.is_zero() {
            String::new()
        } else {
            format!(
                "{} / {}",
                humantime::format_duration(a.on_delay),
                humantime::format_duration(a.off_delay)
            )
        };
        let origin = match &a.defaults_from {
            Some(k) if !a.origin.starts_with("rule_defaults.") => {
                format!("{} ({} rule_defaults.{k})", a.origin, w.defaults_from)
            }
            _ => a.origin.clone(),
        };
        rows.push([
            a.id.clone(),
            crate::i18n::priority(lang, a.priority).to_owned(),
            limit,
            deadband,
            delays,
            if a.latching { w.latching } else { "" }.to_owned(),
            origin,
        ]);
    }
    let mut widths = w.columns.map(width);
    for r in &rows {
        for (k, c) in r.iter().enumerate() {
            widths[k] = widths[k].max(width(c));
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut l = String::new();
        for (k, c) in cells.iter().enumerate() {
            let pad = widths[k].saturating_sub(width(c));
            let _ = write!(l, "{c}{}  ", " ".repeat(pad));
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(&mut out, &w.columns.map(str::to_owned));
    for r in &rows {
        line(&mut out, r);
    }
    if !plan.opted_out.is_empty() {
        let _ = writeln!(out, "\n{}", w.opted_out);
        for (c, why) in &plan.opted_out {
            let _ = writeln!(out, "  {c}: {why}");
        }
    }
    let unguarded: Vec<&str> = channels
        .iter()
        .filter(|c| crate::model::is_gas_kind(&c.kind))
        .filter(|c| {
            !plan
                .on_channel(c.id.as_str())
                .any(|a| matches!(a.detector, Detector::Limit { .. }))
        })
        .map(|c| c.id.as_str())
        .collect();
    if !unguarded.is_empty() {
        let _ = writeln!(out, "\n{}", w.unguarded);
        for c in unguarded {
            let _ = writeln!(out, "  {c}");
        }
    }
    let _ = writeln!(out, "\n{}", (w.summary)(plan.alarms.len(), channels.len()));
    out
}

/// Columns `s` takes in a terminal: CJK and full-width characters take two.
fn width(s: &str) -> usize {
    s.chars()
        .map(|c| match u32::from(c) {
            0x1100..=0x115F
            | 0x2E80..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6 => 2,
            _ => 1,
        })
        .sum()
}
