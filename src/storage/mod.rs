//! Durable local files shared by several components.
//!
//! - [`crc_log`]: an append-only log of `{crc32:08x} {json}` lines, used by the alarm journal
//!   and the alert outbox.

pub mod crc_log;
