//! A small expression language for composite, schedule and site-mode rules.
//!
//! ```text
//! or    := and ("or" and)*
//! and   := not ("and" not)*
//! not   := "not" not | held
//! held  := cmp ("for" DURATION)?          -- true once cmp has been true for DURATION
//! cmp   := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
//! sum   := prod (("+" | "-") prod)*
//! prod  := unary (("*" | "/") unary)*
//! unary := "-" unary | atom
//! atom  := NUMBER | "true" | "false" | "(" or ")" | CHANNEL | "\"channel\""
//!        | INTEGER "of" "(" or ("," or)* ")"  -- k-out-of-n voting
//!        | count(or, ...) | within(or, DURATION) | mode(NAME) | window(NAME)
//!        | weekend() | holiday()
//! ```
//!
//! Examples: `(line.pm2.running and not dust.dc1.running) for 10s`;
//! `not dust.dc1.running and within(line.pm2.running, 10m)`;
//! `2 of (a.gd1.lel >= 25, a.gd2.lel >= 25, a.gd3.lel >= 25)`;
//! `mode(suspended) and power.pm1.power > 5`; `power.pm1.feeder / power.pm1.total * 100 > 13`.
//!
//! Channel names may contain `-`, so subtraction needs spaces (`a - b`).
//!
//! Invariants:
//! - Three-valued logic: a channel without a good reading is *unknown*, never 0 or false.
//!   `and`/`or`/`not`/voting follow Kleene's rules (`false and unknown` is false, `true or
//!   unknown` is true, otherwise unknown), comparisons and arithmetic with an unknown are
//!   unknown, division by zero is unknown. The engine holds an alarm's state while its
//!   expression is unknown, so a fault can neither raise nor clear it.
//! - Every sub-expression is evaluated every time (no short-circuit), so `for` and `within`
//!   timers always see the truth.

use std::fmt;
use std::time::{Duration, Instant};

use crate::model::SiteMode;

/// A parse error with its byte position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the expression.
    pub pos: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.pos + 1, self.message)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Num(f64),
    Chan(usize),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    Neg(Box<Node>),
    For(Box<Node>, Duration, usize),
    Within(Box<Node>, Duration, usize),
    Vote(usize, Vec<Node>),
    Count(Vec<Node>),
    Mode(SiteMode),
    Window(usize),
    Weekend,
    Holiday,
}

/// A parsed expression. Channel and window references are numbered in order of first
/// appearance; [`Expr::bind`] maps them to the engine's indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    root: Node,
    /// Channel ids referenced, in order of first appearance.
    pub channels: Vec<String>,
    /// Window names referenced.
    pub windows: Vec<String>,
    timers: usize,
    /// Whether the value depends on time (timers, calendar, mode): evaluated on every tick.
    pub timed: bool,
}

/// A value during evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Val {
    /// A number (booleans are 1.0 / 0.0).
    Num(f64),
    /// A truth value.
    Bool(bool),
    /// No good reading behind it.
    Unknown,
}

impl Val {
    /// The truth of a value: numbers are true when non-zero.
    pub fn truth(self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(b),
            Val::Num(x) => Some(x != 0.0),
            Val::Unknown => None,
        }
    }
    fn num(self) -> Option<f64> {
        match self {
            Val::Num(x) => Some(x),
            Val::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Val::Unknown => None,
        }
    }
}

/// What an expression reads while evaluating.
pub trait Env {
    /// The good value of bound channel `i`, or `None`.
    fn value(&self, i: usize) -> Option<f64>;
    /// The site mode.
    fn mode(&self) -> SiteMode;
    /// Whether bound window `i` is open now.
    fn window(&self, i: usize) -> bool;
    /// Whether today is a weekend day in the site's time zone.
    fn weekend(&self) -> bool;
    /// Whether today is on the holiday list.
    fn holiday(&self) -> bool;
}

/// Timer state of one expression instance.
#[derive(Clone, Debug, Default)]
pub struct Timers(Vec<Option<Instant>>);

impl Expr {
    /// Parses an expression.
    pub fn parse(src: &str) -> Result<Expr, ParseError> {
        let toks = lex(src)?;
        let mut p = Parser {
            toks,
            pos: 0,
            channels: Vec::new(),
            windows: Vec::new(),
            timers: 0,
            timed: false,
            src_len: src.len(),
        };
        let root = p.or()?;
        if let Some((pos, t)) = p.toks.get(p.pos) {
            return Err(ParseError {
                pos: *pos,
                message: format!("unexpected {t}"),
            });
        }
        Ok(Expr {
            root,
            channels: p.channels,
            windows: p.windows,
            timers: p.timers,
            timed: p.timed,
        })
    }

