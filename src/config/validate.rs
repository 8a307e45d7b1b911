//! The validation pass: every problem in one go, each with the path of the offending field.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::alarms::Alarms;
use super::devmap::{ByteOrder, DataType, DeviceMap, RegisterDef, Table};
use super::file::{Api, Batching, Config, DeviceMapEntry, Gateway, Output, Site, Source};
use super::modbus::{ModbusLink, ModbusTcpSource, ModbusTiming};
use crate::alerts::config::Receiver;
pub use crate::check::{Problem, Problems, Severity};
use crate::model::{ChannelId, DeviceId, SourceId, check_id};
use crate::secret::SecretRef;

/// A channel with all defaults applied (the site model's [`crate::model::Channel`]).
pub use crate::model::Channel as ResolvedChannel;

/// One point to poll: the map's definition at its protocol address.
#[derive(Clone, Debug)]
pub struct ResolvedPoint {
    /// Channel it feeds.
    pub channel: ChannelId,
    /// Register definition.
    pub def: RegisterDef,
    /// Zero-based protocol address after address base and offset.
    pub address: u16,
    /// How often this point is polled: its channel's `poll_interval`, else its device's.
    pub poll_interval: Duration,
}

/// A device ready to poll.
#[derive(Clone, Debug)]
pub struct ResolvedDevice {
    /// Device id.
    pub id: DeviceId,
    /// Modbus unit id.
    pub unit_id: u8,
    /// Default poll interval of its points.
    pub poll_interval: Duration,
    /// Points.
    pub points: Vec<ResolvedPoint>,
}

/// One source of the site, resolved: a variant per kind. Adding a source kind adds a variant
/// here (built at the end of [`validate`]) and one arm in `sources::prepare`.
#[derive(Clone, Debug)]
pub enum ResolvedSource {
    /// Modbus TCP, RTU or RTU over TCP (the link says which), with its devices.
    Modbus(ResolvedModbus),
    /// An MQTT subscription with its topic mappings and channels.
    Mqtt(Box<super::mqtt::ResolvedMqttSource>),
}

impl ResolvedSource {
    /// Source id.
    pub fn id(&self) -> &SourceId {
        match self {
            Self::Modbus(m) => &m.id,
            Self::Mqtt(m) => &m.id,
        }
    }
}

/// A Modbus connection with its devices.
#[derive(Clone, Debug)]
pub struct ResolvedModbus {
    /// Source id.
    pub id: SourceId,
    /// Transport and address.
    pub link: ModbusLink,
    /// Timeouts, pause, coalescing gap and backoff cap.
    pub timing: ModbusTiming,
    /// Devices on it, polled one request at a time.
    pub devices: Vec<ResolvedDevice>,
}

/// A validated configuration with defaults applied.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Site.
    pub site: Site,
    /// Gateway settings.
    pub gateway: Gateway,
    /// API settings.
    pub api: Api,
    /// Every channel, in configuration order.
    pub channels: Vec<ResolvedChannel>,
    /// Every source (Modbus and MQTT), in configuration order.
    pub sources: Vec<ResolvedSource>,
    /// Every configured alarm, compiled (defaults applied, expressions parsed).
    pub plan: crate::rules::plan::Plan,
    /// Receivers.
    pub receivers: Vec<Receiver>,
    /// Outputs.
    pub outputs: Vec<Output>,
    /// Alarm engine settings and rules beyond limits (validated).
    pub alarms: Alarms,
    /// The embedded MQTT broker, when enabled.
    pub mqtt_broker: Option<super::mqtt::EmbeddedBroker>,
    /// Alert delivery settings (validated).
    pub notifications: crate::alerts::config::Notifications,
    /// Display names of areas by id (`[[areas]]`).
    pub areas: BTreeMap<String, String>,
}

impl Resolved {
    /// The Modbus sources, in configuration order.
    pub fn modbus(&self) -> impl Iterator<Item = &ResolvedModbus> {
        self.sources.iter().filter_map(|s| match s {
            ResolvedSource::Modbus(m) => Some(m),
            ResolvedSource::Mqtt(_) => None,
        })
    }

    /// The MQTT sources (their channels are in `channels`), in configuration order.
    pub fn mqtt(&self) -> impl Iterator<Item = &super::mqtt::ResolvedMqttSource> {
        self.sources.iter().filter_map(|s| match s {
            ResolvedSource::Mqtt(m) => Some(&**m),
            ResolvedSource::Modbus(_) => None,
        })
    }

    /// The name of an area shown to people: its `[[areas]]` name, else its id.
    pub fn area_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.areas.get(id).map_or(id, String::as_str)
    }

    /// Who the site is for people: display name, time zone, language, area names.
    pub fn identity(&self) -> crate::site::Identity {
        crate::site::Identity {
            id: self.site.id.clone(),
            name: self.site.name.clone(),
            zone: self.site_zone(),
            language: self.site.language,
            areas: self.areas.clone(),
        }
    }

    /// The site's time zone for times shown to people (see [`crate::i18n::site_zone`]).
    pub fn site_zone(&self) -> chrono_tz::Tz {
        crate::i18n::site_zone(
            self.site.timezone.as_deref(),
            self.alarms.schedule.timezone.as_deref(),
        )
    }
}

