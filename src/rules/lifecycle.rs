//! The ISA-18.2 alarm lifecycle as a pure state machine: [`Life::step`] takes one input (the
//! process condition changed, a person acted, the site mode changed, time passed) and returns the
//! transitions it caused. No I/O, no clock: time is an input.
//!
//! Invariants:
//! - The process condition (`cond`) is tracked in every state, including shelved, suppressed and
//!   out of service, so that leaving those states shows the truth at once (an alarm whose
//!   condition is still true becomes active-unacknowledged again).
//! - A latching alarm that activated stays `latched` after its condition returns, until a person
//!   resets it; reset is refused while the condition is still true.
//! - Acknowledge and reset are different actions; reset also acknowledges.
//! - A refused action changes nothing and says why.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::model::{AlarmState, Transition};

/// Who shelved an alarm and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shelf {
    /// The person.
    pub by: String,
    /// The shelf expires by itself at this time.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, format = DateTime)]
    pub until: SystemTime,
    /// Why.
    pub comment: String,
}

/// Who took an alarm out of service, why and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutOfService {
    /// The person.
    pub by: String,
    /// Why (regulators' schemas carry this field).
    pub reason: String,
    /// When.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, format = DateTime)]
    pub since: SystemTime,
}

/// The lifecycle state of one alarm. Serialised into the journal as is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Life {
    /// The process condition after deadband and delays.
    pub cond: bool,
    /// An activation (or the return of one) awaits acknowledgement.
    pub unacked: bool,
    /// A latching alarm activated and has not been reset yet.
    pub latched: bool,
    /// Shelved by a person (boxed: most alarms never are, and every alarm has a `Life`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelf: Option<Box<Shelf>>,
    /// Out of service (boxed, like the shelf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oos: Option<Box<OutOfService>>,
    /// Suppressed by the site mode.
    #[serde(default)]
    pub suppressed: bool,
    /// Suppressed by design as a consequence of this alarm (a device or source communication
    /// alarm): still recorded, never annunciated, nothing to acknowledge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consequential: Option<String>,
}

/// Something that may change an alarm's lifecycle.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The process condition (after delays) is now this.
    Condition(bool),
    /// Acknowledge.
    Ack,
    /// Reset a latched alarm.
    Reset,
    /// Shelve until the given time.
    Shelve {
        /// Expiry.
        until: SystemTime,
    },
    /// End the shelf now.
    Unshelve,
    /// Take out of service.
    OutOfService {
        /// Why.
        reason: String,
    },
    /// Return to service.
    Return,
    /// The site mode suppresses (true) or releases (false) this alarm.
    Suppress(bool),
    /// The alarm becomes a consequence of another one (`Some(alarm)`: suppressed by design), or
    /// no longer is (`None`).
    Consequence(Option<String>),
    /// Time passed (shelves expire).
    Tick,
}

/// Why an action was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Acknowledge with nothing unacknowledged.
    #[error("nothing to acknowledge")]
    NothingToAck,
    /// Reset of an alarm that is not latched.
    #[error("the alarm is not latched: nothing to reset")]
    NotLatched,
    /// Reset while the condition is still true.
    #[error("the condition is still active: it cannot be reset until it returns")]
    StillActive,
    /// Unshelve of an alarm that is not shelved.
    #[error("the alarm is not shelved")]
    NotShelved,
    /// Return of an alarm that is in service.
    #[error("the alarm is in service")]
    InService,
    /// Shelve or out-of-service of an alarm out of service.
    #[error("the alarm is out of service")]
    IsOutOfService,
    /// A shelf that ends in the past.
    #[error("the shelf must end in the future")]
    ShelfInPast,
}

/// How a lifecycle input was applied: by whom, when, with what comment.
#[derive(Clone, Debug)]
pub struct Ctx<'a> {
    /// Whether the alarm latches (gas alarms by default).
    pub latching: bool,
    /// Now (for shelf expiry and out-of-service time).
    pub now: SystemTime,
    /// Person (or `system`).
    pub by: &'a str,
    /// Comment.
    pub comment: &'a str,
}

