//! The disk spool of one output: a durable FIFO of batches (store-and-forward).
//!
//! This type does blocking file I/O; the writer calls it from `spawn_blocking`, except for the
//! methods that do no I/O (`release`, `sync_due`, `backlog`, and `ack`/`ack_range` when
//! `ack_would_delete` says no file goes), which it may run in place.
//!
//! # Layout
//! The spool owns one directory. It holds segment files named `{first seq:020}.seg`, an optional
//! `acked` file (written at a clean shutdown) and the quarantine file `quarantine.lp` (points the
//! server refused, see the writer). A segment is a sequence of records, one per batch:
//!
//! ```text
//! len: u32 LE | points: u32 LE | seq: u64 LE | crc: u32 LE | payload (len bytes of line protocol)
//! crc = CRC-32 (IEEE, crc32fast) of len, points, seq and payload
//! ```
//!
//! # Invariants
//! - Sequence numbers increase by one per record, across segments and across restarts (the next
//!   one continues after the highest found on open). A segment holds a contiguous range.
//! - Only the appender creates files, and only the newest segment is ever written. A segment is
//!   deleted only when every record in it has been acknowledged by the server (or the segment
//!   is dropped because the spool is full): a record is never deleted before its batch was
//!   acknowledged, so a restart replays everything not yet acknowledged.
//! - A record is written with one `write` call of header and payload; a failed write is cut off
//!   again (`set_len`), so later records never follow a partial one.
//! - Torn write (crash in the middle of a record): on open, each segment is scanned header by
//!   header; a header that is incomplete, implausible or runs past the end of the file ends the
//!   segment there. The rest is truncated away (the newest segment, where a crash tears writes)
//!   or counted as corrupt (older segments). Payload checksums are verified when a record is
//!   read for sending; a record that fails is skipped and its points counted as corrupt, never
//!   sent.
//! - Capacity: before a record is appended, whole oldest segments are dropped until the spool
//!   fits in `max_size` (their unacknowledged points are reported to the caller, which counts
//!   them). The newest segment is never dropped, so `max_size` must hold at least two segments
//!   (validated in config).
//! - Acknowledged records inside a segment that is still needed are remembered in memory and,
//!   at a clean shutdown, in the `acked` file, which the next open applies and deletes. After a
//!   crash such records are sent again: delivery is at least once, and InfluxDB stores a point
//!   sent twice once (same series and timestamp overwrite).
//! - The newest segment, once every record in it is acknowledged, is kept and appended to; it is
//!   deleted at such a moment once it holds 1 MiB (or `segment_size`, if smaller), else when it
//!   rolled over at `segment_size` and its last record is acknowledged. A healthy output thus
//!   creates and deletes a file per MiB or per segment, not one per batch (with receipts that
//!   is up to 200 batches a second). A crash then replays at most one segment (`segment_size`)
//!   of already delivered data: under steady load some record is nearly always in flight, so
//!   the newest segment is rarely fully acknowledged before it rolls over.
//! - A claimed record dropped to make room is the writer's to deliver from memory; if the writer
//!   gives it back instead ([`Spool::release`]), its points are reported as dropped then.
//! - `fsync`: `batch` syncs each record, `interval` syncs at most every `fsync_interval` (the
//!   writer calls [`Spool::maybe_sync`] every flush), `never` leaves it to the kernel. A process
//!   crash loses nothing that was appended, whatever the policy.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::options::{FsyncPolicy, SpoolConfig};

const HEADER: usize = 20;
/// A record longer than this is taken for a corrupt header.
const MAX_RECORD: u32 = 1 << 30;
const ACKED_FILE: &str = "acked";
/// The active segment, once fully acknowledged, is kept and appended to until it holds this
/// many bytes (see [`Spool::ack`]).
const RECYCLE_AT: u64 = 1 << 20;
/// Name of the quarantine file inside the spool directory.
pub const QUARANTINE_FILE: &str = "quarantine.lp";

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Valid bytes (after any truncation on open).
    bytes: u64,
    /// Highest seq in the segment (`first - 1` when empty).
    last: u64,
    /// Records not yet acknowledged.
    unacked: usize,
}

