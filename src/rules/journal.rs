//! The alarm journal: every transition, with the alarm's lifecycle state after it, appended and
//! fsync'd before it is published. Replaying it on start restores every alarm (a latched alarm is
//! still latched after `kill -9`), the site mode and the sequence number.
//!
//! Layout: `dir/{first_seq:020}.jsonl` segments; one record per line as `{crc32:08x} {json}`.
//! Each run starts a new segment whose first record is a checkpoint of every alarm that is not
//! normal and of the site mode; a segment is also rotated after a day or 64 MiB. Segments older
//! than the retention (by last write) are deleted, never the newest: since every segment starts
//! with a checkpoint, deleting older ones never loses current state.
//!
//! Invariants (the line format, cut-back after a failed append, replay and file modes are
//! [`crate::storage::crc_log`]'s):
//! - A batch is written with one `write_all` and one `sync_data`; the caller publishes only after
//!   it returns. Creating a segment also syncs the directory. A failed append leaves no partial
//!   line behind.
//! - A line whose CRC or JSON does not check (a torn write at a crash, a damaged disk) is
//!   skipped and counted; it never stops the replay.
//! - Segments are `0600`, a directory the journal creates `0700`.
//! - Blocking I/O: callers run these functions off the async runtime (`spawn_blocking`).

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::lifecycle::Life;
use crate::model::{AlarmEvent, SiteMode};
use crate::storage::crc_log::{self, CrcLog};
pub use crate::storage::crc_log::{decode, encode};

/// The site mode with who set it, why and when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModeState {
    /// The mode.
    pub mode: SiteMode,
    /// Who set it.
    #[serde(default)]
    pub by: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// When.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub since: Option<SystemTime>,
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "records are built once per transition and written at once; boxing buys nothing"
)]
pub enum Record {
    /// A transition and the alarm's lifecycle after it.
    Event {
        /// The published event.
        event: AlarmEvent,
        /// Lifecycle of `event.alarm` after it (absent for site-level events).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        life: Option<Life>,
        /// Site mode after it (site-mode events only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<ModeState>,
    },
    /// Every alarm that is not normal, and the site mode, at the start of a segment.
    Checkpoint {
        /// Highest sequence number so far.
        seq: u64,
        /// `(alarm id, lifecycle)`.
        alarms: Vec<(String, Life)>,
        /// Site mode.
        mode: ModeState,
        /// When each of those alarms' current episode was raised (absent in older journals).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        raised: Vec<(String, SystemTime)>,
    },
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Last known lifecycle of each alarm.
    pub alarms: HashMap<String, Life>,
    /// Site mode.
    pub mode: ModeState,
    /// When each alarm's current episode was raised, as its last event said.
    pub raised: HashMap<String, SystemTime>,
    /// Highest sequence number.
    pub seq: u64,
    /// The newest events (at most the requested number), oldest first.
    pub history: VecDeque<AlarmEvent>,
    /// Lines skipped because their CRC or JSON did not check.
    pub damaged: usize,
    /// Segment files read.
    pub segments: usize,
}

impl Replayed {
    fn apply(&mut self, r: Record, history_cap: usize) {
        match r {
            Record::Event { event, life, mode } => {
                self.seq = self.seq.max(event.seq);
                if event.transition == crate::model::Transition::Removed {
                    self.alarms.remove(&event.alarm);
                    self.raised.remove(&event.alarm);
                } else if let Some(l) = life {
                    self.alarms.insert(event.alarm.clone(), l);
                }
                if let Some(t) = event.raised_at {
                    self.raised.insert(event.alarm.clone(), t);
                }
                if let Some(m) = mode {
                    self.mode = m;
                }
                if history_cap > 0 {
                    if self.history.len() >= history_cap {
                        self.history.pop_front();
                    }
                    self.history.push_back(event);
                }
            }
            Record::Checkpoint {
                seq,
                alarms,
                mode,
                raised,
            } => {
                self.seq = self.seq.max(seq);
                self.alarms = alarms.into_iter().collect();
                self.raised = raised.into_iter().collect();
                self.mode = mode;
            }
        }
    }
}