impl Life {
    /// The alarm's ISA-18.2 state. Out of service hides shelved, which hides suppressed.
    pub fn state(&self) -> AlarmState {
        if self.oos.is_some() {
            AlarmState::OutOfService
        } else if self.shelf.is_some() {
            AlarmState::Shelved
        } else if self.suppressed || self.consequential.is_some() {
            AlarmState::Suppressed
        } else if self.cond && self.unacked {
            AlarmState::ActiveUnacknowledged
        } else if self.cond {
            AlarmState::ActiveAcknowledged
        } else if self.latched {
            AlarmState::Latched
        } else if self.unacked {
            AlarmState::ReturnedUnacknowledged
        } else {
            AlarmState::Normal
        }
    }

    /// Whether the alarm is hidden from people (shelved, suppressed or out of service): its
    /// transitions are journaled and written to the time series, but not annunciated.
    pub fn hidden(&self) -> bool {
        self.oos.is_some()
            || self.shelf.is_some()
            || self.suppressed
            || self.consequential.is_some()
    }

    /// Whether the alarm is in a state other than normal (listed as "active").
    pub fn is_normal(&self) -> bool {
        self.state() == AlarmState::Normal
    }

    /// Whether the condition becoming `cond` is a repeat rather than a new activation: the
    /// condition comes back while the latched alarm's activation is still unanswered (not
    /// acknowledged, not reset). ISA-18.2: such a re-crossing is not a new alarm; it is recorded
    /// but not announced again.
    pub fn is_repeat(&self, cond: bool) -> bool {
        cond && !self.cond && self.latched && self.unacked && !self.hidden()
    }

    fn reveal(&mut self) {
        if !self.hidden() && self.cond {
            self.unacked = true;
        }
    }

