//! Logging to the systemd journal with levels kept.
//!
//! Under systemd, stderr is a stream to journald, which stores every line at the unit's default
//! priority (info) unless the line starts with a syslog priority prefix `<N>` (sd-daemon(3)).
//! systemd sets `JOURNAL_STREAM=DEV:INODE` for that stream; when it names the process's own
//! stderr (a redirected or inherited variable names another file), every log event is written
//! with the prefix of its level, so `journalctl -p warning` shows warnings and errors.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The syslog priority of a tracing level: error 3, warning 4, info 6, debug and trace 7.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`, `DEV:INODE` in decimal) names the
/// file with device `dev` and inode `ino`.
pub fn names(journal_stream: &str, dev: u64, ino: u64) -> bool {
    journal_stream
        .split_once(':')
        .and_then(|(d, i)| Some((d.trim().parse::<u64>().ok()?, i.trim().parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// Whether this process's stderr is the journal stream systemd announced.
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    if std::io::stderr().is_terminal() {
        return false;
    }
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => names(&value, m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// Wraps an event formatter: each event starts with `<N>`, its syslog priority.
#[derive(Debug, Clone)]
pub struct PriorityPrefix<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for PriorityPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_event_starts_with_its_syslog_priority() {
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .without_time()
            .with_writer(move || w.clone())
            .map_event_format(PriorityPrefix)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
            tracing::debug!("d");
        });
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf-8");
        let prefixes: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>"], "{text}");
        assert!(
            text.lines().next().is_some_and(|l| l.ends_with("e")),
            "{text}"
        );
    }

    #[test]
    fn journal_stream_must_name_this_file() {
        assert!(names("64769:1234", 64769, 1234));
        assert!(!names("64769:1235", 64769, 1234));
        assert!(!names("garbage", 64769, 1234));
        assert!(!names("", 0, 0));
    }
}