const SEGMENT_BYTES: u64 = 64 << 20;
const SEGMENT_AGE: Duration = Duration::from_secs(86_400);

/// An open journal, appending to its newest segment.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    log: CrcLog,
    opened: SystemTime,
    retention: Duration,
}

fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "jsonl")
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    v.sort();
    Ok(v)
}

impl Journal {
    /// Replays every segment of `dir` (created if missing), keeping the newest `history_cap`
    /// events.
    pub fn replay(dir: &Path, history_cap: usize) -> io::Result<Replayed> {
        crc_log::create_private_dir(dir)?;
        let mut r = Replayed::default();
        for seg in segments(dir)? {
            r.segments += 1;
            crc_log::replay(&seg, |rec| match rec {
                Some(rec) => r.apply(rec, history_cap),
                None => r.damaged += 1,
            })?;
        }
        Ok(r)
    }

    /// Starts a new segment after `checkpoint.seq`, written and synced with the checkpoint as
    /// its first record, and deletes segments past the retention.
    pub fn create(
        dir: &Path,
        checkpoint: &Record,
        retention: Duration,
        now: SystemTime,
    ) -> io::Result<Journal> {
        let seq = match checkpoint {
            Record::Checkpoint { seq, .. } => *seq,
            Record::Event { event, .. } => event.seq,
        };
        let mut path = dir.join(format!("{:020}.jsonl", seq + 1));
        let mut n = 0;
        while path.exists() {
            // A run that crashed before writing its first event used this name: keep it.
            n += 1;
            path = dir.join(format!("{:020}.jsonl", seq + 1 + n));
        }
        let log = CrcLog::create_new(&path)?;
        let mut j = Journal {
            dir: dir.to_owned(),
            log,
            opened: now,
            retention,
        };
        j.append(std::slice::from_ref(checkpoint))?;
        j.prune(now)?;
        Ok(j)
    }

