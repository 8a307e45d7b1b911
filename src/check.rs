//! Configuration checks: one finding type ([`Problem`]) and one collector ([`Problems`]) that
//! every component's checks write to, each finding with the path of the field it concerns.

use std::fmt;

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// Usable, but probably not what the site wants.
    Warning,
}

/// One finding, with the path of the field it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// For example `devices[2].registers[5].address`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}: {}", self.path, self.message)
    }
}

/// Collects every problem of a configuration with its path; shared by the config checks of
/// every module.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// An error at `path`.
    pub fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push(Problem {
            severity: Severity::Error,
            path: path.into(),
            message: msg.into(),
        });
    }
    /// A warning at `path`.
    pub fn warn(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push(Problem {
            severity: Severity::Warning,
            path: path.into(),
            message: msg.into(),
        });
    }
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|p| p.severity == Severity::Error)
    }
}
