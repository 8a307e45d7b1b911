//! Time series out: line protocol ([`line`]) and one writer task per output ([`writer`]).

pub mod line;
pub mod writer;