/// Validates `cfg`; `base` is the directory relative map files are read from.
/// Returns the resolved configuration and its warnings, or every problem (errors and warnings).
pub fn validate(cfg: &Config, base: &Path) -> Result<(Resolved, Vec<Problem>), Vec<Problem>> {
    let mut p = Problems::default();

    if let Err(e) = check_id(&cfg.site.id, false) {
        p.err("site.id", e);
    }
    let mut area_ids = std::collections::BTreeSet::new();
    for (i, a) in cfg.areas.iter().enumerate() {
        if let Err(e) = check_id(&a.id, false) {
            p.err(format!("areas[{i}].id"), e);
        }
        if !area_ids.insert(a.id.as_str()) {
            p.err(
                format!("areas[{i}].id"),
                format!("duplicate area `{}`", a.id),
            );
        }
        if a.name.trim().is_empty() {
            p.err(format!("areas[{i}].name"), "must not be empty");
        }
    }
    if let Some(tz) = &cfg.site.timezone {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            p.err(
                "site.timezone",
                format!("unknown time zone `{tz}` (use an IANA name such as Asia/Shanghai)"),
            );
        }
    }
    if cfg.gateway.sample_queue == 0 {
        p.err("gateway.sample_queue", "must be at least 1");
    }
    if cfg
        .gateway
        .self_monitoring
        .is_some_and(|every| every < Duration::from_secs(1))
    {
        p.err("gateway.self_monitoring", "must be at least 1s");
    }
    if cfg.gateway.shutdown_grace.is_zero() {
        p.err("gateway.shutdown_grace", "must be longer than 0s");
    }
    if cfg.api.max_connections == 0 {
        p.err("api.max_connections", "must be at least 1");
    }
    if cfg.api.header_read_timeout.is_zero() {
        p.err("api.header_read_timeout", "must be longer than 0s");
    }
    let idle_min = cfg.api.request_timeout.max(super::file::STREAM_KEEP_ALIVE);
    if cfg.api.idle_timeout <= idle_min {
        p.err(
            "api.idle_timeout",
            format!(
                "must be longer than {} (request_timeout and the event stream's keep-alive)",
                humantime::format_duration(idle_min)
            ),
        );
    }

    // Sources.
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    // MQTT sources with their channel sets expanded, by source index.
    let mut expanded: HashMap<usize, super::mqtt::Expanded> = HashMap::new();
    for (i, s) in cfg.sources.iter().enumerate() {
        let path = format!("sources[{i}]");
        if let Err(e) = check_id(s.id(), false) {
            p.err(format!("{path}.id"), e);
        }
        if sources.insert(s.id().to_owned(), i).is_some() {
            p.err(
                format!("{path}.id"),
                format!("duplicate source id `{}`", s.id()),
            );
        }
        match s {
            Source::Mqtt(m) => {
                let ex = super::channel_sets::expand(m, &path, &mut p);
                super::mqtt::check_source(&ex, &path, &mut p);
                expanded.insert(i, ex);
            }
            Source::ModbusTcp(t) | Source::ModbusRtuOverTcp(t) => {
                check_host_port(&t.address, &format!("{path}.address"), &mut p);
                if t.timeout.is_zero() {
                    p.err(format!("{path}.timeout"), "must be longer than 0s");
                }
                if t.connect_timeout.is_zero() {
                    p.err(format!("{path}.connect_timeout"), "must be longer than 0s");
                }
            }
            Source::ModbusRtu(r) => {
                r.check(&path, &mut p);
            }
        }
    }

    // Device maps.
    let mut maps: HashMap<String, DeviceMap> = HashMap::new();
    for (i, entry) in cfg.device_maps.iter().enumerate() {
        let path = format!("device_maps[{i}]");
        let map = match entry {
            DeviceMapEntry::Inline(m) => m.clone(),
            DeviceMapEntry::File { file } => {
                let full = base.join(file);
                match std::fs::read_to_string(&full)
                    .map_err(|e| e.to_string())
                    .and_then(|t| device_map_file(&t))
                {
                    Ok(m) => m,
                    Err(e) => {
                        p.err(
                            format!("{path}.file"),
                            format!("{}: {}", full.display(), e.trim_end()),
                        );
                        continue;
                    }
                }
            }
        };
        if let Err(e) = check_id(&map.id, false) {
            p.err(format!("{path}.id"), e);
        }
        check_registers(&map.registers, &path, &mut p);
        if maps.insert(map.id.clone(), map.clone()).is_some() {
            p.err(
                format!("{path}.id"),
                format!("duplicate device map id `{}`", map.id),
            );
        }
    }

    // Devices and their channels.
    let mut device_ids = HashSet::new();
    let mut channels: Vec<ResolvedChannel> = Vec::new();
    let mut channel_index: HashMap<ChannelId, usize> = HashMap::new();
    let mut per_source: BTreeMap<usize, Vec<ResolvedDevice>> = BTreeMap::new();
    // Modbus channels whose register cannot signal a fault: (channel, device path, register).
    let mut no_fault_path: Vec<(ChannelId, String, String)> = Vec::new();
    // `[[devices]]`, then every member of every `[[device_sets]]`, named by its set.
    let mut declared: Vec<(String, std::borrow::Cow<'_, super::file::Device>)> = cfg
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("devices[{i}]"), std::borrow::Cow::Borrowed(d)))
        .collect();
    for (i, set) in cfg.device_sets.iter().enumerate() {
        if !set.id.contains("{unit") {
            p.err(
                format!("device_sets[{i}].id"),
                format!(
                    "`{}` must contain `{{unit}}` (or `{{unit:03}}`) so every member gets its own id",
                    set.id
                ),
            );
            continue;
        }
        for d in set.expand() {
            declared.push((
                format!("device_sets[{i}].members[{}]", d.id),
                std::borrow::Cow::Owned(d),
            ));
        }
    }
    for (path, d) in &declared {
        let path = path.clone();
        if let Err(e) = check_id(&d.id, false) {
            p.err(format!("{path}.id"), e);
        }
        if !device_ids.insert(d.id.clone()) {
            p.err(
                format!("{path}.id"),
                format!("duplicate device id `{}`", d.id),
            );
        }
        if let Err(e) = check_id(&d.area, false) {
            p.err(format!("{path}.area"), e);
        }
        let mut source_idx = sources.get(&d.source).copied();
        if source_idx.is_none() {
            p.err(
                format!("{path}.source"),
                format!("unknown source `{}`", d.source),
            );
        }
        if let Some(s) = source_idx.filter(|&s| matches!(cfg.sources[s], Source::Mqtt(_))) {
            p.err(
                format!("{path}.source"),
                format!(
                    "`{}` is an MQTT source: declare its channels in sources[{s}].channels",
                    d.source
                ),
            );
            source_idx = None;
        }
        if d.address_base > 1 {
            p.err(format!("{path}.address_base"), "must be 0 or 1");
        }
        if d.poll_interval.is_zero() {
            p.err(format!("{path}.poll_interval"), "must be longer than 0s");
        }
        let prefix = d
            .channel_prefix
            .clone()
            .unwrap_or_else(|| format!("{}.{}", d.area, d.id));
        if let Some(cp) = &d.channel_prefix {
            if let Err(e) = check_id(cp, true) {
                p.err(format!("{path}.channel_prefix"), e);
            }
        }
        let (regs, reg_path): (&[RegisterDef], String) = match (&d.map, d.registers.is_empty()) {
            (Some(m), true) => match maps.get(m) {
                Some(map) => (&map.registers, format!("device map `{m}`")),
                None => {
                    p.err(format!("{path}.map"), format!("unknown device map `{m}`"));
                    continue;
                }
            },
            (None, false) => {
                check_registers(&d.registers, &path, &mut p);
                (&d.registers, path.clone())
            }
            (Some(_), false) => {
                p.err(
                    format!("{path}.registers"),
                    "give either `map` or inline `registers`, not both",
                );
                continue;
            }
            (None, true) => {
                p.err(format!("{path}.map"), "give a `map` or inline `registers`");
                continue;
            }
        };
        let timeout = source_idx
            .and_then(|s| modbus_source(&cfg.sources[s]).map(|m| m.1.timeout))
            .unwrap_or(Duration::from_secs(1));
        let mut points = Vec::new();
        for (j, r) in regs.iter().enumerate() {
            let proto =
                i64::from(r.address) - i64::from(d.address_base) + i64::from(d.address_offset);
            let end = proto + i64::from(r.width()) - 1;
            if proto < 0 || end > i64::from(u16::MAX) {
                p.err(
                    format!("{path}.address_offset"),
                    format!(
                        "register `{}` ({reg_path} registers[{j}]) lands at protocol address {proto}, outside 0..=65535",
                        r.name
                    ),
                );
                continue;
            }
            let id = ChannelId::new(format!("{prefix}.{}", r.name));
            if let Some(&other) = channel_index.get(&id) {
                p.err(
                    format!("{path}.channel_prefix"),
                    format!(
                        "channel `{id}` is also produced by device `{}`",
                        channels[other].device
                    ),
                );
                continue;
            }
            channel_index.insert(id.clone(), channels.len());
            channels.push(ResolvedChannel {
                id: id.clone(),
                device: DeviceId::new(&d.id),
                area: d.area.clone(),
                kind: r.kind.clone().unwrap_or_else(|| "generic".into()),
                unit: r.unit.clone().unwrap_or_default(),
                label: String::new(),
                range: r.range.or(r.span.as_ref().map(|s| s.eng)),
                max_age: d.poll_interval * 3 + timeout * 2,
                states: parse_states(&r.states),
                device_name: d.name.trim().to_owned(),
            });
            let mut def = r.clone();
            def.valid = r.effective_valid();
            if def.valid.is_none() && def.fault_codes.is_empty() {
                no_fault_path.push((
                    id.clone(),
                    path.clone(),
                    format!("{reg_path} registers[{j}]"),
                ));
            }
            points.push(ResolvedPoint {
                channel: id,
                def,
                address: u16::try_from(proto).unwrap_or(0),
                poll_interval: d.poll_interval,
            });
        }
        if let Some(s) = source_idx {
            per_source.entry(s).or_default().push(ResolvedDevice {
                id: DeviceId::new(&d.id),
                unit_id: d.unit_id,
                poll_interval: d.poll_interval,
                points,
            });
        }
    }

    // Channels declared on MQTT sources.
    let mut mqtt_sources = Vec::new();
    let mut mqtt_owner: HashMap<ChannelId, usize> = HashMap::new();
    for i in 0..cfg.sources.len() {
        let Some(ex) = expanded.get(&i) else { continue };
        let m = &ex.source;
        for (j, c) in m.channels.iter().enumerate() {
            let cpath = ex.path(&format!("sources[{i}]"), j);
            if matches!(ex.origins[j], super::mqtt::Origin::Explicit(_)) {
                check_states(&c.states, &format!("{cpath}.states"), &mut p);
            }
            let id = ChannelId::new(&c.id);
            if check_id(&c.id, true).is_err() {
                continue; // reported by check_source
            }
            if let Some(&other) = channel_index.get(&id) {
                // A duplicate inside one source is reported by check_source.
                if mqtt_owner.get(&id) != Some(&i) {
                    let by = match mqtt_owner.get(&id) {
                        Some(&o) => format!("MQTT source `{}`", cfg.sources[o].id()),
                        None => format!("device `{}`", channels[other].device),
                    };
                    p.err(
                        match ex.origins[j] {
                            super::mqtt::Origin::Explicit(_) => format!("{cpath}.id"),
                            super::mqtt::Origin::Set(_) => cpath.clone(),
                        },
                        format!("channel `{id}` is also produced by {by}"),
                    );
                }
                continue;
            }
            mqtt_owner.insert(id.clone(), i);
            let segs: Vec<&str> = c.id.split('.').collect();
            channel_index.insert(id.clone(), channels.len());
            channels.push(ResolvedChannel {
                id,
                device: DeviceId::new(
                    c.device
                        .as_deref()
                        .unwrap_or(segs.get(1).copied().unwrap_or("")),
                ),
                area: c.area.clone().unwrap_or_else(|| segs[0].to_owned()),
                kind: c.kind.clone().unwrap_or_else(|| "generic".into()),
                unit: c.unit.clone().unwrap_or_default(),
                label: c.label.clone().unwrap_or_default(),
                range: c.range,
                max_age: c.max_age.unwrap_or(m.max_age),
                states: parse_states(&c.states),
                device_name: m.device_name(c.device_id()).to_owned(),
            });
        }
        mqtt_sources.push((
            i,
            ResolvedSource::Mqtt(Box::new(super::mqtt::ResolvedMqttSource {
                id: SourceId::new(&m.id),
                index: i,
                cfg: m.clone(),
            })),
        ));
    }
    if let Some(b) = &cfg.mqtt_broker {
        super::mqtt::check_broker(b, &mut p);
        super::mqtt::broker_warnings(b, &mut p);
    }

    // Channel overrides.
    let mut channel_polls: HashMap<ChannelId, Duration> = HashMap::new();
    let mut overridden: HashMap<&str, usize> = HashMap::new();
    for (i, c) in cfg.channels.iter().enumerate() {
        let path = format!("channels[{i}]");
        // A second entry would silently win over the first (a gas channel's max_age moving
        // from 10 s to 10 min unnoticed).
        if let Some(first) = overridden.insert(c.id.as_str(), i) {
            overridden.insert(c.id.as_str(), first);
            p.err(
                format!("{path}.id"),
                format!(
                    "channel `{}` is already configured by channels[{first}]: merge the two entries",
                    c.id
                ),
            );
            continue;
        }
        let Some(&idx) = channel_index.get(&ChannelId::new(&c.id)) else {
            p.err(
                format!("{path}.id"),
                format!("channel `{}` is not produced by any device", c.id),
            );
            continue;
        };
        let ch = &mut channels[idx];
        check_states(&c.states, &format!("{path}.states"), &mut p);
        if !c.states.is_empty() {
            ch.states = parse_states(&c.states);
        }
        if let Some(l) = &c.label {
            ch.label = l.clone();
        }
        if let Some(k) = &c.kind {
            ch.kind = k.clone();
        }
        if let Some(u) = &c.unit {
            ch.unit = u.clone();
        }
        if let Some(r) = c.range {
            if r[0] >= r[1] {
                p.err(
                    format!("{path}.range"),
                    "first bound must be below the second",
                );
            }
            ch.range = Some(r);
        }
        if let Some(iv) = c.poll_interval {
            if iv.is_zero() {
                p.err(format!("{path}.poll_interval"), "must be longer than 0s");
            }
            // The default staleness limit follows the channel's own interval.
            let timeout = cfg
                .devices
                .iter()
                .find(|d| d.id == ch.device.as_str())
                .and_then(|d| sources.get(&d.source))
                .and_then(|&s| modbus_source(&cfg.sources[s]).map(|m| m.1.timeout))
                .unwrap_or(Duration::from_secs(1));
            ch.max_age = iv * 3 + timeout * 2;
            channel_polls.insert(ch.id.clone(), iv);
        }
        if let Some(a) = c.max_age {
            if a.is_zero() {
                p.err(format!("{path}.max_age"), "must be longer than 0s");
            }
            ch.max_age = a;
        }
    }
    for devices in per_source.values_mut() {
        for d in devices {
            for pt in &mut d.points {
                if let Some(&iv) = channel_polls.get(&pt.channel) {
                    pt.poll_interval = iv;
                }
            }
        }
    }

    // Gas and oxygen channels must have a way to show a broken detector as a fault.
    for (id, path, reg) in &no_fault_path {
        let ch = &channels[channel_index[id]];
        if crate::model::is_gas_kind(&ch.kind) {
            p.warn(
                path.clone(),
                format!(
                    "{} channel `{id}` has no path to a fault: {reg} has no `valid` raw range, no 4-20 mA `span` and no `fault_codes`, so a broken detector can read as a calm value",
                    ch.kind
                ),
            );
        }
    }
    for i in 0..cfg.sources.len() {
        let Some(ex) = expanded.get(&i) else { continue };
        let m = &ex.source;
        if m.topics.iter().any(|t| t.status.is_some()) {
            continue;
        }
        // A set is warned about once, with its count, not once per generated channel.
        let mut per_set: BTreeMap<usize, (String, usize)> = BTreeMap::new();
        for (j, c) in m.channels.iter().enumerate() {
            let Some(&idx) = channel_index.get(&ChannelId::new(&c.id)) else {
                continue;
            };
            let ch = &channels[idx];
            if !crate::model::is_gas_kind(&ch.kind) {
                continue;
            }
            match ex.origins[j] {
                super::mqtt::Origin::Explicit(_) => p.warn(
                    ex.path(&format!("sources[{i}]"), j),
                    format!(
                        "{} channel `{}` has no path to a fault: no topic of this source reads a `status`, so only silence (max_age) shows a broken detector",
                        ch.kind, c.id
                    ),
                ),
                super::mqtt::Origin::Set(k) => {
                    per_set
                        .entry(k)
                        .or_insert_with(|| (format!("{} channel `{}`", ch.kind, c.id), 0))
                        .1 += 1;
                }
            }
        }
        for (k, (first, n)) in per_set {
            p.warn(
                format!("sources[{i}].channel_sets[{k}]"),
                format!(
                    "{n} gas channel(s) of this set, such as {first}, have no path to a fault: no topic of this source reads a `status`, so only silence (max_age) shows a broken detector"
                ),
            );
        }
    }

    // The alarm plan: limit rules over the kinds' defaults, and the rule kinds of [alarms].
    let calendar = super::alarms::check(&cfg.alarms, &mut p);
    let plan = super::plan::compile(
        &cfg.rules,
        &cfg.rule_defaults,
        &cfg.alarms,
        calendar,
        &channels,
        &mut p,
    );
    let by_id: HashMap<ChannelId, &ResolvedChannel> =
        channels.iter().map(|c| (c.id.clone(), c)).collect();

    // Receivers and [notifications] (checks owned by alerts).
    crate::alerts::config::check(
        &cfg.notifications,
        &cfg.receivers,
        &cfg.site.id,
        &|c| by_id.contains_key(&ChannelId::new(c)),
        &mut p,
    );
    unregistered_regulator_channels(cfg, &channels, &mut p);

    // Outputs.
    let mut ids = HashSet::new();
    let mut spool_dirs = HashSet::new();
    for (i, o) in cfg.outputs.iter().enumerate() {
        let path = format!("outputs[{i}]");
        if let Err(e) = check_id(o.id(), false) {
            p.err(format!("{path}.id"), e);
        }
        if !ids.insert(o.id().to_owned()) {
            p.err(
                format!("{path}.id"),
                format!("duplicate output id `{}`", o.id()),
            );
        }
        check_url(o.url(), &format!("{path}.url"), &mut p);
        let b = o.batching();
        if b.batch_size == 0 {
            p.err(format!("{path}.batch_size"), "must be at least 1");
        }
        if b.queue_capacity < b.batch_size {
            p.err(
                format!("{path}.queue_capacity"),
                format!("must be at least batch_size ({})", b.batch_size),
            );
        }
        if b.timeout.is_zero() {
            p.err(format!("{path}.timeout"), "must be longer than 0s");
        }
        check_tsdb_output(b, &path, &channels, &channel_index, &mut p);
        if let Some(sp) = &b.spool {
            if sp.dir.as_os_str().is_empty() {
                p.err(format!("{path}.spool.dir"), "must not be empty");
            } else if !spool_dirs.insert(sp.dir.clone()) {
                p.err(
                    format!("{path}.spool.dir"),
                    "another output already spools there (one directory per output)",
                );
            }
            if sp.segment_size.bytes() < 4096 {
                p.err(
                    format!("{path}.spool.segment_size"),
                    "must be at least 4KiB",
                );
            }
            if sp.max_size.bytes() < sp.segment_size.bytes().saturating_mul(2) {
                p.err(
                    format!("{path}.spool.max_size"),
                    format!(
                        "must hold at least two segments (2 × segment_size = {})",
                        crate::tsdb::options::ByteSize(sp.segment_size.bytes().saturating_mul(2))
                    ),
                );
            }
            if sp.fsync_interval.is_zero() {
                p.err(
                    format!("{path}.spool.fsync_interval"),
                    "must be longer than 0s",
                );
            }
        }
        match o {
            Output::InfluxdbV1(v1) => {
                if v1.database.is_empty() {
                    p.err(format!("{path}.database"), "must not be empty");
                }
                check_secret(v1.password.as_ref(), &format!("{path}.password"), &mut p);
            }
            Output::InfluxdbV2(v2) => {
                if v2.org.is_empty() {
                    p.err(format!("{path}.org"), "must not be empty");
                }
                if v2.bucket.is_empty() {
                    p.err(format!("{path}.bucket"), "must not be empty");
                }
                check_secret(v2.token.as_ref(), &format!("{path}.token"), &mut p);
            }
        }
    }

    if p.has_errors() {
        return Err(p.0);
    }
    let mut resolved_sources = mqtt_sources;
    for (idx, devices) in per_source {
        let src = &cfg.sources[idx];
        let Some((link, timing)) = modbus_source(src) else {
            continue;
        };
        resolved_sources.push((
            idx,
            ResolvedSource::Modbus(ResolvedModbus {
                id: SourceId::new(src.id()),
                link,
                timing,
                devices,
            }),
        ));
    }
    resolved_sources.sort_by_key(|(idx, _)| *idx);
    let resolved_sources = resolved_sources.into_iter().map(|(_, s)| s).collect();
    Ok((
        Resolved {
            site: cfg.site.clone(),
            gateway: cfg.gateway.clone(),
            api: cfg.api.clone(),
            channels,
            sources: resolved_sources,
            plan,
            receivers: cfg.receivers.clone(),
            outputs: cfg.outputs.clone(),
            alarms: cfg.alarms.clone(),
            mqtt_broker: cfg.mqtt_broker.clone().filter(|b| b.enabled),
            notifications: cfg.notifications.clone(),
            areas: cfg
                .areas
                .iter()
                .map(|a| (a.id.clone(), a.name.clone()))
                .collect(),
        },
        p.0,
    ))
}