    /// Appends records and syncs them to disk; after a failure nothing of them stays in the
    /// file.
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        self.log.append_records(records, true)
    }

    /// Whether the segment should be rotated (a day old or 64 MiB).
    pub fn should_rotate(&self, now: SystemTime) -> bool {
        self.log.len() >= SEGMENT_BYTES
            || now
                .duration_since(self.opened)
                .is_ok_and(|d| d >= SEGMENT_AGE)
    }

    /// Starts a new segment with `checkpoint` and prunes old ones.
    pub fn rotate(&mut self, checkpoint: &Record, now: SystemTime) -> io::Result<()> {
        *self = Journal::create(&self.dir, checkpoint, self.retention, now)?;
        Ok(())
    }

    /// Deletes segments whose last write is older than the retention, except the newest.
    pub fn prune(&self, now: SystemTime) -> io::Result<usize> {
        let segs = segments(&self.dir)?;
        let mut removed = 0;
        for seg in segs.iter().take(segs.len().saturating_sub(1)) {
            let old = fs::metadata(seg)?
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > self.retention);
            if old {
                fs::remove_file(seg)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlarmClass, AlarmState, ChannelId, Priority, Transition};
    use std::fs::OpenOptions;
    use std::io::Write;

    fn ev(seq: u64, alarm: &str, t: Transition) -> AlarmEvent {
        AlarmEvent {
            seq,
            alarm: alarm.into(),
            channel: ChannelId::new("a.b.c"),
            condition: "H".into(),
            priority: Priority::High,
            transition: t,
            value: Some(30.0),
            limit: Some(25.0),
            message: "m".into(),
            ts: SystemTime::UNIX_EPOCH,
            class: AlarmClass::Process,
            kind: "combustible_gas".into(),
            state: AlarmState::ActiveUnacknowledged,
            by: None,
            comment: None,
            raised_at: None,
            notice: Default::default(),
        }
    }

    fn latched() -> Life {
        Life {
            cond: false,
            unacked: false,
            latched: true,
            ..Life::default()
        }
    }

    #[test]
    fn replay_restores_state_and_skips_torn_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let cp = Record::Checkpoint {
            seq: 0,
            alarms: vec![],
            mode: ModeState::default(),
            raised: vec![],
        };
        let mut j = Journal::create(dir.path(), &cp, Duration::from_secs(86_400 * 90), now)
            .expect("create");
        let active = Life {
            cond: true,
            unacked: true,
            latched: true,
            ..Life::default()
        };
        j.append(&[Record::Event {
            event: ev(1, "a.b.c:H", Transition::Raised),
            life: Some(active),
            mode: None,
        }])
        .expect("append");
        j.append(&[Record::Event {
            event: ev(2, "a.b.c:H", Transition::Cleared),
            life: Some(latched()),
            mode: None,
        }])
        .expect("append");
        drop(j);
        // A crash in the middle of the next write leaves half a line.
        let seg = segments(dir.path())
            .expect("list")
            .pop()
            .expect("one segment");
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(b"1234abcd {\"type\":\"ev").expect("write");
        drop(f);
        let r = Journal::replay(dir.path(), 10).expect("replay");
        assert_eq!(r.seq, 2);
        assert_eq!(r.alarms.get("a.b.c:H"), Some(&latched()));
        assert_eq!(r.damaged, 1);
        assert_eq!(r.history.len(), 2);

        // The next run writes a new segment starting with a checkpoint; replaying both agrees.
        let cp = Record::Checkpoint {
            seq: r.seq,
            alarms: r.alarms.clone().into_iter().collect(),
            mode: r.mode.clone(),
            raised: vec![],
        };
        let j2 = Journal::create(dir.path(), &cp, Duration::from_secs(86_400 * 90), now)
            .expect("create");
        drop(j2);
        let r2 = Journal::replay(dir.path(), 10).expect("replay");
        assert_eq!((r2.seq, r2.alarms.get("a.b.c:H")), (2, Some(&latched())));
        assert_eq!(r2.segments, 2);
    }

    #[test]
    fn retention_deletes_old_segments_but_never_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = SystemTime::now();
        let cp = |seq| Record::Checkpoint {
            seq,
            alarms: vec![("x:H".into(), latched())],
            mode: ModeState::default(),
            raised: vec![],
        };
        let ret = Duration::from_secs(86_400);
        let mut j = Journal::create(dir.path(), &cp(0), ret, t0).expect("create");
        j.rotate(&cp(5), t0).expect("rotate");
        assert_eq!(segments(dir.path()).expect("list").len(), 2);
        // Two days later, the older segment goes; the newest stays even though it is old too.
        assert_eq!(
            j.prune(t0 + Duration::from_secs(2 * 86_400))
                .expect("prune"),
            1
        );
        assert_eq!(segments(dir.path()).expect("list").len(), 1);
        let r = Journal::replay(dir.path(), 0).expect("replay");
        assert_eq!(
            r.alarms.get("x:H"),
            Some(&latched()),
            "the checkpoint carries the state on"
        );
        assert!(j.should_rotate(t0 + Duration::from_secs(86_400)));
        assert!(!j.should_rotate(t0));
    }

    #[test]
    fn damaged_line_in_the_middle_is_skipped() {
        let mut buf = Vec::new();
        encode(
            &Record::Event {
                event: ev(7, "a", Transition::Raised),
                life: None,
                mode: None,
            },
            &mut buf,
        );
        let line = String::from_utf8(buf).expect("utf-8");
        assert!(decode::<Record>(line.trim_end()).is_some());
        let flipped = line.trim_end().replacen("\"seq\":7", "\"seq\":8", 1);
        assert!(
            decode::<Record>(&flipped).is_none(),
            "CRC catches the change"
        );
    }
}