    /// Applies one input. Returns the transitions it caused (none when nothing changed) or why
    /// an action by a person was refused.
    pub fn step(&mut self, input: &Input, ctx: &Ctx<'_>) -> Result<Option<Transition>, Refused> {
        match input {
            Input::Condition(c) => {
                if *c == self.cond {
                    return Ok(None);
                }
                self.cond = *c;
                if *c {
                    if !self.hidden() {
                        self.unacked = true;
                        if ctx.latching {
                            self.latched = true;
                        }
                    }
                    Ok(Some(Transition::Raised))
                } else {
                    Ok(Some(Transition::Cleared))
                }
            }
            Input::Ack => {
                if !self.unacked || self.hidden() {
                    return Err(Refused::NothingToAck);
                }
                self.unacked = false;
                Ok(Some(Transition::Acknowledged))
            }
            Input::Reset => {
                if self.oos.is_some() {
                    return Err(Refused::IsOutOfService);
                }
                if !self.latched {
                    return Err(Refused::NotLatched);
                }
                if self.cond {
                    return Err(Refused::StillActive);
                }
                self.latched = false;
                self.unacked = false;
                Ok(Some(Transition::Reset))
            }
            Input::Shelve { until } => {
                if self.oos.is_some() {
                    return Err(Refused::IsOutOfService);
                }
                if *until <= ctx.now {
                    return Err(Refused::ShelfInPast);
                }
                self.shelf = Some(Box::new(Shelf {
                    by: ctx.by.to_owned(),
                    until: *until,
                    comment: ctx.comment.to_owned(),
                }));
                Ok(Some(Transition::Shelved))
            }
            Input::Unshelve => {
                if self.shelf.take().is_none() {
                    return Err(Refused::NotShelved);
                }
                self.reveal();
                Ok(Some(Transition::Unshelved))
            }
            Input::OutOfService { reason } => {
                if self.oos.is_some() {
                    return Err(Refused::IsOutOfService);
                }
                self.oos = Some(Box::new(OutOfService {
                    by: ctx.by.to_owned(),
                    reason: reason.clone(),
                    since: ctx.now,
                }));
                // Out of service ends a shelf: the two are not stacked.
                self.shelf = None;
                Ok(Some(Transition::OutOfService))
            }
            Input::Return => {
                if self.oos.take().is_none() {
                    return Err(Refused::InService);
                }
                // Back in service: what the process says now is what counts.
                self.unacked = false;
                self.reveal();
                if self.cond && ctx.latching {
                    self.latched = true;
                }
                Ok(Some(Transition::ReturnedToService))
            }
            Input::Suppress(on) => {
                if *on == self.suppressed {
                    return Ok(None);
                }
                self.suppressed = *on;
                if *on {
                    Ok(Some(Transition::Suppressed))
                } else {
                    self.reveal();
                    if self.cond && ctx.latching && !self.hidden() {
                        self.latched = true;
                    }
                    Ok(Some(Transition::Unsuppressed))
                }
            }
            Input::Consequence(cause) => {
                if *cause == self.consequential {
                    return Ok(None);
                }
                let was = self
                    .consequential
                    .replace(cause.clone().unwrap_or_default());
                match (was, cause) {
                    (None, Some(_)) => Ok(Some(Transition::Suppressed)),
                    (Some(_), Some(_)) => Ok(None),
                    (_, None) => {
                        self.consequential = None;
                        self.reveal();
                        Ok(Some(Transition::Unsuppressed))
                    }
                }
            }
            Input::Tick => match &self.shelf {
                Some(s) if s.until <= ctx.now => {
                    self.shelf = None;
                    self.reveal();
                    if self.cond && ctx.latching && !self.hidden() {
                        self.latched = true;
                    }
                    Ok(Some(Transition::Unshelved))
                }
                _ => Ok(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use AlarmState::{
        ActiveAcknowledged, ActiveUnacknowledged, Latched, Normal, ReturnedUnacknowledged, Shelved,
        Suppressed,
    };
    use Input::{Ack, Condition, Reset, Return, Shelve, Suppress, Tick, Unshelve};

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    /// One row: input at time, expected result (transition or refusal), expected state after.
    type Row = (u64, Input, Result<Option<Transition>, Refused>, AlarmState);

    fn run(latching: bool, rows: Vec<Row>) {
        let mut life = Life::default();
        assert_eq!(life.state(), Normal);
        for (i, (at, input, want, state)) in rows.into_iter().enumerate() {
            let ctx = Ctx {
                latching,
                now: t(at),
                by: "op",
                comment: "",
            };
            let got = life.step(&input, &ctx);
            assert_eq!(got, want, "row {i}: {input:?}");
            assert_eq!(life.state(), state, "row {i}: {input:?} -> {life:?}");
        }
    }

    #[test]
    fn non_latching_paths() {
        run(
            false,
            vec![
                (0, Condition(false), Ok(None), Normal),
                (0, Ack, Err(Refused::NothingToAck), Normal),
                (
                    1,
                    Condition(true),
                    Ok(Some(Transition::Raised)),
                    ActiveUnacknowledged,
                ),
                (1, Condition(true), Ok(None), ActiveUnacknowledged),
                (
                    2,
                    Ack,
                    Ok(Some(Transition::Acknowledged)),
                    ActiveAcknowledged,
                ),
                (2, Ack, Err(Refused::NothingToAck), ActiveAcknowledged),
                (3, Condition(false), Ok(Some(Transition::Cleared)), Normal),
                // Returns before anyone acknowledges: returned-unacknowledged until acked.
                (
                    4,
                    Condition(true),
                    Ok(Some(Transition::Raised)),
                    ActiveUnacknowledged,
                ),
                (
                    5,
                    Condition(false),
                    Ok(Some(Transition::Cleared)),
                    ReturnedUnacknowledged,
                ),
                (5, Reset, Err(Refused::NotLatched), ReturnedUnacknowledged),
                (6, Ack, Ok(Some(Transition::Acknowledged)), Normal),
            ],
        );
    }

    #[test]
    fn latching_needs_reset_after_return() {
        run(
            true,
            vec![
                (
                    1,
                    Condition(true),
                    Ok(Some(Transition::Raised)),
                    ActiveUnacknowledged,
                ),
                (2, Reset, Err(Refused::StillActive), ActiveUnacknowledged),
                (
                    3,
                    Ack,
                    Ok(Some(Transition::Acknowledged)),
                    ActiveAcknowledged,
                ),
                (4, Condition(false), Ok(Some(Transition::Cleared)), Latched),
                // Acknowledging does not end a latch; a reset does.
                (5, Ack, Err(Refused::NothingToAck), Latched),
                (
                    6,
                    Condition(true),
                    Ok(Some(Transition::Raised)),
                    ActiveUnacknowledged,
                ),
                (7, Condition(false), Ok(Some(Transition::Cleared)), Latched),
                // Reset also acknowledges.
                (8, Reset, Ok(Some(Transition::Reset)), Normal),
                (9, Reset, Err(Refused::NotLatched), Normal),
            ],
        );
    }

    #[test]
    fn re_crossing_while_latched_and_unanswered_is_a_repeat() {
        let ctx = Ctx {
            latching: true,
            now: t(0),
            by: "system",
            comment: "",
        };
        let mut life = Life::default();
        // (condition, a repeat?, state after)
        let rows = [
            (true, false, ActiveUnacknowledged),
            (false, false, Latched),
            (true, true, ActiveUnacknowledged),
            (false, false, Latched),
            (true, true, ActiveUnacknowledged),
        ];
        for (i, (cond, repeat, state)) in rows.into_iter().enumerate() {
            assert_eq!(life.is_repeat(cond), repeat, "row {i}");
            life.step(&Condition(cond), &ctx).expect("condition");
            assert_eq!(life.state(), state, "row {i}");
        }
        // Acknowledged: the next crossing is a new activation again.
        life.step(&Ack, &ctx).expect("ack");
        life.step(&Condition(false), &ctx).expect("condition");
        assert!(!life.is_repeat(true), "answered: a new activation");
        // Non-latching alarms have no repeats: each activation is one (chatter policy applies).
        let mut plain = Life::default();
        let ctx = Ctx {
            latching: false,
            ..ctx
        };
        plain.step(&Condition(true), &ctx).expect("condition");
        plain.step(&Condition(false), &ctx).expect("condition");
        assert!(!plain.is_repeat(true));
    }

    #[test]
    fn shelving_expires_by_itself_and_reveals_the_truth() {
        run(
            true,
            vec![
                (0, Shelve { until: t(0) }, Err(Refused::ShelfInPast), Normal),
                (
                    0,
                    Shelve { until: t(60) },
                    Ok(Some(Transition::Shelved)),
                    Shelved,
                ),
                // The condition is tracked while shelved, but not annunciated or latched.
                (10, Condition(true), Ok(Some(Transition::Raised)), Shelved),
                (20, Ack, Err(Refused::NothingToAck), Shelved),
                (59, Tick, Ok(None), Shelved),
                (
                    60,
                    Tick,
                    Ok(Some(Transition::Unshelved)),
                    ActiveUnacknowledged,
                ),
                (61, Condition(false), Ok(Some(Transition::Cleared)), Latched),
                (
                    62,
                    Shelve { until: t(100) },
                    Ok(Some(Transition::Shelved)),
                    Shelved,
                ),
                (63, Unshelve, Ok(Some(Transition::Unshelved)), Latched),
                (64, Unshelve, Err(Refused::NotShelved), Latched),
                (65, Reset, Ok(Some(Transition::Reset)), Normal),
            ],
        );
    }

    #[test]
    fn out_of_service_and_return() {
        run(
            false,
            vec![
                (0, Return, Err(Refused::InService), Normal),
                (
                    1,
                    Shelve { until: t(100) },
                    Ok(Some(Transition::Shelved)),
                    Shelved,
                ),
                (
                    2,
                    Input::OutOfService {
                        reason: "detector replaced".into(),
                    },
                    Ok(Some(Transition::OutOfService)),
                    AlarmState::OutOfService,
                ),
                (
                    3,
                    Shelve { until: t(100) },
                    Err(Refused::IsOutOfService),
                    AlarmState::OutOfService,
                ),
                (
                    3,
                    Input::OutOfService {
                        reason: "again".into(),
                    },
                    Err(Refused::IsOutOfService),
                    AlarmState::OutOfService,
                ),
                (
                    4,
                    Condition(true),
                    Ok(Some(Transition::Raised)),
                    AlarmState::OutOfService,
                ),
                (
                    5,
                    Return,
                    Ok(Some(Transition::ReturnedToService)),
                    ActiveUnacknowledged,
                ),
                (
                    6,
                    Condition(false),
                    Ok(Some(Transition::Cleared)),
                    ReturnedUnacknowledged,
                ),
                (
                    7,
                    Input::OutOfService {
                        reason: "calibration".into(),
                    },
                    Ok(Some(Transition::OutOfService)),
                    AlarmState::OutOfService,
                ),
                // Returning with the condition false leaves nothing to acknowledge.
                (8, Return, Ok(Some(Transition::ReturnedToService)), Normal),
            ],
        );
    }

    #[test]
    fn suppression_by_site_mode() {
        run(
            true,
            vec![
                (
                    0,
                    Suppress(true),
                    Ok(Some(Transition::Suppressed)),
                    Suppressed,
                ),
                (0, Suppress(true), Ok(None), Suppressed),
                (1, Condition(true), Ok(Some(Transition::Raised)), Suppressed),
                (
                    2,
                    Condition(false),
                    Ok(Some(Transition::Cleared)),
                    Suppressed,
                ),
                (
                    3,
                    Suppress(false),
                    Ok(Some(Transition::Unsuppressed)),
                    Normal,
                ),
                (
                    4,
                    Suppress(true),
                    Ok(Some(Transition::Suppressed)),
                    Suppressed,
                ),
                (5, Condition(true), Ok(Some(Transition::Raised)), Suppressed),
                (
                    6,
                    Suppress(false),
                    Ok(Some(Transition::Unsuppressed)),
                    ActiveUnacknowledged,
                ),
                (7, Condition(false), Ok(Some(Transition::Cleared)), Latched),
            ],
        );
    }

    #[test]
    fn consequences_are_suppressed_by_design() {
        let cause = || Input::Consequence(Some("device.gd1:comm".into()));
        run(
            false,
            vec![
                (0, cause(), Ok(Some(Transition::Suppressed)), Suppressed),
                (0, cause(), Ok(None), Suppressed),
                // Raised as a consequence: recorded, nothing to acknowledge.
                (1, Condition(true), Ok(Some(Transition::Raised)), Suppressed),
                (2, Ack, Err(Refused::NothingToAck), Suppressed),
                // The site mode does not release it.
                (
                    3,
                    Suppress(true),
                    Ok(Some(Transition::Suppressed)),
                    Suppressed,
                ),
                (
                    4,
                    Suppress(false),
                    Ok(Some(Transition::Unsuppressed)),
                    Suppressed,
                ),
                // Released while still true: its own alarm now, to be acknowledged.
                (
                    5,
                    Input::Consequence(None),
                    Ok(Some(Transition::Unsuppressed)),
                    ActiveUnacknowledged,
                ),
                (6, Input::Consequence(None), Ok(None), ActiveUnacknowledged),
            ],
        );
    }

    #[test]
    fn out_of_service_records_who_and_when() {
        let mut life = Life::default();
        let ctx = Ctx {
            latching: false,
            now: t(5),
            by: "li.wei",
            comment: "",
        };
        life.step(
            &Input::OutOfService {
                reason: "sensor head replaced".into(),
            },
            &ctx,
        )
        .expect("accepted");
        let oos = life.oos.clone().expect("out of service");
        assert_eq!(
            (oos.by.as_str(), oos.reason.as_str(), oos.since),
            ("li.wei", "sensor head replaced", t(5))
        );
    }
}
