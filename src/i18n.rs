//! Texts people read, in zh-CN and en, and the site's time.
//!
//! Every human-facing time (robot and SMS texts, the webhook `text`, the ledger, the status
//! page) is shown in the site's time zone with its offset, e.g. `2026-11-30 05:28:18 +08:00`;
//! machine fields (`ts`, `created`, …) stay RFC 3339 UTC.
//!
//! The site's time zone is `[site] timezone`, else `alarms.schedule.timezone`, else the system
//! zone (`TZ`, then `/etc/localtime`, then `/etc/timezone`), else UTC. `[site] language`
//! (`zh-CN`, the default, or `en`) selects the language of alert texts; the status page follows
//! the browser and has a switch (its table is in `src/api/assets/status.js`).

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::model::{AlarmClass, AlarmState, Priority, Transition};

/// The language of alert texts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Language {
    /// Simplified Chinese.
    #[default]
    #[serde(rename = "zh-CN")]
    ZhCn,
    /// English.
    #[serde(rename = "en")]
    En,
}

impl Language {
    /// The BCP 47 tag.
    pub fn tag(self) -> &'static str {
        match self {
            Language::ZhCn => "zh-CN",
            Language::En => "en",
        }
    }
}

/// The site's time zone from its configuration (see the module docs for the order).
pub fn site_zone(site: Option<&str>, schedule: Option<&str>) -> Tz {
    site.or(schedule)
        .and_then(|z| z.parse().ok())
        .unwrap_or_else(system_zone)
}

/// The system's IANA time zone: `TZ`, the `/etc/localtime` link, `/etc/timezone`; else UTC.
pub fn system_zone() -> Tz {
    if let Ok(tz) = std::env::var("TZ") {
        if let Ok(z) = tz.trim_start_matches(':').parse() {
            return z;
        }
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime") {
        let t = target.to_string_lossy();
        if let Some((_, name)) = t.split_once("zoneinfo/") {
            if let Ok(z) = name.parse() {
                return z;
            }
        }
    }
    std::fs::read_to_string("/etc/timezone")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(Tz::UTC)
}

/// `2026-11-30 05:28:18 +08:00`: a time for people, in the site's zone with its offset.
pub fn local_time(t: SystemTime, tz: Tz) -> String {
    DateTime::<Utc>::from(t)
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// A priority in words.
pub fn priority(l: Language, p: Priority) -> &'static str {
    match (l, p) {
        (Language::ZhCn, Priority::Critical) => "紧急",
        (Language::ZhCn, Priority::High) => "高",
        (Language::ZhCn, Priority::Medium) => "中",
        (Language::ZhCn, Priority::Low) => "低",
        (Language::En, Priority::Critical) => "critical",
        (Language::En, Priority::High) => "high",
        (Language::En, Priority::Medium) => "medium",
        (Language::En, Priority::Low) => "low",
    }
}

/// An alarm state in words.
pub fn state(l: Language, s: AlarmState) -> &'static str {
    match (l, s) {
        (Language::ZhCn, AlarmState::Normal) => "正常",
        (Language::ZhCn, AlarmState::ActiveUnacknowledged) => "未确认",
        (Language::ZhCn, AlarmState::ActiveAcknowledged) => "已确认",
        (Language::ZhCn, AlarmState::ReturnedUnacknowledged) => "已恢复未确认",
        (Language::ZhCn, AlarmState::Latched) => "锁存",
        (Language::ZhCn, AlarmState::Shelved) => "搁置",
        (Language::ZhCn, AlarmState::Suppressed) => "按设计抑制",
        (Language::ZhCn, AlarmState::OutOfService) => "停用",
        (Language::En, AlarmState::Normal) => "normal",
        (Language::En, AlarmState::ActiveUnacknowledged) => "unacknowledged",
        (Language::En, AlarmState::ActiveAcknowledged) => "acknowledged",
        (Language::En, AlarmState::ReturnedUnacknowledged) => "returned, unacknowledged",
        (Language::En, AlarmState::Latched) => "latched",
        (Language::En, AlarmState::Shelved) => "shelved",
        (Language::En, AlarmState::Suppressed) => "suppressed by design",
        (Language::En, AlarmState::OutOfService) => "out of service",
    }
}