    /// Replaces channel and window numbers by the engine's indices.
    pub fn bind(&mut self, chan: &dyn Fn(&str) -> usize, window: &dyn Fn(&str) -> usize) {
        let chans: Vec<usize> = self.channels.iter().map(|c| chan(c)).collect();
        let wins: Vec<usize> = self.windows.iter().map(|w| window(w)).collect();
        fn walk(n: &mut Node, c: &[usize], w: &[usize]) {
            match n {
                Node::Chan(i) => *i = c[*i],
                Node::Window(i) => *i = w[*i],
                Node::Not(a) | Node::Neg(a) | Node::For(a, _, _) | Node::Within(a, _, _) => {
                    walk(a, c, w)
                }
                Node::Cmp(_, a, b) | Node::Arith(_, a, b) => {
                    walk(a, c, w);
                    walk(b, c, w);
                }
                Node::And(v) | Node::Or(v) | Node::Vote(_, v) | Node::Count(v) => {
                    for x in v {
                        walk(x, c, w);
                    }
                }
                Node::Num(_) | Node::Mode(_) | Node::Weekend | Node::Holiday => {}
            }
        }
        walk(&mut self.root, &chans, &wins);
    }

    /// Fresh timer state for this expression.
    pub fn timers(&self) -> Timers {
        Timers(vec![None; self.timers])
    }

    /// Evaluates at `now`.
    pub fn eval(&self, env: &dyn Env, timers: &mut Timers, now: Instant) -> Val {
        eval(&self.root, env, &mut timers.0, now)
    }
}

