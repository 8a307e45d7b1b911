//! Time series out: line protocol ([`line`]), one writer task per output ([`writer`]) with an
//! optional disk spool for store-and-forward ([`spool`]), and the output settings they share
//! ([`options`]).

pub mod line;
pub mod options;
pub mod spool;
pub mod writer;