/// The link and timing of a Modbus source.
fn modbus_source(s: &Source) -> Option<(ModbusLink, ModbusTiming)> {
    let tcp = |t: &ModbusTcpSource| (t.address.clone(), t.connect_timeout);
    match s {
        Source::ModbusTcp(t) => {
            let (address, connect_timeout) = tcp(t);
            Some((
                ModbusLink::Tcp {
                    address,
                    connect_timeout,
                },
                ModbusTiming::of_tcp(t, false),
            ))
        }
        Source::ModbusRtuOverTcp(t) => {
            let (address, connect_timeout) = tcp(t);
            Some((
                ModbusLink::RtuOverTcp {
                    address,
                    connect_timeout,
                },
                ModbusTiming::of_tcp(t, true),
            ))
        }
        Source::ModbusRtu(r) => Some((ModbusLink::Rtu(r.line()), ModbusTiming::of_rtu(r))),
        Source::Mqtt(_) => None,
    }
}

/// A register index and the bit it uses (`None`: the whole word).
type Occupant = (usize, Option<u8>);

/// The state words that parse (integer key, non-empty word); [`check_states`] reports the rest.
fn parse_states(raw: &BTreeMap<String, String>) -> BTreeMap<i64, String> {
    raw.iter()
        .filter_map(|(k, w)| {
            let v = k.trim().parse::<i64>().ok()?;
            (!w.trim().is_empty()).then(|| (v, w.trim().to_owned()))
        })
        .collect()
}