fn eval(n: &Node, env: &dyn Env, t: &mut [Option<Instant>], now: Instant) -> Val {
    match n {
        Node::Num(x) => Val::Num(*x),
        Node::Chan(i) => env.value(*i).map_or(Val::Unknown, Val::Num),
        Node::Not(a) => match eval(a, env, t, now).truth() {
            Some(b) => Val::Bool(!b),
            None => Val::Unknown,
        },
        Node::And(v) => {
            let (mut f, mut u) = (false, false);
            for x in v {
                match eval(x, env, t, now).truth() {
                    Some(false) => f = true,
                    None => u = true,
                    Some(true) => {}
                }
            }
            if f {
                Val::Bool(false)
            } else if u {
                Val::Unknown
            } else {
                Val::Bool(true)
            }
        }
        Node::Or(v) => {
            let (mut tr, mut u) = (false, false);
            for x in v {
                match eval(x, env, t, now).truth() {
                    Some(true) => tr = true,
                    None => u = true,
                    Some(false) => {}
                }
            }
            if tr {
                Val::Bool(true)
            } else if u {
                Val::Unknown
            } else {
                Val::Bool(false)
            }
        }
        Node::Cmp(op, a, b) => {
            let (a, b) = (eval(a, env, t, now).num(), eval(b, env, t, now).num());
            match (a, b) {
                (Some(a), Some(b)) => Val::Bool(match op {
                    Cmp::Lt => a < b,
                    Cmp::Le => a <= b,
                    Cmp::Gt => a > b,
                    Cmp::Ge => a >= b,
                    Cmp::Eq => a == b,
                    Cmp::Ne => a != b,
                }),
                _ => Val::Unknown,
            }
        }
        Node::Arith(op, a, b) => {
            let (a, b) = (eval(a, env, t, now).num(), eval(b, env, t, now).num());
            match (a, b) {
                (Some(a), Some(b)) => {
                    let r = match op {
                        Arith::Add => a + b,
                        Arith::Sub => a - b,
                        Arith::Mul => a * b,
                        Arith::Div => a / b,
                    };
                    if r.is_finite() {
                        Val::Num(r)
                    } else {
                        Val::Unknown
                    }
                }
                _ => Val::Unknown,
            }
        }
        Node::Neg(a) => eval(a, env, t, now)
            .num()
            .map_or(Val::Unknown, |x| Val::Num(-x)),
        Node::For(a, d, slot) => match eval(a, env, t, now).truth() {
            Some(true) => {
                let since = *t[*slot].get_or_insert(now);
                Val::Bool(now.saturating_duration_since(since) >= *d)
            }
            Some(false) => {
                t[*slot] = None;
                Val::Bool(false)
            }
            None => Val::Unknown,
        },
        Node::Within(a, d, slot) => {
            let v = eval(a, env, t, now).truth();
            if v == Some(true) {
                t[*slot] = Some(now);
                return Val::Bool(true);
            }
            match (t[*slot], v) {
                (Some(last), _) if now.saturating_duration_since(last) < *d => Val::Bool(true),
                (_, None) => Val::Unknown,
                _ => Val::Bool(false),
            }
        }
        Node::Vote(k, v) => {
            let (mut yes, mut unknown) = (0, 0);
            for x in v {
                match eval(x, env, t, now).truth() {
                    Some(true) => yes += 1,
                    None => unknown += 1,
                    Some(false) => {}
                }
            }
            if yes >= *k {
                Val::Bool(true)
            } else if yes + unknown < *k {
                Val::Bool(false)
            } else {
                Val::Unknown
            }
        }
        Node::Count(v) => {
            let (mut yes, mut unknown) = (0u32, false);
            for x in v {
                match eval(x, env, t, now).truth() {
                    Some(true) => yes += 1,
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            if unknown {
                Val::Unknown
            } else {
                Val::Num(f64::from(yes))
            }
        }
        Node::Mode(m) => Val::Bool(env.mode() == *m),
        Node::Window(i) => Val::Bool(env.window(*i)),
        Node::Weekend => Val::Bool(env.weekend()),
        Node::Holiday => Val::Bool(env.holiday()),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Dur(Duration),
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    Op(&'static str),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Num(x) => write!(f, "number {x}"),
            Tok::Dur(d) => write!(f, "duration {}", humantime::format_duration(*d)),
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Str(s) => write!(f, "\"{s}\""),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Op(o) => write!(f, "`{o}`"),
        }
    }
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'+' | b'-' | b'*' | b'/' => {
                i += 1;
                Tok::Op(match c {
                    b'+' => "+",
                    b'-' => "-",
                    b'*' => "*",
                    _ => "/",
                })
            }
            b'<' | b'>' | b'=' | b'!' => {
                let two = b.get(i + 1) == Some(&b'=');
                i += if two { 2 } else { 1 };
                Tok::Op(match (c, two) {
                    (b'<', false) => "<",
                    (b'<', true) => "<=",
                    (b'>', false) => ">",
                    (b'>', true) => ">=",
                    (b'=', true) => "==",
                    (b'!', true) => "!=",
                    _ => {
                        return Err(ParseError {
                            pos: start,
                            message: "expected `==` or `!=`".into(),
                        });
                    }
                })
            }
            b'"' => {
                let end = src[i + 1..].find('"').ok_or_else(|| ParseError {
                    pos: start,
                    message: "unterminated string".into(),
                })?;
                i = i + 1 + end + 1;
                Tok::Str(src[start + 1..i - 1].to_owned())
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                let text = &src[start..i];
                if let Ok(x) = text.parse::<f64>() {
                    Tok::Num(x)
                } else if let Ok(d) = humantime::parse_duration(text) {
                    Tok::Dur(d)
                } else {
                    return Err(ParseError {
                        pos: start,
                        message: format!("`{text}` is neither a number nor a duration"),
                    });
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'.' | b'-'))
                {
                    i += 1;
                }
                Tok::Ident(src[start..i].to_owned())
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(ParseError {
                    pos: start,
                    message: format!("unexpected character `{ch}`"),
                });
            }
        };
        out.push((start, tok));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    channels: Vec<String>,
    windows: Vec<String>,
    timers: usize,
    timed: bool,
    src_len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.src_len, |(p, _)| *p)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            pos: self.at(),
            message: message.into(),
        })
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == kw)
    }
    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &Tok) -> Result<(), ParseError> {
        if self.eat(t) {
            Ok(())
        } else {
            match self.peek() {
                Some(x) => self.err(format!("expected {t}, found {x}")),
                None => self.err(format!("expected {t} at the end")),
            }
        }
    }
    fn duration(&mut self) -> Result<Duration, ParseError> {
        match self.peek() {
            Some(Tok::Dur(d)) => {
                let d = *d;
                self.pos += 1;
                Ok(d)
            }
            _ => self.err("expected a duration such as `10s` or `10m`"),
        }
    }
    fn timer(&mut self) -> usize {
        self.timed = true;
        self.timers += 1;
        self.timers - 1
    }

    fn or(&mut self) -> Result<Node, ParseError> {
        let mut v = vec![self.and()?];
        while self.is_kw("or") {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Node::Or(v)
        })
    }
    fn and(&mut self) -> Result<Node, ParseError> {
        let mut v = vec![self.not()?];
        while self.is_kw("and") {
            self.pos += 1;
            v.push(self.not()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Node::And(v)
        })
    }
    fn not(&mut self) -> Result<Node, ParseError> {
        if self.is_kw("not") {
            self.pos += 1;
            return Ok(Node::Not(Box::new(self.not()?)));
        }
        let n = self.cmp()?;
        if self.is_kw("for") {
            self.pos += 1;
            let d = self.duration()?;
            let slot = self.timer();
            return Ok(Node::For(Box::new(n), d, slot));
        }
        Ok(n)
    }
    fn cmp(&mut self) -> Result<Node, ParseError> {
        let a = self.sum()?;
        let op = match self.peek() {
            Some(Tok::Op("<")) => Cmp::Lt,
            Some(Tok::Op("<=")) => Cmp::Le,
            Some(Tok::Op(">")) => Cmp::Gt,
            Some(Tok::Op(">=")) => Cmp::Ge,
            Some(Tok::Op("==")) => Cmp::Eq,
            Some(Tok::Op("!=")) => Cmp::Ne,
            _ => return Ok(a),
        };
        self.pos += 1;
        let b = self.sum()?;
        Ok(Node::Cmp(op, Box::new(a), Box::new(b)))
    }
    fn sum(&mut self) -> Result<Node, ParseError> {
        let mut a = self.prod()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op("+")) => Arith::Add,
                Some(Tok::Op("-")) => Arith::Sub,
                _ => return Ok(a),
            };
            self.pos += 1;
            a = Node::Arith(op, Box::new(a), Box::new(self.prod()?));
        }
    }
    fn prod(&mut self) -> Result<Node, ParseError> {
        let mut a = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op("*")) => Arith::Mul,
                Some(Tok::Op("/")) => Arith::Div,
                _ => return Ok(a),
            };
            self.pos += 1;
            a = Node::Arith(op, Box::new(a), Box::new(self.unary()?));
        }
    }
    fn unary(&mut self) -> Result<Node, ParseError> {
        if self.eat(&Tok::Op("-")) {
            return Ok(Node::Neg(Box::new(self.unary()?)));
        }
        self.atom()
    }
    fn list(&mut self) -> Result<Vec<Node>, ParseError> {
        self.expect(&Tok::LParen)?;
        let mut v = vec![self.or()?];
        while self.eat(&Tok::Comma) {
            v.push(self.or()?);
        }
        self.expect(&Tok::RParen)?;
        Ok(v)
    }
    fn name_arg(&mut self) -> Result<String, ParseError> {
        self.expect(&Tok::LParen)?;
        let name = match self.peek() {
            Some(Tok::Ident(s)) | Some(Tok::Str(s)) => s.clone(),
            _ => return self.err("expected a name"),
        };
        self.pos += 1;
        self.expect(&Tok::RParen)?;
        Ok(name)
    }
    fn channel(&mut self, id: String) -> Node {
        let i = match self.channels.iter().position(|c| *c == id) {
            Some(i) => i,
            None => {
                self.channels.push(id);
                self.channels.len() - 1
            }
        };
        Node::Chan(i)
    }
    fn atom(&mut self) -> Result<Node, ParseError> {
        let start = self.at();
        let Some(tok) = self.peek().cloned() else {
            return self.err("unexpected end of expression");
        };
        self.pos += 1;
        match tok {
            Tok::Num(x) => {
                if self.is_kw("of") {
                    self.pos += 1;
                    if x.fract() != 0.0 || x < 1.0 {
                        return Err(ParseError {
                            pos: start,
                            message: "`k of (...)` needs a whole k of at least 1".into(),
                        });
                    }
                    let v = self.list()?;
                    #[expect(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "checked whole and positive above"
                    )]
                    let k = x as usize;
                    if k > v.len() {
                        return Err(ParseError {
                            pos: start,
                            message: format!("{k} of {} can never be true", v.len()),
                        });
                    }
                    return Ok(Node::Vote(k, v));
                }
                Ok(Node::Num(x))
            }
            Tok::LParen => {
                let n = self.or()?;
                self.expect(&Tok::RParen)?;
                Ok(n)
            }
            Tok::Str(s) => Ok(self.channel(s)),
            Tok::Ident(s) => {
                let call = self.peek() == Some(&Tok::LParen);
                match (s.as_str(), call) {
                    ("true", false) => Ok(Node::Num(1.0)),
                    ("false", false) => Ok(Node::Num(0.0)),
                    ("and" | "or" | "not" | "for" | "of", _) => Err(ParseError {
                        pos: start,
                        message: format!("unexpected `{s}`"),
                    }),
                    ("count", true) => Ok(Node::Count(self.list()?)),
                    ("within" | "held", true) => {
                        self.expect(&Tok::LParen)?;
                        let a = self.or()?;
                        self.expect(&Tok::Comma)?;
                        let d = self.duration()?;
                        self.expect(&Tok::RParen)?;
                        let slot = self.timer();
                        Ok(if s == "within" {
                            Node::Within(Box::new(a), d, slot)
                        } else {
                            Node::For(Box::new(a), d, slot)
                        })
                    }
                    ("mode", true) => {
                        let name = self.name_arg()?;
                        self.timed = true;
                        SiteMode::parse(&name).map(Node::Mode).ok_or_else(|| ParseError {
                            pos: start,
                            message: format!("unknown site mode `{name}`: use normal, suspended or maintenance"),
                        })
                    }
                    ("window", true) => {
                        let name = self.name_arg()?;
                        self.timed = true;
                        let i = match self.windows.iter().position(|w| *w == name) {
                            Some(i) => i,
                            None => {
                                self.windows.push(name);
                                self.windows.len() - 1
                            }
                        };
                        Ok(Node::Window(i))
                    }
                    ("weekend" | "holiday", true) => {
                        self.expect(&Tok::LParen)?;
                        self.expect(&Tok::RParen)?;
                        self.timed = true;
                        Ok(if s == "weekend" {
                            Node::Weekend
                        } else {
                            Node::Holiday
                        })
                    }
                    (_, true) => Err(ParseError {
                        pos: start,
                        message: format!(
                            "unknown function `{s}`: use count, within, held, mode, window, weekend or holiday"
                        ),
                    }),
                    (_, false) => Ok(self.channel(s)),
                }
            }
            other => Err(ParseError {
                pos: start,
                message: format!("unexpected {other}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct E {
        vals: HashMap<usize, f64>,
        mode: SiteMode,
    }
    impl Env for E {
        fn value(&self, i: usize) -> Option<f64> {
            self.vals.get(&i).copied()
        }
        fn mode(&self) -> SiteMode {
            self.mode
        }
        fn window(&self, i: usize) -> bool {
            i == 0
        }
        fn weekend(&self) -> bool {
            false
        }
        fn holiday(&self) -> bool {
            true
        }
    }

    fn eval_once(src: &str, vals: &[(&str, f64)]) -> Val {
        let e = Expr::parse(src).unwrap_or_else(|err| panic!("{src}: {err}"));
        let env = E {
            vals: vals
                .iter()
                .filter_map(|(k, v)| e.channels.iter().position(|c| c == k).map(|i| (i, *v)))
                .collect(),
            mode: SiteMode::Suspended,
        };
        e.eval(&env, &mut e.timers(), Instant::now())
    }

    #[test]
    fn evaluation_table_with_unknowns() {
        use Val::*;
        type Row<'a> = (&'a str, Vec<(&'a str, f64)>, Val);
        let rows: Vec<Row<'_>> = vec![
            ("a.x > 3", vec![("a.x", 4.0)], Bool(true)),
            ("a.x > 3", vec![], Unknown),
            ("a.x > 3 and b.y", vec![("a.x", 1.0)], Bool(false)), // false and unknown
            ("a.x > 3 or b.y", vec![("a.x", 4.0)], Bool(true)),   // true or unknown
            ("a.x > 3 or b.y", vec![("a.x", 1.0)], Unknown),
            ("not b.y", vec![], Unknown),
            ("not b.y", vec![("b.y", 0.0)], Bool(true)),
            (
                "2 of (a >= 25, b >= 25, c >= 25)",
                vec![("a", 30.0), ("b", 26.0), ("c", 0.0)],
                Bool(true),
            ),
            (
                "2 of (a >= 25, b >= 25, c >= 25)",
                vec![("a", 30.0), ("b", 20.0), ("c", 0.0)],
                Bool(false),
            ),
            (
                "2 of (a >= 25, b >= 25, c >= 25)",
                vec![("a", 30.0), ("c", 0.0)],
                Unknown,
            ),
            (
                "2 of (a >= 25, b >= 25, c >= 25)",
                vec![("a", 1.0), ("c", 0.0)],
                Bool(false),
            ),
            (
                "count(a, b, c) >= 2",
                vec![("a", 1.0), ("b", 1.0), ("c", 0.0)],
                Bool(true),
            ),
            (
                "p.f / p.t * 100 > 13",
                vec![("p.f", 14.0), ("p.t", 100.0)],
                Bool(true),
            ),
            (
                "p.f / p.t * 100 > 13",
                vec![("p.f", 14.0), ("p.t", 0.0)],
                Unknown,
            ),
            (
                "p.a - p.b > 1",
                vec![("p.a", 3.0), ("p.b", 1.0)],
                Bool(true),
            ),
            ("-p.a + 2 * 3 == 5", vec![("p.a", 1.0)], Bool(true)),
            (
                "mode(suspended) and pm.kw > 5",
                vec![("pm.kw", 6.0)],
                Bool(true),
            ),
            ("mode(\"normal\")", vec![], Bool(false)),
            (
                "window(night) and not weekend() and holiday()",
                vec![],
                Bool(true),
            ),
            (
                "\"1a.gd-1.lel\" >= 1",
                vec![("1a.gd-1.lel", 1.0)],
                Bool(true),
            ),
            ("true and not false", vec![], Bool(true)),
        ];
        for (src, vals, want) in rows {
            assert_eq!(eval_once(src, &vals), want, "{src} with {vals:?}");
        }
    }

    #[test]
    fn parse_errors_say_where() {
        let rows = [
            ("a >", "at character 4: unexpected end of expression"),
            ("a = b", "at character 3: expected `==` or `!=`"),
            ("frob(a)", "unknown function `frob`"),
            ("a for 10", "expected a duration"),
            ("4 of (a, b)", "4 of 2 can never be true"),
            ("mode(closed)", "unknown site mode `closed`"),
            ("a b", "unexpected `b`"),
        ];
        for (src, want) in rows {
            let e = Expr::parse(src).expect_err(src).to_string();
            assert!(e.contains(want), "{src}: {e}");
        }
        assert_eq!(
            Expr::parse("(a and b").expect_err("unclosed").to_string(),
            "at character 9: expected `)` at the end"
        );
    }

    #[test]
    fn for_and_within_timers() {
        let e = Expr::parse("(line.run and not dc.run) for 10s").expect("parses");
        assert!(e.timed);
        let t0 = Instant::now();
        let s = |x: u64| t0 + Duration::from_secs(x);
        let mut timers = e.timers();
        let env = |line: f64, dc: Option<f64>| E {
            vals: [(0, line)].into_iter().chain(dc.map(|d| (1, d))).collect(),
            mode: SiteMode::Normal,
        };
        assert_eq!(
            e.eval(&env(1.0, Some(0.0)), &mut timers, s(0)),
            Val::Bool(false)
        );
        assert_eq!(
            e.eval(&env(1.0, None), &mut timers, s(5)),
            Val::Unknown,
            "unknown keeps the timer"
        );
        assert_eq!(
            e.eval(&env(1.0, Some(0.0)), &mut timers, s(10)),
            Val::Bool(true)
        );
        assert_eq!(
            e.eval(&env(1.0, Some(1.0)), &mut timers, s(11)),
            Val::Bool(false)
        );
        assert_eq!(
            e.eval(&env(1.0, Some(0.0)), &mut timers, s(12)),
            Val::Bool(false),
            "timer restarted"
        );

        let w = Expr::parse("not dc.run and within(line.run, 10m)").expect("parses");
        let mut timers = w.timers();
        let env2 = |dc: f64, line: f64| E {
            vals: [(0, dc), (1, line)].into_iter().collect(),
            mode: SiteMode::Normal,
        };
        // The collector runs while the line runs; the line stops at 100 s.
        assert_eq!(w.eval(&env2(1.0, 1.0), &mut timers, s(0)), Val::Bool(false));
        assert_eq!(
            w.eval(&env2(1.0, 1.0), &mut timers, s(99)),
            Val::Bool(false)
        );
        assert_eq!(
            w.eval(&env2(1.0, 0.0), &mut timers, s(100)),
            Val::Bool(false)
        );
        // Collector stopped 9 min 59 s after the line's last running reading: too early.
        assert_eq!(
            w.eval(&env2(0.0, 0.0), &mut timers, s(99 + 599)),
            Val::Bool(true)
        );
        assert_eq!(
            w.eval(&env2(0.0, 0.0), &mut timers, s(99 + 600)),
            Val::Bool(false)
        );
    }
}