#[derive(Clone, Copy, Debug)]
struct RecMeta {
    seg: u64,
    offset: u64,
    points: u32,
}

/// One spooled batch read back for sending.
#[derive(Debug)]
pub struct Record {
    /// Sequence number (acknowledge with [`Spool::ack`]).
    pub seq: u64,
    /// The batch's lines, each ending in `\n`.
    pub lines: Vec<String>,
}

/// What [`Spool::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Segment files found.
    pub segments: usize,
    /// Unacknowledged records (batches) to replay.
    pub records: usize,
    /// Points in them.
    pub points: u64,
    /// Bytes cut off the end of segments (torn writes).
    pub truncated_bytes: u64,
}

/// Result of a read for sending.
#[derive(Debug, Default)]
pub struct Backlog {
    /// The oldest unacknowledged, unclaimed record, if any (now claimed).
    pub record: Option<Record>,
    /// Points in records skipped because their checksum failed.
    pub corrupt_points: u64,
}

/// A disk spool; see the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    cfg: SpoolConfig,
    segments: BTreeMap<u64, Segment>,
    /// The segment being appended to (its first seq), if open.
    active: Option<(u64, File)>,
    records: BTreeMap<u64, RecMeta>,
    claimed: HashSet<u64>,
    /// Claimed records dropped to make room, with their points (see [`Spool::release`]).
    dropped_claims: BTreeMap<u64, u32>,
    next_seq: u64,
    bytes: u64,
    points: u64,
    last_sync: Instant,
    dirty: bool,
    reader: Option<(u64, File)>,
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn crc(len: u32, points: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&points.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn parse_header(b: &[u8; HEADER]) -> (u32, u32, u64, u32) {
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&b[8..16]);
    (u32_at(0), u32_at(4), u64::from_le_bytes(s), u32_at(16))
}

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir`, scanning existing segments.
    pub fn open(cfg: SpoolConfig) -> io::Result<(Self, OpenReport)> {
        let dir = cfg.dir.clone();
        crate::private_fs::create_dir_all(&dir)?;
        let mut firsts = Vec::new();
        for e in fs::read_dir(&dir)? {
            let name = e?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".seg") {
                if let Ok(n) = stem.parse::<u64>() {
                    firsts.push(n);
                }
            }
        }
        firsts.sort_unstable();
        let mut s = Spool {
            dir: dir.clone(),
            cfg,
            segments: BTreeMap::new(),
            active: None,
            records: BTreeMap::new(),
            claimed: HashSet::new(),
            dropped_claims: BTreeMap::new(),
            next_seq: 0,
            bytes: 0,
            points: 0,
            last_sync: Instant::now(),
            dirty: false,
            reader: None,
        };
        let mut report = OpenReport {
            segments: firsts.len(),
            ..OpenReport::default()
        };
        for (i, &first) in firsts.iter().enumerate() {
            let newest = i + 1 == firsts.len();
            let path = seg_path(&dir, first);
            let mut f = crate::private_fs::open(
                crate::private_fs::options().read(true).write(true),
                &path,
            )?;
            let size = f.metadata()?.len();
            let mut off = 0u64;
            let mut expect = first;
            let mut unacked = 0;
            let mut hdr = [0u8; HEADER];
            while off + HEADER as u64 <= size {
                f.seek(SeekFrom::Start(off))?;
                f.read_exact(&mut hdr)?;
                let (len, points, seq, _) = parse_header(&hdr);
                let end = off + HEADER as u64 + u64::from(len);
                if len > MAX_RECORD || seq != expect || end > size {
                    break;
                }
                s.records.insert(
                    seq,
                    RecMeta {
                        seg: first,
                        offset: off,
                        points,
                    },
                );
                s.points += u64::from(points);
                unacked += 1;
                expect += 1;
                off = end;
            }
            if off < size {
                report.truncated_bytes += size - off;
                if newest {
                    tracing::warn!(segment = %path.display(), bytes = size - off, "spool segment ends in a torn record: cut off");
                } else {
                    tracing::error!(segment = %path.display(), bytes = size - off, "spool segment corrupt after this point: the rest is skipped");
                }
                f.set_len(off)?;
                f.sync_all()?;
            }
            s.bytes += off;
            s.next_seq = s.next_seq.max(expect);
            s.segments.insert(
                first,
                Segment {
                    path,
                    bytes: off,
                    last: expect.wrapping_sub(1),
                    unacked,
                },
            );
        }
        // Records acknowledged before a clean shutdown.
        let acked_path = dir.join(ACKED_FILE);
        if let Ok(text) = fs::read_to_string(&acked_path) {
            for seq in text
                .split_whitespace()
                .filter_map(|t| t.parse::<u64>().ok())
            {
                s.forget(seq);
            }
            fs::remove_file(&acked_path)?;
        }
        s.gc_empty()?;
        report.records = s.records.len();
        report.points = s.points;
        Ok((s, report))
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk in segments.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Points in unacknowledged records.
    pub fn points(&self) -> u64 {
        self.points
    }

    /// Unacknowledged records.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Unacknowledged records not claimed for sending (the backlog).
    pub fn backlog(&self) -> usize {
        self.records.len() - self.claimed.len().min(self.records.len())
    }

    /// Appends one batch (lines each ending in `\n`, concatenated). With `claim`, the record is
    /// handed to the caller for sending and not returned by [`Spool::next_backlog`] unless the
    /// caller gives it back ([`Spool::release`]).
    /// Returns the record's seq and the points of unacknowledged records dropped to make room.
    pub fn append(&mut self, payload: &[u8], points: u32, claim: bool) -> io::Result<(u64, u64)> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "batch too large for the spool")
            })?;
        let rec_len = (HEADER + payload.len()) as u64;
        let dropped = self.make_room(rec_len)?;
        let roll = match &self.active {
            Some((first, _)) => self
                .segments
                .get(first)
                .is_none_or(|s| s.bytes >= self.cfg.segment_size.bytes()),
            None => true,
        };
        if roll {
            self.seal()?;
            let first = self.next_seq;
            let path = seg_path(&self.dir, first);
            let f = crate::private_fs::open(
                crate::private_fs::options().create(true).append(true),
                &path,
            )?;
            if self.cfg.fsync == FsyncPolicy::Batch {
                f.sync_all()?;
                File::open(&self.dir)?.sync_all()?;
            }
            self.segments.insert(
                first,
                Segment {
                    path,
                    bytes: 0,
                    last: first.wrapping_sub(1),
                    unacked: 0,
                },
            );
            self.active = Some((first, f));
        }
        let Some((first, f)) = self.active.as_mut() else {
            return Err(io::Error::other("no active segment"));
        };
        let first = *first;
        let seq = self.next_seq;
        let mut buf = Vec::with_capacity(HEADER + payload.len());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&points.to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(&crc(len, points, seq, payload).to_le_bytes());
        buf.extend_from_slice(payload);
        let seg = self
            .segments
            .get_mut(&first)
            .ok_or_else(|| io::Error::other("active segment missing"))?;
        if let Err(e) = f.write_all(&buf) {
            // Cut a partial record off so nothing ever follows it.
            let _ = f.set_len(seg.bytes);
            return Err(e);
        }
        let offset = seg.bytes;
        seg.bytes += rec_len;
        seg.last = seq;
        seg.unacked += 1;
        self.bytes += rec_len;
        self.points += u64::from(points);
        self.next_seq += 1;
        self.records.insert(
            seq,
            RecMeta {
                seg: first,
                offset,
                points,
            },
        );
        if claim {
            self.claimed.insert(seq);
        }
        self.dirty = true;
        if self.cfg.fsync == FsyncPolicy::Batch {
            self.sync()?;
        }
        Ok((seq, dropped))
    }

    /// Drops oldest segments until `need` more bytes fit; returns the unacknowledged, unclaimed
    /// points dropped.
    fn make_room(&mut self, need: u64) -> io::Result<u64> {
        let mut dropped = 0;
        let active = self.active.as_ref().map(|(f, _)| *f);
        while self.bytes + need > self.cfg.max_size.bytes() {
            let Some((&first, _)) = self.segments.iter().next() else {
                break;
            };
            if Some(first) == active {
                break;
            }
            let seg = self
                .segments
                .remove(&first)
                .ok_or_else(|| io::Error::other("segment vanished"))?;
            let seqs: Vec<u64> = self
                .records
                .range(first..=seg.last)
                .map(|(s, _)| *s)
                .collect();
            for seq in seqs {
                if let Some(m) = self.records.remove(&seq) {
                    self.points -= u64::from(m.points);
                    // A claimed record is in the writer's hands and gets delivered from memory,
                    // unless the writer releases it: then it counts as dropped (`release`).
                    if self.claimed.remove(&seq) {
                        self.dropped_claims.insert(seq, m.points);
                    } else {
                        dropped += u64::from(m.points);
                    }
                }
            }
            self.bytes -= seg.bytes;
            if self.reader.as_ref().is_some_and(|(f, _)| *f == first) {
                self.reader = None;
            }
            fs::remove_file(&seg.path)?;
        }
        Ok(dropped)
    }

    fn seal(&mut self) -> io::Result<()> {
        if let Some((first, f)) = self.active.take() {
            if self.dirty && self.cfg.fsync != FsyncPolicy::Never {
                f.sync_data()?;
                self.dirty = false;
                self.last_sync = Instant::now();
            }
            if self.segments.get(&first).is_some_and(|s| s.unacked == 0) {
                self.delete_segment(first)?;
            }
        }
        Ok(())
    }

    /// Forces appended data to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some((_, f)) = &self.active {
            if self.dirty {
                f.sync_data()?;
            }
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs if the policy is `interval` and the interval has passed.
    pub fn maybe_sync(&mut self) -> io::Result<()> {
        if self.sync_due() {
            self.sync()?;
        }
        Ok(())
    }

    /// Whether [`Spool::maybe_sync`] would sync now (otherwise it does nothing).
    pub fn sync_due(&self) -> bool {
        self.cfg.fsync == FsyncPolicy::Interval
            && self.dirty
            && self.last_sync.elapsed() >= self.cfg.fsync_interval
    }

    /// Time since the last sync.
    pub fn since_sync(&self) -> Duration {
        self.last_sync.elapsed()
    }

    /// Reads the oldest unacknowledged record not claimed yet, and claims it.
    pub fn next_backlog(&mut self) -> io::Result<Backlog> {
        let mut out = Backlog::default();
        loop {
            let Some((&seq, &meta)) = self.records.iter().find(|(s, _)| !self.claimed.contains(s))
            else {
                return Ok(out);
            };
            match self.read_record(seq, meta)? {
                Some(lines) => {
                    self.claimed.insert(seq);
                    out.record = Some(Record { seq, lines });
                    return Ok(out);
                }
                None => {
                    tracing::error!(dir = %self.dir.display(), seq, points = meta.points, "spool record fails its checksum: points skipped");
                    out.corrupt_points += u64::from(meta.points);
                    self.ack(seq)?;
                }
            }
        }
    }

    /// Reads a record; `None` when its checksum (or framing) is wrong.
    fn read_record(&mut self, seq: u64, meta: RecMeta) -> io::Result<Option<Vec<String>>> {
        if self.reader.as_ref().is_none_or(|(f, _)| *f != meta.seg) {
            let path = seg_path(&self.dir, meta.seg);
            self.reader = Some((meta.seg, File::open(path)?));
        }
        let Some((_, f)) = self.reader.as_mut() else {
            return Ok(None);
        };
        f.seek(SeekFrom::Start(meta.offset))?;
        let mut hdr = [0u8; HEADER];
        f.read_exact(&mut hdr)?;
        let (len, points, hseq, sum) = parse_header(&hdr);
        if hseq != seq || len > MAX_RECORD {
            return Ok(None);
        }
        let mut payload = vec![0u8; len as usize];
        f.read_exact(&mut payload)?;
        if crc(len, points, hseq, &payload) != sum {
            return Ok(None);
        }
        let Ok(text) = String::from_utf8(payload) else {
            return Ok(None);
        };
        Ok(Some(
            text.split_inclusive('\n').map(str::to_owned).collect(),
        ))
    }

    /// Marks a record acknowledged; deletes its segment when nothing in it is left to send.
    pub fn ack(&mut self, seq: u64) -> io::Result<()> {
        self.claimed.remove(&seq);
        self.dropped_claims.remove(&seq);
        let Some(meta) = self.records.get(&seq).copied() else {
            return Ok(());
        };
        self.forget(seq);
        if self.ack_deletes(meta.seg) {
            if self.active.as_ref().is_some_and(|(f, _)| *f == meta.seg) {
                // Everything written so far is delivered: start afresh with the next batch.
                self.active = None;
                self.dirty = false;
            }
            self.delete_segment(meta.seg)?;
        }
        Ok(())
    }

    /// Acknowledges every record in `seqs` (see [`Spool::ack`]).
    /// Every record is acknowledged even when deleting a segment fails on the way; the first
    /// error is returned.
    pub fn ack_range(&mut self, seqs: std::ops::Range<u64>) -> io::Result<()> {
        let mut first_err = None;
        for seq in seqs {
            if let Err(e) = self.ack(seq) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Whether acknowledging `seqs` now would delete a segment (file I/O). Records the spool
    /// does not hold count for nothing. Without I/O, [`Spool::ack_range`] only updates memory,
    /// so a caller on the async runtime may run it in place.
    pub fn ack_would_delete(&self, seqs: std::ops::Range<u64>) -> bool {
        let mut per_seg: Vec<(u64, usize)> = Vec::new();
        for seq in seqs {
            if let Some(m) = self.records.get(&seq) {
                match per_seg.last_mut() {
                    Some((seg, n)) if *seg == m.seg => *n += 1,
                    _ => per_seg.push((m.seg, 1)),
                }
            }
        }
        per_seg.into_iter().any(|(first, n)| {
            self.segments
                .get(&first)
                .is_some_and(|s| s.unacked <= n && self.deletes_when_done(first, s))
        })
    }

    /// Gives claimed records back: they are backlog again (memory only). Returns the points of
    /// those the spool dropped to make room meanwhile: nobody holds them any more.
    pub fn release(&mut self, seqs: std::ops::Range<u64>) -> u64 {
        let mut lost = 0;
        for seq in seqs {
            self.claimed.remove(&seq);
            if let Some(points) = self.dropped_claims.remove(&seq) {
                lost += u64::from(points);
            }
        }
        lost
    }

    /// After an acknowledgement: is segment `first` fully acknowledged and to be deleted?
    fn ack_deletes(&self, first: u64) -> bool {
        self.segments
            .get(&first)
            .is_some_and(|s| s.unacked == 0 && self.deletes_when_done(first, s))
    }

    /// A fully acknowledged segment is deleted, except the active one while it holds less than
    /// [`RECYCLE_AT`] (or `segment_size`, if smaller): further batches are appended to it, so a
    /// healthy output costs one file creation and deletion per that many bytes instead of one
    /// per batch. What a crash then replays is at most that much already delivered data.
    fn deletes_when_done(&self, first: u64, seg: &Segment) -> bool {
        let active = self.active.as_ref().is_some_and(|(f, _)| *f == first);
        !active || seg.bytes >= RECYCLE_AT.min(self.cfg.segment_size.bytes())
    }

    /// Drops a record from the bookkeeping (not from disk).
    fn forget(&mut self, seq: u64) {
        self.claimed.remove(&seq);
        if let Some(m) = self.records.remove(&seq) {
            self.points -= u64::from(m.points);
            if let Some(s) = self.segments.get_mut(&m.seg) {
                s.unacked = s.unacked.saturating_sub(1);
            }
        }
    }

    fn delete_segment(&mut self, first: u64) -> io::Result<()> {
        if let Some(seg) = self.segments.remove(&first) {
            self.bytes -= seg.bytes;
            if self.reader.as_ref().is_some_and(|(f, _)| *f == first) {
                self.reader = None;
            }
            fs::remove_file(&seg.path)?;
        }
        Ok(())
    }

    fn gc_empty(&mut self) -> io::Result<()> {
        let empty: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, s)| s.unacked == 0)
            .map(|(f, _)| *f)
            .collect();
        for f in empty {
            self.delete_segment(f)?;
        }
        Ok(())
    }

    /// Clean shutdown: syncs, and records which records in remaining segments were acknowledged
    /// (so the next start does not send them again). Claims are released: what was claimed and
    /// not acknowledged is backlog for the next start.
    pub fn close(&mut self) -> io::Result<()> {
        self.seal()?;
        self.claimed.clear();
        self.dropped_claims.clear();
        let mut acked = String::new();
        for (&first, seg) in &self.segments {
            for seq in first..=seg.last {
                if !self.records.contains_key(&seq) {
                    acked.push_str(&seq.to_string());
                    acked.push('\n');
                }
            }
        }
        let path = self.dir.join(ACKED_FILE);
        if acked.is_empty() {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        } else {
            let tmp = self.dir.join("acked.tmp");
            let mut f = crate::private_fs::create(&tmp)?;
            f.write_all(acked.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    /// Appends refused points to `quarantine.lp` (rotated to `quarantine.lp.1` past
    /// `quarantine_size`), each preceded by a comment with the server's message.
    pub fn quarantine(&self, lines: &[String], message: &str) -> io::Result<()> {
        let path = self.dir.join(QUARANTINE_FILE);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size >= self.cfg.quarantine_size.bytes() {
            fs::rename(&path, self.dir.join(format!("{QUARANTINE_FILE}.1")))?;
        }
        let mut f = crate::private_fs::open(
            crate::private_fs::options().create(true).append(true),
            &path,
        )?;
        let mut buf = String::new();
        let msg: String = message
            .chars()
            .map(|c| if c == '\n' { ' ' } else { c })
            .collect();
        buf.push_str("# ");
        buf.push_str(&msg);
        buf.push('\n');
        for l in lines {
            buf.push_str(l);
        }
        f.write_all(buf.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::options::ByteSize;

    fn cfg(dir: &Path, max: u64, seg: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_owned(),
            max_size: ByteSize(max),
            segment_size: ByteSize(seg),
            fsync: FsyncPolicy::Never,
            fsync_interval: Duration::from_secs(1),
            quarantine_size: ByteSize(1 << 20),
        }
    }

    fn batch(i: usize) -> Vec<u8> {
        format!("m v={i}i {i}\nm w={i}i {i}\n").into_bytes()
    }

    fn drain(s: &mut Spool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(r) = s.next_backlog().expect("read").record {
            out.extend(r.lines);
            s.ack(r.seq).expect("ack");
        }
        out
    }

    #[test]
    fn fifo_ack_and_replay_after_reopen() {
        let t = tempfile::tempdir().expect("tmp");
        let (mut s, rep) = Spool::open(cfg(t.path(), 1 << 20, 100)).expect("open");
        assert_eq!(rep, OpenReport::default());
        for i in 0..10 {
            s.append(&batch(i), 2, false).expect("append");
        }
        assert_eq!((s.records(), s.points()), (10, 20));
        // Deliver the first three, then "crash" (drop without close).
        for _ in 0..3 {
            let r = s.next_backlog().expect("read").record.expect("record");
            s.ack(r.seq).expect("ack");
        }
        drop(s);
        let (mut s, rep) = Spool::open(cfg(t.path(), 1 << 20, 100)).expect("reopen");
        // Acked records whose segment is gone do not come back; the rest do, in order.
        assert!(rep.records >= 7, "{rep:?}");
        let lines = drain(&mut s);
        assert_eq!(lines.last().map(String::as_str), Some("m w=9i 9\n"));
        assert!(lines.iter().any(|l| l == "m v=3i 3\n"));
        assert_eq!(s.records(), 0);
        assert_eq!(s.bytes(), 0, "all segments deleted once acknowledged");
        let files: Vec<_> = fs::read_dir(t.path()).expect("ls").collect();
        assert!(files.is_empty(), "{files:?}");
    }

    #[test]
    fn clean_close_remembers_acks() {
        let t = tempfile::tempdir().expect("tmp");
        let (mut s, _) = Spool::open(cfg(t.path(), 1 << 20, 1 << 20)).expect("open");
        for i in 0..5 {
            s.append(&batch(i), 2, false).expect("append");
        }
        let r = s.next_backlog().expect("read").record.expect("rec");
        s.ack(r.seq).expect("ack");
        let claimed = s.next_backlog().expect("read").record.expect("rec");
        assert_eq!(claimed.seq, 1);
        s.close().expect("close");
        let (mut s, rep) = Spool::open(cfg(t.path(), 1 << 20, 1 << 20)).expect("reopen");
        assert_eq!(
            rep.records, 4,
            "the acked record is not replayed; the claimed one is"
        );
        let lines = drain(&mut s);
        assert_eq!(lines.first().map(String::as_str), Some("m v=1i 1\n"));
        // Sequence numbers continue after a reopen.
        let (seq, _) = s.append(&batch(9), 2, false).expect("append");
        assert!(seq >= 5);
    }

    #[test]
    fn claimed_records_are_not_backlog() {
        let t = tempfile::tempdir().expect("tmp");
        let (mut s, _) = Spool::open(cfg(t.path(), 1 << 20, 1 << 20)).expect("open");
        let (a, _) = s.append(&batch(0), 2, true).expect("append");
        let (b, _) = s.append(&batch(1), 2, false).expect("append");
        let r = s.next_backlog().expect("read").record.expect("rec");
        assert_eq!(r.seq, b);
        assert!(s.next_backlog().expect("read").record.is_none());
        // Released, a claimed record is backlog again.
        s.release(a..a + 1);
        assert_eq!(
            s.next_backlog().expect("read").record.map(|r| r.seq),
            Some(a)
        );
        s.ack(b).expect("ack");
        s.ack(a).expect("ack");
        assert_eq!((s.points(), s.records(), s.backlog()), (0, 0, 0));
    }

    fn seg_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn delivered_newest_segment_is_reused_up_to_the_recycle_size() {
        let t = tempfile::tempdir().expect("tmp");
        let written: u64 = (0..50).map(|i| (HEADER + batch(i).len()) as u64).sum();
        let (mut s, _) = Spool::open(cfg(t.path(), 1 << 30, 1 << 30)).expect("open");
        // Delivered batch after delivered batch: one file, appended to.
        for i in 0..50 {
            let (seq, _) = s.append(&batch(i), 2, true).expect("append");
            assert!(
                !s.ack_would_delete(seq..seq + 1),
                "below the recycle size: memory only"
            );
            s.ack(seq).expect("ack");
            assert_eq!(seg_files(t.path()), vec![format!("{:020}.seg", 0)]);
        }
        assert_eq!(
            s.bytes(),
            written,
            "delivered bytes stay on disk until recycled"
        );
        assert_eq!((s.points(), s.backlog()), (0, 0));
        // A crash now replays the delivered records (at least once); a clean close does not.
        drop(s);
        let (mut s, rep) = Spool::open(cfg(t.path(), 1 << 30, 1 << 30)).expect("reopen");
        assert_eq!(rep.records, 50);
        assert_eq!(drain(&mut s).len(), 100);
        s.close().expect("close");
        let (mut s, rep) = Spool::open(cfg(t.path(), 1 << 30, 1 << 30)).expect("reopen");
        assert_eq!(rep.records, 0);
        // Once the newest segment holds RECYCLE_AT bytes, its last acknowledgement deletes it.
        let big = vec![b'x'; (RECYCLE_AT / 4) as usize];
        let mut seqs = Vec::new();
        for _ in 0..4 {
            seqs.push(s.append(&big, 1, true).expect("append").0);
        }
        let last = seqs.pop().expect("four");
        assert!(!s.ack_would_delete(seqs[0]..last), "one record is left");
        s.ack_range(seqs[0]..last).expect("ack");
        assert!(s.ack_would_delete(last..last + 1));
        assert!(
            s.ack_would_delete(last..last + 5),
            "unknown seqs count for nothing"
        );
        s.ack(last).expect("ack");
        assert!(seg_files(t.path()).is_empty(), "{:?}", seg_files(t.path()));
        assert_eq!(s.bytes(), 0);
        // The next batch starts a new segment named after its seq.
        let (seq, _) = s.append(&batch(1), 2, false).expect("append");
        assert_eq!(seg_files(t.path()), vec![format!("{seq:020}.seg")]);
    }

    #[test]
    fn a_claimed_record_dropped_for_room_counts_when_released() {
        let t = tempfile::tempdir().expect("tmp");
        let rec = (HEADER + batch(0).len()) as u64;
        // Segments of 2 records, room for 2 segments.
        let (mut s, _) = Spool::open(cfg(t.path(), rec * 4, rec * 2)).expect("open");
        let mut dropped = 0;
        for i in 0..2 {
            dropped += s.append(&batch(i), 2, true).expect("append").1;
        }
        for i in 2..5 {
            dropped += s.append(&batch(i), 2, false).expect("append").1;
        }
        assert_eq!(
            dropped, 0,
            "the claimed records are the writer's to deliver"
        );
        assert_eq!(
            s.release(0..2),
            4,
            "given back after they were dropped: lost, counted"
        );
        assert_eq!(s.release(0..2), 0, "counted once");
        // A claimed record that is acknowledged after the drop was delivered: nothing to count.
        let (seq, _) = s.append(&batch(5), 2, true).expect("append");
        for i in 6..9 {
            s.append(&batch(i), 2, false).expect("append");
        }
        s.ack(seq).expect("ack");
        assert_eq!(s.release(seq..seq + 1), 0);
    }

    #[test]
    fn ack_range_acknowledges_everything_despite_a_failed_delete() {
        let t = tempfile::tempdir().expect("tmp");
        let rec = (HEADER + batch(0).len()) as u64;
        let (mut s, _) = Spool::open(cfg(t.path(), rec * 8, rec * 2)).expect("open");
        for i in 0..3 {
            s.append(&batch(i), 2, true).expect("append");
        }
        // The first segment's file vanishes: deleting it fails.
        fs::remove_file(seg_path(t.path(), 0)).expect("rm");
        assert!(s.ack_range(0..3).is_err());
        assert_eq!(
            (s.points(), s.records()),
            (0, 0),
            "the rest was acknowledged too"
        );
    }

    #[test]
    fn full_spool_drops_oldest_segments_and_counts() {
        let t = tempfile::tempdir().expect("tmp");
        let rec = (HEADER + batch(0).len()) as u64;
        // Segments of 2 records, room for 3 segments.
        let (mut s, _) = Spool::open(cfg(t.path(), rec * 6, rec * 2)).expect("open");
        let mut dropped = 0;
        for i in 0..10 {
            dropped += s.append(&batch(i), 2, false).expect("append").1;
        }
        assert!(s.bytes() <= rec * 6);
        assert_eq!(dropped, 8, "two segments of two records of two points");
        let lines = drain(&mut s);
        assert_eq!(lines.len(), 12);
        assert_eq!(lines[0], "m v=4i 4\n", "the oldest went first");
    }

    #[test]
    fn torn_tail_is_cut_and_corrupt_record_skipped() {
        let t = tempfile::tempdir().expect("tmp");
        let (mut s, _) = Spool::open(cfg(t.path(), 1 << 20, 1 << 20)).expect("open");
        for i in 0..4 {
            s.append(&batch(i), 2, false).expect("append");
        }
        drop(s);
        let seg = seg_path(t.path(), 0);
        let mut bytes = fs::read(&seg).expect("read");
        let rec = HEADER + batch(0).len();
        // Flip a payload byte of record 1, and tear record 3 in half.
        bytes[rec + HEADER + 2] ^= 0x55;
        bytes.truncate(rec * 3 + rec / 2);
        fs::write(&seg, &bytes).expect("write");
        let (mut s, rep) = Spool::open(cfg(t.path(), 1 << 20, 1 << 20)).expect("reopen");
        assert_eq!(rep.records, 3);
        assert_eq!(rep.truncated_bytes, (rec / 2) as u64);
        let b = s.next_backlog().expect("read");
        assert_eq!(b.record.map(|r| r.seq), Some(0));
        s.ack(0).expect("ack");
        let b = s.next_backlog().expect("read");
        assert_eq!(b.corrupt_points, 2, "record 1 fails its checksum");
        assert_eq!(
            b.record.map(|r| r.lines),
            Some(vec!["m v=2i 2\n".to_owned(), "m w=2i 2\n".to_owned()])
        );
        // Appending after the cut continues cleanly.
        s.append(&batch(7), 2, false).expect("append");
        s.ack(2).expect("ack");
        let lines = drain(&mut s);
        assert_eq!(
            lines,
            vec!["m v=7i 7\n".to_owned(), "m w=7i 7\n".to_owned()]
        );
    }
}