/// Reports state words whose key is not an integer, whose word is empty, or whose key repeats a
/// value (`1` and `01`).
fn check_states(raw: &BTreeMap<String, String>, path: &str, p: &mut Problems) {
    let mut seen: HashMap<i64, &str> = HashMap::new();
    for (k, w) in raw {
        match k.trim().parse::<i64>() {
            Err(_) => p.err(
                format!("{path}.{k}"),
                format!("state key `{k}` is not an integer value"),
            ),
            Ok(v) => {
                if let Some(first) = seen.insert(v, k) {
                    p.err(
                        format!("{path}.{k}"),
                        format!("state value {v} is also given as `{first}`"),
                    );
                }
            }
        }
        if w.trim().is_empty() {
            p.err(format!("{path}.{k}"), "state word must not be empty");
        }
    }
}

fn check_registers(regs: &[RegisterDef], path: &str, p: &mut Problems) {
    let mut names = HashSet::new();
    // (table, address) -> (register index, bit or None for the whole word)
    let mut used: HashMap<(Table, u32), Vec<Occupant>> = HashMap::new();
    for (j, r) in regs.iter().enumerate() {
        let rp = format!("{path}.registers[{j}]");
        check_states(&r.states, &format!("{rp}.states"), p);
        if let Err(e) = check_id(&r.name, false) {
            p.err(format!("{rp}.name"), e);
        }
        if !names.insert(r.name.as_str()) {
            p.err(
                format!("{rp}.name"),
                format!("duplicate register name `{}`", r.name),
            );
        }
        let dt = r.data_type();
        if r.table.is_bits() && dt != DataType::Bool {
            p.err(
                format!("{rp}.type"),
                format!(
                    "{} tables hold single bits: use type `bool`",
                    r.table.as_str()
                ),
            );
        }
        match (r.bit, r.table.is_bits(), dt) {
            (Some(_), true, _) => p.err(format!("{rp}.bit"), "only for bools inside a register"),
            (Some(b), false, DataType::Bool) if b > 15 => {
                p.err(format!("{rp}.bit"), "must be 0..=15");
            }
            (Some(_), false, DataType::Bool) => {}
            (Some(_), false, _) => p.err(format!("{rp}.bit"), "only with type `bool`"),
            (None, false, DataType::Bool) => {
                p.err(
                    format!("{rp}.bit"),
                    "a bool in a register needs `bit` (0..=15)",
                );
            }
            _ => {}
        }
        if r.width() == 1 && r.order != ByteOrder::ABCD {
            let what = match (r.table.is_bits(), r.order) {
                (true, _) => "has no effect on a single bit",
                (false, ByteOrder::CDAB) => {
                    "has no effect on a 16-bit register (word order needs two or more words)"
                }
                _ => {
                    "only swaps the two bytes of this 16-bit register (the word part has no effect); most devices send 16-bit registers big-endian: check the manual"
                }
            };
            p.warn(format!("{rp}.order"), format!("`order` {what}"));
        }
        if r.span.is_some() && (r.scale.is_some() || r.offset.is_some()) {
            p.err(
                format!("{rp}.span"),
                "give either `span` or `scale`/`offset`, not both",
            );
        }
        if let Some(s) = &r.span {
            if s.raw[0] == s.raw[1] {
                p.err(format!("{rp}.span.raw"), "the two raw bounds must differ");
            }
        }
        if let Some(v) = r.valid {
            if v[0] >= v[1] {
                p.err(
                    format!("{rp}.valid"),
                    "first bound must be below the second",
                );
            }
        }
        if let Some(rg) = r.range {
            if rg[0] >= rg[1] {
                p.err(
                    format!("{rp}.range"),
                    "first bound must be below the second",
                );
            }
        }
        if u32::from(r.address) + u32::from(r.width()) > 65536 {
            p.err(format!("{rp}.address"), "the value runs past address 65535");
        }
        let bit = if r.table.is_bits() { None } else { r.bit };
        for k in 0..u32::from(r.width()) {
            let slot = used.entry((r.table, u32::from(r.address) + k)).or_default();
            if let Some(&(other, _)) = slot
                .iter()
                .find(|(_, ob)| ob.is_none() || bit.is_none() || *ob == bit)
            {
                p.err(
                    format!("{rp}.address"),
                    format!("overlaps {path}.registers[{other}]"),
                );
                break;
            }
            slot.push((j, bit));
        }
    }
}