/// A transition in words.
pub fn transition(l: Language, t: Transition) -> &'static str {
    let zh = matches!(l, Language::ZhCn);
    match t {
        Transition::Raised => pick(zh, "报警", "raised"),
        Transition::Cleared => pick(zh, "报警消除", "cleared"),
        Transition::Fault => pick(zh, "故障", "fault"),
        Transition::FaultCleared => pick(zh, "故障恢复", "fault cleared"),
        Transition::Acknowledged => pick(zh, "已确认", "acknowledged"),
        Transition::Reset => pick(zh, "已复位", "reset"),
        Transition::Shelved => pick(zh, "已搁置", "shelved"),
        Transition::Unshelved => pick(zh, "取消搁置", "unshelved"),
        Transition::OutOfService => pick(zh, "停用", "out of service"),
        Transition::ReturnedToService => pick(zh, "恢复投用", "returned to service"),
        Transition::Suppressed => pick(zh, "按设计抑制", "suppressed"),
        Transition::Unsuppressed => pick(zh, "取消抑制", "unsuppressed"),
        Transition::SiteMode => pick(zh, "站点模式变更", "site mode changed"),
        Transition::Flood => pick(zh, "报警泛滥", "alarm flood"),
        Transition::FloodEnded => pick(zh, "报警泛滥结束", "alarm flood ended"),
        Transition::Chattering => pick(zh, "报警抖动", "chattering"),
        Transition::Removed => pick(zh, "已因配置变更移除", "removed by a configuration change"),
        Transition::ConfigChanged => pick(zh, "配置已重新加载", "configuration reloaded"),
    }
}

/// An alarm class in words.
pub fn class(l: Language, c: AlarmClass) -> &'static str {
    let zh = matches!(l, Language::ZhCn);
    match c {
        AlarmClass::Process => pick(zh, "工艺报警", "process alarm"),
        AlarmClass::Fault => pick(zh, "仪表故障", "instrument fault"),
        AlarmClass::System => pick(zh, "系统事件", "system event"),
    }
}

fn pick(zh: bool, a: &'static str, b: &'static str) -> &'static str {
    if zh { a } else { b }
}

/// Labels of the alert texts.
#[derive(Debug, Clone, Copy)]
pub struct Labels {
    /// Site.
    pub site: &'static str,
    /// Location (channel, area).
    pub location: &'static str,
    /// Value.
    pub value: &'static str,
    /// Limit.
    pub limit: &'static str,
    /// Time.
    pub time: &'static str,
    /// State.
    pub state: &'static str,
    /// Who acted.
    pub by: &'static str,
    /// Comment.
    pub comment: &'static str,
    /// People to call.
    pub call: &'static str,
    /// What to do.
    pub response: &'static str,
    /// Escalation header; `{tier}` is replaced.
    pub escalation: &'static str,
    /// Reminder header.
    pub reminder: &'static str,
    /// Idempotency key.
    pub key: &'static str,
    /// Digest header (a robot's rate limit): `{n}` notifications, in `{areas}`.
    pub digest: &'static str,
    /// Digest header when no area is known.
    pub digest_no_area: &'static str,
}

/// The labels in a language.
pub fn labels(l: Language) -> Labels {
    match l {
        Language::ZhCn => Labels {
            site: "站点",
            location: "位置",
            value: "数值",
            limit: "限值",
            time: "时间",
            state: "状态",
            by: "处理人",
            comment: "说明",
            call: "请联系",
            response: "处置措施",
            escalation: "【升级 第{tier}级】报警未及时确认",
            reminder: "【提醒】报警仍未确认",
            key: "编号",
            digest: "【汇总】另有 {n} 条报警：{areas}（机器人限流，合并发送）",
            digest_no_area: "【汇总】另有 {n} 条报警（机器人限流，合并发送）",
        },
        Language::En => Labels {
            site: "Site",
            location: "Location",
            value: "Value",
            limit: "limit",
            time: "Time",
            state: "State",
            by: "By",
            comment: "Comment",
            call: "Call",
            response: "Response",
            escalation: "[Escalation tier {tier}] Not acknowledged in time",
            reminder: "[Reminder] Still unacknowledged",
            key: "Key",
            digest: "[Digest] {n} more alarms in {areas} (robot rate limit, merged)",
            digest_no_area: "[Digest] {n} more alarms (robot rate limit, merged)",
        },
    }
}

