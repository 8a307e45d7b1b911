//! An append-only log of CRC-checked JSON lines: `{crc32:08x} {json}\n`, one record per line.
//! The alarm journal (`rules::journal`) and the alert outbox (`alerts::outbox`) both use it.
//!
//! Invariants:
//! - **No partial line survives a failed append.** An append is one `write_all` (and, when
//!   asked, one `sync_data`); if either fails (ENOSPC, EIO), the file is cut back to its last
//!   good length, so the next record never follows half a line (which would make replay skip
//!   that next, possibly fsync'd, record as damaged).
//! - **Replay never stops at damage.** A line whose CRC or JSON does not check (a write torn by
//!   `kill -9` or power loss, a damaged disk) is reported as damaged and skipped.
//! - **Private files.** Files are created `0600` and the directories this module creates `0700`
//!   whatever the umask (the outbox holds names and phone numbers); an existing file is
//!   tightened to `0600` when opened.
//! - **Atomic rewrite.** [`CrcLog::replace`] writes a temporary file, syncs it, renames it over
//!   the log and syncs the directory: a crash leaves the old or the new contents, never a mix.
//! - Blocking I/O: callers run these functions off the async runtime (`spawn_blocking` or a
//!   blocking thread).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Mode of the files this module creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the directories this module creates.
pub const DIR_MODE: u32 = 0o700;

/// Encodes one record as a line (appended to `out`).
pub fn encode<T: Serialize>(r: &T, out: &mut Vec<u8>) {
    // Serialising the records used here cannot fail (no maps with non-string keys, no custom
    // errors).
    let json = serde_json::to_vec(r).unwrap_or_default();
    let crc = crc32fast::hash(&json);
    out.extend_from_slice(format!("{crc:08x} ").as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
}

/// Decodes one line (without its newline); `None` when the CRC or the JSON does not check.
pub fn decode<T: DeserializeOwned>(line: &str) -> Option<T> {
    let (crc, json) = line.split_once(' ')?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    if crc32fast::hash(json.as_bytes()) != crc {
        return None;
    }
    serde_json::from_str(json).ok()
}

/// Creates `dir` and its missing parents with mode `0700` (an existing directory is left as it
/// is: it may be the operator's).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Reads every line of `path` in order and calls `f` with each record, or `None` for a damaged
/// line. Empty lines are ignored.
pub fn replay<T: DeserializeOwned>(path: &Path, mut f: impl FnMut(Option<T>)) -> io::Result<()> {
    let r = BufReader::new(File::open(path)?);
    for line in r.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        f(std::str::from_utf8(&line).ok().and_then(decode));
    }
    Ok(())
}

/// An open log, appending at its end.
#[derive(Debug)]
pub struct CrcLog {
    path: PathBuf,
    file: File,
    /// Length of the file up to its last good record.
    len: u64,
}

fn private(o: &mut OpenOptions) -> &mut OpenOptions {
    o.mode(FILE_MODE)
}

impl CrcLog {
    /// Opens `path` for appending, creating it (`0600`) if missing.
    pub fn open(path: &Path) -> io::Result<CrcLog> {
        let file = private(OpenOptions::new().create(true).append(true)).open(path)?;
        let meta = file.metadata()?;
        if meta.permissions().mode() & 0o777 != FILE_MODE {
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        }
        Ok(CrcLog {
            path: path.to_owned(),
            file,
            len: meta.len(),
        })
    }

