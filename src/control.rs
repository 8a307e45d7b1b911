//! Requests to the running gateway that come from outside the data path: today a configuration
//! reload, asked by `SIGHUP` (`systemctl reload hazgate`) or `POST /api/v1/config/reload`.
//!
//! The asker sends a [`ReloadAsk`] to the coordinator (`app`), which checks the configuration
//! file again and either applies it or refuses it, and answers with a [`ReloadReport`]. Only
//! one reload runs at a time; asks wait in a bounded queue ([`RELOAD_QUEUE`]) and an ask that
//! finds it full is refused at once ([`ReloadReport::busy`]).

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use utoipa::ToSchema;

/// How many reload asks may wait for the one being applied.
pub const RELOAD_QUEUE: usize = 4;

/// A reload asked by someone.
#[derive(Debug)]
pub struct ReloadAsk {
    /// Who asked: an API token's name, or `SIGHUP`.
    pub by: String,
    /// Where the answer goes.
    pub reply: oneshot::Sender<ReloadReport>,
}

/// The answer to a reload: applied (with what changed) or refused (with every problem; the
/// running configuration stays as it was).
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ReloadReport {
    /// Whether the new configuration now runs.
    pub applied: bool,
    /// Who asked.
    pub by: String,
    /// The configuration file read (empty when the gateway was started without one).
    pub file: String,
    /// When the answer was made (RFC 3339 UTC).
    pub at: String,
    /// One line on what changed or why nothing did, in English and Chinese.
    pub summary: String,
    /// What changed (empty when refused).
    pub changes: Changes,
    /// Why it was refused: every error of the new configuration with its path, or the settings
    /// that need a restart. Empty when applied.
    pub problems: Vec<ReloadProblem>,
    /// Warnings of the new configuration (it was applied anyway).
    pub warnings: Vec<ReloadProblem>,
}

impl ReloadReport {
    /// The answer when a reload cannot even be queued.
    pub fn busy(by: &str) -> Self {
        Self {
            by: by.to_owned(),
            summary: "another reload is in progress; ask again when it is done / 另一次配置重新加载正在进行，请稍后再试".into(),
            problems: vec![ReloadProblem {
                path: String::new(),
                message: "another reload is in progress".into(),
            }],
            ..Self::default()
        }
    }
}

/// One problem of a refused configuration.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ReloadProblem {
    /// Where: the file and the path inside it (`conf.d/tank.toml: devices[2].unit_id`), or the
    /// section that needs a restart.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// What a reload changed, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Changes {
    /// Sources started.
    pub sources_added: Vec<String>,
    /// Sources stopped.
    pub sources_removed: Vec<String>,
    /// Sources whose settings changed: stopped and started again (a new connection).
    pub sources_restarted: Vec<String>,
    /// Sources left running untouched (same connection, same MQTT session).
    pub sources_kept: Vec<String>,
    /// Channels added.
    pub channels_added: Vec<String>,
    /// Channels removed.
    pub channels_removed: Vec<String>,
    /// Channels whose settings changed (label, range, `max_age`, …).
    pub channels_changed: Vec<String>,
    /// Alarms added.
    pub alarms_added: Vec<String>,
    /// Alarms removed (each has a `removed` event in the journal).
    pub alarms_removed: Vec<String>,
    /// Alarms whose settings changed (limit, deadband, delays, priority, …); their state is kept.
    pub alarms_changed: Vec<String>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.sources_added.is_empty()
            && self.sources_removed.is_empty()
            && self.sources_restarted.is_empty()
            && self.channels_added.is_empty()
            && self.channels_removed.is_empty()
            && self.channels_changed.is_empty()
            && self.alarms_added.is_empty()
            && self.alarms_removed.is_empty()
            && self.alarms_changed.is_empty()
    }

    /// A short line in English and Chinese: counts, and the ids when there are few.
    pub fn summary(&self) -> String {
        let (en, zh) = self.parts();
        format!("{en} / {zh}")
    }

    /// [`Changes::summary`] in English and in Chinese.
    pub fn parts(&self) -> (String, String) {
        if self.is_empty() {
            return ("no change".into(), "无变化".into());
        }
        let mut en = Vec::new();
        let mut zh = Vec::new();
        let mut part = |ids: &[String], what_en: &str, what_zh: &str| {
            if ids.is_empty() {
                return;
            }
            let list = if ids.len() <= 5 {
                format!(" ({})", ids.join(", "))
            } else {
                format!(" ({}, … +{})", ids[..3].join(", "), ids.len() - 3)
            };
            en.push(format!("{} {what_en}{list}", ids.len()));
            zh.push(format!("{what_zh} {} 个{list}", ids.len()));
        };
        part(&self.sources_added, "sources added", "新增数据源");
        part(&self.sources_removed, "sources removed", "移除数据源");
        part(&self.sources_restarted, "sources restarted", "重启数据源");
        part(&self.channels_added, "channels added", "新增通道");
        part(&self.channels_removed, "channels removed", "移除通道");
        part(&self.channels_changed, "channels changed", "修改通道");
        part(&self.alarms_added, "alarms added", "新增报警");
        part(&self.alarms_removed, "alarms removed", "移除报警");
        part(&self.alarms_changed, "alarms changed", "修改报警");
        (en.join("; "), zh.join("；"))
    }
}

/// Asks for a reload through `tx` and waits for the answer (refused at once when another
/// reload is queued to the limit, or the gateway is stopping).
pub async fn ask(tx: &mpsc::Sender<ReloadAsk>, by: &str) -> ReloadReport {
    let (reply, answer) = oneshot::channel();
    let ask = ReloadAsk {
        by: by.to_owned(),
        reply,
    };
    if tx.try_send(ask).is_err() {
        return ReloadReport::busy(by);
    }
    answer.await.unwrap_or_else(|_| {
        let mut r = ReloadReport::busy(by);
        r.summary =
            "the gateway is stopping; nothing was reloaded / 网关正在停止，未重新加载".into();
        r.problems[0].message = "the gateway is stopping".into();
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_and_names_the_changes_in_both_languages() {
        let c = Changes {
            alarms_changed: vec!["gd-1.h".into()],
            channels_added: (1..=7).map(|i| format!("c{i}")).collect(),
            sources_kept: vec!["plc".into()],
            ..Changes::default()
        };
        assert_eq!(
            c.summary(),
            "7 channels added (c1, c2, c3, … +4); 1 alarms changed (gd-1.h) / 新增通道 7 个 (c1, c2, c3, … +4)；修改报警 1 个 (gd-1.h)"
        );
        let kept_only = Changes {
            sources_kept: vec!["plc".into()],
            ..Changes::default()
        };
        assert!(kept_only.is_empty());
        assert_eq!(kept_only.summary(), "no change / 无变化");
    }
}