/// Words of the notification ledger (`/api/v1/notifications` and the page's ledger view).
#[derive(Debug, Clone, Copy)]
pub struct LedgerWords {
    /// Status `pending`.
    pub pending: &'static str,
    /// Status `delivered`.
    pub delivered: &'static str,
    /// Status `expired`.
    pub expired: &'static str,
    /// Status `evicted`.
    pub evicted: &'static str,
    /// Reason `event`.
    pub event: &'static str,
    /// Reason `group`.
    pub group: &'static str,
    /// Reason `reminder`.
    pub reminder: &'static str,
    /// Reason `escalation`.
    pub escalation: &'static str,
    /// Reason `report`.
    pub report: &'static str,
    /// Reason `summary`.
    pub summary: &'static str,
    /// `{receiver}`, `{route}`, `{tier}`: to whom, by which route, at which tier.
    pub to: &'static str,
    /// `{n}`: attempts so far.
    pub attempts: &'static str,
    /// `{error}`: the last failure.
    pub last_error: &'static str,
    /// `{by}`, `{at}`: who acknowledged, when.
    pub answered: &'static str,
    /// `{at}`: when it was delivered, expired or evicted.
    pub finished: &'static str,
}

/// The ledger words in a language.
pub fn ledger_words(l: Language) -> LedgerWords {
    match l {
        Language::ZhCn => LedgerWords {
            pending: "待发送",
            delivered: "已送达",
            expired: "已过期未送达",
            evicted: "已丢弃（队列超限）",
            event: "报警通知",
            group: "合并通知",
            reminder: "未确认提醒",
            escalation: "升级通知",
            report: "定时上报",
            summary: "抖动汇总",
            to: "发往 {receiver}（路由 {route}，第 {tier} 级）",
            attempts: "尝试 {n} 次",
            last_error: "最近错误：{error}",
            answered: "{by} 于 {at} 确认",
            finished: "完成于 {at}",
        },
        Language::En => LedgerWords {
            pending: "pending",
            delivered: "delivered",
            expired: "expired, not delivered",
            evicted: "evicted (queue over its bounds)",
            event: "alarm notification",
            group: "grouped notification",
            reminder: "reminder, unacknowledged",
            escalation: "escalation",
            report: "periodic report",
            summary: "chattering summary",
            to: "to {receiver} (route {route}, tier {tier})",
            attempts: "{n} attempts",
            last_error: "last error: {error}",
            answered: "acknowledged by {by} at {at}",
            finished: "finished {at}",
        },
    }
}

/// `hazgate check-config`'s summary line for a valid file (after `{file}: `). Both start with
/// `ok`, which scripts look for.
pub fn config_ok(l: Language, warnings: usize) -> String {
    match l {
        Language::ZhCn => format!("ok，配置有效（{warnings} 个警告）"),
        Language::En => format!("ok ({warnings} warning(s))"),
    }
}

/// `hazgate check-config`'s line listing the files a configuration was read from (after
/// `{file}: `), for a configuration that includes other files.
pub fn config_files_read(l: Language, files: &[String]) -> String {
    let n = files.len();
    let list = files.join(", ");
    match l {
        Language::ZhCn => format!("读取了 {n} 个文件：{list}"),
        Language::En => format!("read {n} file(s): {list}"),
    }
}

/// `hazgate check-config`'s summary line for an invalid file (after `{file}: `).
pub fn config_invalid(l: Language, errors: usize, warnings: usize) -> String {
    match l {
        Language::ZhCn => {
            format!("配置无效：{errors} 个错误，{warnings} 个警告（见上方各行的字段路径）")
        }
        Language::En => format!("{errors} error(s)"),
    }
}

/// `hazgate check-config`'s line after a file that could not be read or parsed (after
/// `{file}: `); `None` where the error line says it all.
pub fn config_unreadable(l: Language, parse: bool) -> Option<&'static str> {
    match (l, parse) {
        (Language::ZhCn, true) => Some("配置文件无法解析（上一行给出行号、列号和字段）"),
        (Language::ZhCn, false) => Some("配置文件无法读取"),
        (Language::En, _) => None,
    }
}