    /// Creates a new, empty log at `path` (an error if it exists) and syncs the directory.
    pub fn create_new(path: &Path) -> io::Result<CrcLog> {
        let file = private(OpenOptions::new().create_new(true).append(true)).open(path)?;
        sync_parent(path)?;
        Ok(CrcLog {
            path: path.to_owned(),
            file,
            len: 0,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes up to the last good record.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A second handle on the file: `sync_data` on it makes everything appended so far durable,
    /// while this log goes on being appended to (the outbox syncs a notification's records
    /// while its receiver already attempts it).
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Appends encoded lines (see [`encode`]) and, with `sync`, syncs them to disk. On error
    /// the file is cut back to its last good length.
    pub fn append(&mut self, lines: &[u8], sync: bool) -> io::Result<()> {
        let res = self
            .file
            .write_all(lines)
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match res {
            Ok(()) => {
                self.len += lines.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut the partial line off so nothing ever follows it. If even that fails, the
                // next replay skips the damage as a torn line.
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Encodes `records` and appends them (see [`CrcLog::append`]).
    pub fn append_records<T: Serialize>(&mut self, records: &[T], sync: bool) -> io::Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 512);
        for r in records {
            encode(r, &mut buf);
        }
        self.append(&buf, sync)
    }

    /// Replaces the whole log with `contents` atomically (temporary file, sync, rename, sync of
    /// the directory). On error the old file stays in use.
    pub fn replace(&mut self, contents: &[u8]) -> io::Result<()> {
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".tmp");
        let tmp = self.path.with_file_name(tmp_name);
        let res = (|| -> io::Result<File> {
            let mut f =
                private(OpenOptions::new().create(true).write(true).truncate(true)).open(&tmp)?;
            f.write_all(contents)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &self.path)?;
            sync_parent(&self.path)?;
            private(OpenOptions::new().append(true)).open(&self.path)
        })();
        match res {
            Ok(f) => {
                self.file = f;
                self.len = contents.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A small tmpfs for real ENOSPC failures in unit tests.

    use std::path::Path;
    use std::process::Command;

    /// A tmpfs mounted on a temporary directory; unmounted when dropped.
    pub struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        /// Mounts a tmpfs of `kib` KiB. Needs root (CI runs as root): panics saying so.
        pub fn mount(kib: u64) -> Tmpfs {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let euid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("?");
            assert_eq!(
                euid, "0",
                "this test needs root to mount a small tmpfs and fill it (a real ENOSPC); CI runs as root"
            );
            let dir = tempfile::tempdir().expect("tempdir");
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={kib}k,mode=0755"))
                .arg("tmpfs")
                .arg(dir.path())
                .output()
                .expect("cannot run mount");
            assert!(
                out.status.success(),
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Tmpfs { dir }
        }

        /// The mount point.
        pub fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        n: u32,
        pad: String,
    }

    fn r(n: u32, pad: usize) -> R {
        R {
            n,
            pad: "x".repeat(pad),
        }
    }

    fn read(path: &Path) -> (Vec<u32>, usize) {
        let (mut good, mut bad) = (Vec::new(), 0);
        replay::<R>(path, |x| match x {
            Some(r) => good.push(r.n),
            None => bad += 1,
        })
        .expect("replay");
        (good, bad)
    }

    #[test]
    fn a_failed_append_on_a_full_disk_leaves_no_partial_line_before_the_next_record() {
        let disk = testing::Tmpfs::mount(64);
        let path = disk.path().join("log.jsonl");
        let mut log = CrcLog::open(&path).expect("open");
        log.append_records(&[r(1, 10)], true).expect("first append");
        // Larger than the whole file system: part of it is written, then ENOSPC.
        let err = log
            .append_records(&[r(2, 128 * 1024)], true)
            .expect_err("the disk is full");
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
        assert_eq!(fs::metadata(&path).expect("meta").len(), log.len());
        // The next, synced record is kept, not glued to half a line.
        log.append_records(&[r(3, 10)], true)
            .expect("space again after the cut");
        drop(log);
        assert_eq!(read(&path), (vec![1, 3], 0));
    }

    #[test]
    fn files_are_0600_and_directories_0700_under_umask_022() {
        let umask = fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Umask:").map(|u| u.trim().to_owned()));
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).expect("mkdir");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "umask {umask:?}");
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        let mut log = CrcLog::create_new(&dir.join("x.jsonl")).expect("create");
        assert_eq!(mode(&dir.join("x.jsonl")), 0o600, "umask {umask:?}");
        log.replace(b"").expect("replace");
        assert_eq!(mode(&dir.join("x.jsonl")), 0o600, "after a rewrite");
        // A file left 0644 by an older version is tightened when opened.
        let old = dir.join("old.jsonl");
        fs::write(&old, b"").expect("write");
        fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).expect("chmod");
        CrcLog::open(&old).expect("open");
        assert_eq!(mode(&old), 0o600);
    }

    #[test]
    fn replace_swaps_the_contents_and_appends_continue() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("l.jsonl");
        let mut log = CrcLog::open(&path).expect("open");
        log.append_records(&[r(1, 0), r(2, 0)], false)
            .expect("append");
        let mut buf = Vec::new();
        encode(&r(9, 0), &mut buf);
        log.replace(&buf).expect("replace");
        log.append_records(&[r(10, 0)], true).expect("append");
        assert_eq!(read(&path), (vec![9, 10], 0));
        assert_eq!(log.len(), fs::metadata(&path).expect("meta").len());
    }
}
