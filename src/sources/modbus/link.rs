//! Opening a Modbus link (TCP, RTU over TCP, RTU on a serial port) and reading one request with
//! a timeout.
//!
//! Invariants:
//! - every connect and every request is bounded by a timeout (tokio-modbus has none of its own);
//! - on RTU framing there is no transaction id, so after a timeout or a garbled answer the caller
//!   drops the context and reopens with `drain = true`: the stream is read and discarded until it
//!   has been quiet for `timing.drain` (capped), and a serial port's input buffer is flushed,
//!   before the next request is written. A reply later than that quiet window can still arrive
//!   during a later request; the client then rejects it only if its unit id, function code or
//!   length differ (a limit of RTU itself, which has no transaction id).
//! - a serial port stays open across timeouts (closing and reopening a port cannot make a late
//!   reply vanish; draining does); it is reopened after a transport error (unplugged adapter).
//!   It is opened exclusively (TIOCEXCL), so a second process cannot share the bus by mistake.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_modbus::client::{Context, Reader, rtu, tcp};
use tokio_modbus::{ExceptionCode, Slave};

use crate::config::{ModbusLink, ModbusTiming, Parity, SerialLine, Table};

use super::plan::Read;

/// Outcome of one request.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Registers, or bits as one word (0/1) each.
    Data(Vec<u16>),
    /// The device answered with an exception; the link is fine.
    Exception(ExceptionCode),
    /// No answer within the timeout; the link must be reopened.
    Timeout,
    /// Transport or protocol error (closed, wrong transaction id, CRC, ...); reopen.
    LinkError(String),
}

/// Opens contexts on one link; keeps a serial port open across contexts.
#[derive(Debug)]
pub struct Connector {
    link: ModbusLink,
    timing: ModbusTiming,
    port: Option<SharedPort>,
}

impl Connector {
    /// A connector for `link`; nothing is opened yet.
    pub fn new(link: ModbusLink, timing: ModbusTiming) -> Self {
        Connector {
            link,
            timing,
            port: None,
        }
    }

    /// Forgets the open serial port (after a transport error): the next [`Connector::open`]
    /// reopens it. The port closes when the last context using it is dropped.
    pub fn reset(&mut self) {
        self.port = None;
    }

    /// A new client context. `drain`: discard stale bytes first (RTU framing, after a timeout or
    /// error).
    pub async fn open(&mut self, drain: bool) -> Result<Context, String> {
        if let ModbusLink::Rtu(line) = &self.link {
            let port = match &self.port {
                Some(p) => p.clone(),
                None => {
                    let p = SharedPort(Arc::new(Mutex::new(open_serial(line)?)));
                    self.port = Some(p.clone());
                    p
                }
            };
            if drain {
                let mut reader = port.clone();
                drain_quiet(&mut reader, self.timing.drain, drain_cap(&self.timing)).await;
                use tokio_serial::SerialPort as _;
                let _ = port.lock().clear(tokio_serial::ClearBuffer::Input);
            }
            return Ok(rtu::attach_slave(port, Slave(1)));
        }
        connect(&self.link, &self.timing, drain).await
    }
}

/// A serial port shared by successive client contexts (the lock is held only inside a poll).
#[derive(Clone, Debug)]
struct SharedPort(Arc<Mutex<tokio_serial::SerialStream>>);

impl SharedPort {
    fn lock(&self) -> std::sync::MutexGuard<'_, tokio_serial::SerialStream> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AsyncRead for SharedPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_shutdown(cx)
    }
}

/// Opens a TCP or RTU-over-TCP link (a serial link opens a fresh port; prefer [`Connector`]).
pub async fn connect(
    link: &ModbusLink,
    timing: &ModbusTiming,
    drain: bool,
) -> Result<Context, String> {
    match link {
        ModbusLink::Tcp {
            address,
            connect_timeout,
        } => {
            let stream = tcp_connect(address, *connect_timeout).await?;
            Ok(tcp::attach_slave(stream, Slave(1)))
        }
        ModbusLink::RtuOverTcp {
            address,
            connect_timeout,
        } => {
            let mut stream = tcp_connect(address, *connect_timeout).await?;
            if drain {
                drain_quiet(&mut stream, timing.drain, drain_cap(timing)).await;
            }
            Ok(rtu::attach_slave(stream, Slave(1)))
        }
        ModbusLink::Rtu(line) => {
            let port = open_serial(line)?;
            Ok(rtu::attach_slave(port, Slave(1)))
        }
    }
}

fn drain_cap(timing: &ModbusTiming) -> Duration {
    // A line that never goes quiet (noise, a babbling device) must not block the bus forever.
    (timing.drain * 5).max(timing.timeout)
}