fn check_host_port(addr: &str, path: &str, p: &mut Problems) {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|x| x > 0) => {}
        _ => p.err(path, format!("`{addr}` is not `host:port`")),
    }
}

fn check_url(url: &str, path: &str, p: &mut Problems) {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        p.err(path, format!("`{url}` is not an http:// or https:// URL"));
    }
}

fn check_secret(s: Option<&SecretRef>, path: &str, p: &mut Problems) {
    if let Some(s) = s {
        if s.env.is_some() == s.file.is_some() {
            p.err(
                path,
                "give exactly one of `env` or `file` (secrets are never inline)",
            );
        }
    }
}

/// Output settings owned by `tsdb`: concurrency, reduction, downsampling.
fn check_tsdb_output(
    b: &Batching,
    path: &str,
    channels: &[ResolvedChannel],
    channel_index: &HashMap<ChannelId, usize>,
    p: &mut Problems,
) {
    if b.max_in_flight == 0 {
        p.err(format!("{path}.max_in_flight"), "must be at least 1");
    } else if b.max_in_flight > 16 {
        p.err(format!("{path}.max_in_flight"), "must be at most 16");
    }
    let check_deadbands = |p: &mut Problems, at: &str, abs: Option<f64>, pct: Option<f64>| {
        if let Some(d) = abs.filter(|d| !d.is_finite() || *d < 0.0) {
            p.err(
                format!("{at}.deadband"),
                format!("{d} is not a number >= 0"),
            );
        }
        if let Some(d) = pct.filter(|d| !(0.0..=100.0).contains(d)) {
            p.err(
                format!("{at}.deadband_percent"),
                format!("{d} is not between 0 and 100"),
            );
        }
    };
    if let Some(r) = &b.reduction {
        let at = format!("{path}.reduction");
        if b.downsample.is_some() {
            p.err(
                &at,
                "an output either reduces raw readings or downsamples them: use two outputs",
            );
        }
        check_deadbands(p, &at, Some(r.deadband), Some(r.deadband_percent));
        if r.heartbeat.is_zero() {
            p.err(format!("{at}.heartbeat"), "must be longer than 0s");
        }
        let mut seen = HashSet::new();
        for (i, c) in r.channels.iter().enumerate() {
            let cp = format!("{at}.channels[{i}]");
            let Some(&idx) = channel_index.get(&ChannelId::new(&c.id)) else {
                p.err(
                    format!("{cp}.id"),
                    format!("channel `{}` is not produced by any device", c.id),
                );
                continue;
            };
            if !seen.insert(c.id.as_str()) {
                p.err(
                    format!("{cp}.id"),
                    format!("channel `{}` is listed twice", c.id),
                );
            }
            check_deadbands(p, &cp, c.deadband, c.deadband_percent);
            if c.heartbeat.is_some_and(|h| h.is_zero()) {
                p.err(format!("{cp}.heartbeat"), "must be longer than 0s");
            }
            if c.deadband_percent.is_some_and(|d| d > 0.0) && channels[idx].range.is_none() {
                p.warn(
                    format!("{cp}.deadband_percent"),
                    format!(
                        "channel `{}` has no range: a percentage deadband has nothing to apply to",
                        c.id
                    ),
                );
            }
        }
    }
    if let Some(d) = &b.downsample {
        let at = format!("{path}.downsample");
        if d.window < std::time::Duration::from_secs(1) {
            p.err(format!("{at}.window"), "must be at least 1s");
        } else if d.window > std::time::Duration::from_secs(86_400) {
            p.err(format!("{at}.window"), "must be at most 1d");
        } else if d.window.subsec_nanos() != 0 {
            p.err(format!("{at}.window"), "must be a whole number of seconds");
        }
        if d.measurement().trim().is_empty() {
            p.err(format!("{at}.measurement"), "must not be empty");
        }
    }
}