/// Words of `hazgate rules --config` (the effective alarm limits of a site).
#[derive(Clone, Copy, Debug)]
pub struct RulesWords {
    /// Column headings: alarm, priority, limit, deadband, on-delay / off-delay, latching,
    /// configured at.
    pub columns: [&'static str; 7],
    /// "yes" for a latching alarm.
    pub latching: &'static str,
    /// Prefix of the kind whose defaults gave some fields.
    pub defaults_from: &'static str,
    /// Heading of the opted-out channels.
    pub opted_out: &'static str,
    /// Heading of the gas channels without any limit alarm.
    pub unguarded: &'static str,
    /// Summary: alarms, channels.
    pub summary: fn(usize, usize) -> String,
}

/// The words of `hazgate rules` in `l`.
pub fn rules_words(l: Language) -> RulesWords {
    match l {
        Language::ZhCn => RulesWords {
            columns: [
                "报警",
                "优先级",
                "限值",
                "死区",
                "延时(报警/恢复)",
                "锁存",
                "配置来源",
            ],
            latching: "是",
            defaults_from: "其余字段来自",
            opted_out: "不采用类型默认值的通道（及原因）：",
            unguarded: "没有任何限值报警的气体通道：",
            summary: |a, c| format!("共 {a} 个报警，{c} 个通道"),
        },
        Language::En => RulesWords {
            columns: [
                "alarm",
                "priority",
                "limit",
                "deadband",
                "delay on/off",
                "latch",
                "configured at",
            ],
            latching: "yes",
            defaults_from: "other fields from",
            opted_out: "Channels that take none of their kind's defaults (and why):",
            unguarded: "Gas channels without any limit alarm:",
            summary: |a, c| format!("{a} alarm(s), {c} channel(s)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn local_time_carries_the_offset() {
        // 2026-11-29T21:28:18Z
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_987_698);
        assert_eq!(
            local_time(t, chrono_tz::Asia::Shanghai),
            "2026-11-30 05:28:18 +08:00"
        );
        assert_eq!(local_time(t, Tz::UTC), "2026-11-29 21:28:18 +00:00");
    }

    #[test]
    fn site_zone_order() {
        assert_eq!(
            site_zone(Some("Asia/Shanghai"), Some("Europe/Berlin")),
            chrono_tz::Asia::Shanghai
        );
        assert_eq!(
            site_zone(None, Some("Europe/Berlin")),
            chrono_tz::Europe::Berlin
        );
    }

    #[test]
    fn ledger_words_exist_in_both_languages_with_their_placeholders() {
        for l in [Language::ZhCn, Language::En] {
            let w = ledger_words(l);
            for word in [
                w.pending,
                w.delivered,
                w.expired,
                w.evicted,
                w.event,
                w.group,
                w.reminder,
                w.escalation,
                w.report,
                w.summary,
            ] {
                assert!(!word.is_empty(), "{l:?}");
            }
            for (text, holes) in [
                (w.to, &["{receiver}", "{route}", "{tier}"][..]),
                (w.attempts, &["{n}"][..]),
                (w.last_error, &["{error}"][..]),
                (w.answered, &["{by}", "{at}"][..]),
                (w.finished, &["{at}"][..]),
            ] {
                for h in holes {
                    assert!(text.contains(h), "{l:?}: `{text}` lacks {h}");
                }
            }
        }
        assert_eq!(ledger_words(Language::ZhCn).delivered, "已送达");
    }

    #[test]
    fn every_word_exists_in_both_languages() {
        for l in [Language::ZhCn, Language::En] {
            for s in AlarmState::ALL {
                assert!(!state(l, s).is_empty());
            }
        }
        assert_eq!(priority(Language::ZhCn, Priority::Critical), "紧急");
        assert_eq!(state(Language::ZhCn, AlarmState::Latched), "锁存");
        assert_eq!(
            state(Language::ZhCn, AlarmState::ReturnedUnacknowledged),
            "已恢复未确认"
        );
    }
}