async fn tcp_connect(address: &str, timeout: Duration) -> Result<TcpStream, String> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| format!("connect to {address}: connect timed out after {timeout:?}"))?
        .map_err(|e| format!("connect to {address}: {}", io_words(&e)))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn open_serial(line: &SerialLine) -> Result<tokio_serial::SerialStream, String> {
    let builder = tokio_serial::new(&line.port, line.baud_rate)
        .parity(match line.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(if line.data_bits == 7 {
            tokio_serial::DataBits::Seven
        } else {
            tokio_serial::DataBits::Eight
        })
        .stop_bits(if line.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(tokio_serial::FlowControl::None);
    tokio_serial::SerialStream::open(&builder).map_err(|e| format!("open {}: {e}", line.port))
}

/// Reads and discards until nothing arrived for `quiet`, at most `cap` in total. Returns the
/// number of bytes discarded.
pub async fn drain_quiet<T: AsyncRead + Unpin>(
    io: &mut T,
    quiet: Duration,
    cap: Duration,
) -> usize {
    if quiet.is_zero() {
        return 0;
    }
    let deadline = tokio::time::Instant::now() + cap;
    let mut buf = [0u8; 256];
    let mut discarded = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(quiet.min(left), io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => break,
        }
    }
    if discarded > 0 {
        tracing::debug!(bytes = discarded, "discarded stale bytes after a timeout");
    }
    discarded
}

/// One request with the per-request timeout.
pub async fn read_once(ctx: &mut Context, read: &Read, timeout: Duration) -> ReadOutcome {
    read_range(ctx, read.table, read.start, read.count, timeout).await
}

/// Reads `count` addresses of `table` from `start`.
pub async fn read_range(
    ctx: &mut Context,
    table: Table,
    start: u16,
    count: u16,
    timeout: Duration,
) -> ReadOutcome {
    let fut = async {
        match table {
            Table::Coil => ctx
                .read_coils(start, count)
                .await
                .map(|r| r.map(bits_to_words)),
            Table::Discrete => ctx
                .read_discrete_inputs(start, count)
                .await
                .map(|r| r.map(bits_to_words)),
            Table::Holding => ctx.read_holding_registers(start, count).await,
            Table::Input => ctx.read_input_registers(start, count).await,
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => ReadOutcome::Timeout,
        Ok(Err(e)) => ReadOutcome::LinkError(link_error_words(&e)),
        Ok(Ok(Err(code))) => ReadOutcome::Exception(code),
        Ok(Ok(Ok(words))) => ReadOutcome::Data(words),
    }
}

/// A transport or protocol error in words an installer understands (never a bare errno).
pub fn link_error_words(e: &tokio_modbus::Error) -> String {
    match e {
        // tokio-modbus 0.17 reports a stream that ended (the device closed the connection) as
        // `io::Error::last_os_error()`: a stale errno such as "os error 11" or "115". A real
        // socket error of a request is one of the kinds named in `is_stale_errno`.
        tokio_modbus::Error::Transport(io) if is_stale_errno(io) => {
            "connection closed by device".to_owned()
        }
        tokio_modbus::Error::Transport(io) => io_words(io),
        tokio_modbus::Error::Protocol(p) => format!("answer does not match the request ({p})"),
    }
}

/// An I/O error in words: the common link failures by name, anything else by its own message
/// without the `(os error N)` suffix.
pub fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::NotConnected => "connection closed by device".to_owned(),
        K::TimedOut => "timed out".to_owned(),
        K::HostUnreachable => "host unreachable".to_owned(),
        K::NetworkUnreachable => "network unreachable".to_owned(),
        K::AddrNotAvailable => "address not available".to_owned(),
        K::WouldBlock => "connection not ready (resource temporarily unavailable)".to_owned(),
        K::InvalidData => format!("garbled answer: {}", strip_os_error(&e.to_string())),
        _ => strip_os_error(&e.to_string()),
    }
}

/// An OS error whose kind the standard library leaves uncategorised (EINPROGRESS, EAGAIN and the
/// like): on a request this is the stale errno of a stream that ended.
fn is_stale_errno(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    e.raw_os_error().is_some()
        && !matches!(
            e.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::NotConnected
                | K::TimedOut
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::AddrNotAvailable
                | K::InvalidData
                | K::PermissionDenied
                | K::NotFound
        )
}

fn strip_os_error(s: &str) -> String {
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// Bits are carried as one word each (0 or 1) so that decoding is uniform.
fn bits_to_words(bits: Vec<bool>) -> Vec<u16> {
    bits.into_iter().map(u16::from).collect()
}