/// A map file: a syntax error with its line and column, a mistake with the path inside the map
/// and what is allowed.
fn device_map_file(text: &str) -> Result<DeviceMap, String> {
    let doc = text.parse::<toml::Table>().map_err(|e| {
        let mut e = e;
        let at = e.span().map(|s| {
            let before = text.get(..s.start).unwrap_or(text);
            format!("line {}: ", before.matches('\n').count() + 1)
        });
        e.set_input(None);
        format!("{}{}", at.unwrap_or_default(), e.message())
    })?;
    super::devmap::map_from_value(toml::Value::Table(doc))
}

/// A route's path, receivers (every tier), area and kind filters.
type RouteReach = (String, Vec<String>, Vec<String>, Vec<String>);

/// Warns for each route that can reach a regulator feed with channels the feed has not
/// registered in `[[receivers.points]]`: their alarms are not sent to that feed.
fn unregistered_regulator_channels(cfg: &Config, channels: &[ResolvedChannel], p: &mut Problems) {
    use crate::alerts::config::Receiver;
    let implicit;
    let routes = if cfg.notifications.routes.is_empty() {
        implicit = [(
            "receivers".to_owned(),
            cfg.receivers
                .iter()
                .map(|r| r.id().to_owned())
                .collect::<Vec<_>>(),
            Vec::new(),
            Vec::new(),
        )];
        &implicit[..]
    } else {
        &[][..]
    };
    let listed: Vec<RouteReach> = cfg
        .notifications
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut rcv = r.receivers.clone();
            rcv.extend(
                r.escalation
                    .iter()
                    .flat_map(|t| t.receivers.iter().cloned()),
            );
            (
                format!("notifications.routes[{i}]"),
                rcv,
                r.areas.clone(),
                r.kinds.clone(),
            )
        })
        .collect();
    for (path, rcv, areas, kinds) in routes.iter().chain(listed.iter()) {
        for g in cfg.receivers.iter().filter_map(|r| match r {
            Receiver::Regulator(g) if rcv.contains(&g.id) => Some(g),
            _ => None,
        }) {
            let missing: Vec<&str> = channels
                .iter()
                .filter(|c| areas.is_empty() || areas.contains(&c.area))
                .filter(|c| kinds.is_empty() || kinds.contains(&c.kind))
                .filter(|c| !g.points.iter().any(|pt| pt.channel == c.id.as_str()))
                .map(|c| c.id.as_str())
                .collect();
            if !missing.is_empty() {
                p.warn(
                    path.clone(),
                    format!(
                        "reaches regulator feed `{}` with channels not registered in its \
                         [[receivers.points]], whose alarms are not sent to it: {}",
                        g.id,
                        missing.join(", ")
                    ),
                );
            }
        }
    }
}
