//! Time series out: line protocol ([`line`]), the engine's hand-off to the outputs with
//! per-output reduction and downsampling ([`fanout`], [`reduce`]), one writer task per output
//! ([`writer`]) with an optional disk spool for store-and-forward ([`spool`]), and the output
//! settings they share ([`options`]).

pub mod fanout;
pub mod internal;
pub mod line;
pub mod options;
pub mod reduce;
pub mod spool;
pub mod writer;

pub use fanout::Fanout;
