//! State files and directories that only the gateway (and its group) may read: the output
//! spool holds measurements, the outbox names people and phone numbers.
//!
//! Invariants: directories the gateway creates are `0750` and files `0640` at most, whatever
//! the process umask (a stricter umask makes them stricter). A file of the gateway's found
//! looser (created by an older version) is tightened when opened; an existing directory is
//! left as it is (it may be shared, such as `/tmp`). Non-Unix systems get the platform's
//! defaults.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Mode of directories the gateway creates.
pub const DIR_MODE: u32 = 0o750;
/// Mode of files the gateway creates.
pub const FILE_MODE: u32 = 0o640;

/// `create_dir_all` with [`DIR_MODE`] for every directory it creates.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Options that create files with [`FILE_MODE`] (before the umask); combine with
/// `.append(true)`, `.write(true)`, … as needed, then open with [`open`].
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o
}

/// Opens `path` with `opts` (from [`options`]) and tightens an existing looser file.
pub fn open(opts: &OpenOptions, path: &Path) -> io::Result<File> {
    let f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata()?.permissions().mode() & 0o7777;
        if mode & !FILE_MODE != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(mode & FILE_MODE))?;
        }
    }
    Ok(f)
}

/// A new file (truncated if it exists) with [`FILE_MODE`], like `File::create`.
pub fn create(path: &Path) -> io::Result<File> {
    open(options().write(true).create(true).truncate(true), path)
}
