//! Modbus servers: one listener answers for several unit ids, like a serial-to-TCP converter in
//! front of an RS-485 bus. Modbus TCP, RTU over TCP and RTU on a serial device or an in-process
//! pseudo-terminal share one service.
//!
//! On Modbus TCP the written answers pass through [`FaultyStream`], which applies the wire faults
//! (wrong transaction id, dropped connection) of the unit named in each MBAP header.
//!
//! Request handling (per request, in order):
//! 1. unknown unit id → no response (a dead unit behind a converter: the client times out);
//! 2. device `silent` → no response; `delay` → sleep; forced exception → that exception;
//! 3. FC1–4 reads are served from the device's points at the current simulated time:
//!    quantity 0 or above 2000 bits / 125 registers → `IllegalDataValue`; a range past 65535
//!    or containing no defined point → `IllegalDataAddress`; undefined addresses inside a
//!    served range read 0;
//! 4. every other function (writes included) → `IllegalFunction`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

use crate::control::{Device, SimState};
use crate::devmap::Table;

/// The per-listener Modbus service (cloned per connection).
#[derive(Clone, Debug)]
pub(crate) struct SiteService {
    state: Arc<SimState>,
    units: Arc<HashMap<u8, Arc<Device>>>,
}

impl SiteService {
    pub(crate) fn new(state: Arc<SimState>, devices: Vec<Arc<Device>>) -> Self {
        let units = devices.into_iter().map(|d| (d.unit_id, d)).collect();
        SiteService {
            state,
            units: Arc::new(units),
        }
    }
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

impl Service for SiteService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = ServiceFuture;

    fn call(&self, req: Self::Request) -> Self::Future {
        let state = self.state.clone();
        let device = self.units.get(&req.slave).cloned();
        Box::pin(async move {
            let Some(device) = device else {
                tracing::trace!(unit = req.slave, "no such unit; not answering");
                return Ok(None);
            };
            let faults = device.request_faults();
            if faults.silent {
                return Ok(None);
            }
            if !faults.delay.is_zero() {
                tokio::time::sleep(faults.delay).await;
            }
            if let Some(code) = faults.exception {
                return Err(ExceptionCode::new(code));
            }
            let t = state.now();
            let response = match req.request {
                Request::ReadCoils(a, q) => {
                    Response::ReadCoils(device.read_bits(Table::Coil, a, q, t)?)
                }
                Request::ReadDiscreteInputs(a, q) => {
                    Response::ReadDiscreteInputs(device.read_bits(Table::Discrete, a, q, t)?)
                }
                Request::ReadHoldingRegisters(a, q) => {
                    Response::ReadHoldingRegisters(device.read_words(Table::Holding, a, q, t)?)
                }
                Request::ReadInputRegisters(a, q) => {
                    Response::ReadInputRegisters(device.read_words(Table::Input, a, q, t)?)
                }
                _ => return Err(ExceptionCode::IllegalFunction),
            };
            Ok(Some(response))
        })
    }
}

/// Binds `listen` and returns the bound address and the serving future, which runs until
/// `cancel` fires (open connections are closed then).
pub(crate) async fn bind(
    listen: &str,
    service: SiteService,
    cancel: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl Future<Output = std::io::Result<()>> + Send + 'static,
)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let serve = async move {
        let server = Server::new(listener);
        let on_connected = move |stream, peer| {
            let service = service.clone();
            async move {
                let units = service.units.clone();
                accept_tcp_connection(stream, peer, |_| Ok(Some(service.clone())))
                    .map(|o| o.map(|(s, stream)| (s, FaultyStream::new(stream, units))))
            }
        };
        let on_error = |err| tracing::debug!(%err, "modbus connection error");
        tokio::select! {
            res = server.serve(&on_connected, on_error) => res,
            () = cancel.cancelled() => Ok(()),
        }
    };
    Ok((addr, serve))
}

/// Binds `listen` for RTU frames over TCP; otherwise like [`bind`] (no wire faults: RTU has no
/// transaction id).
pub(crate) async fn bind_rtu_over_tcp(
    listen: &str,
    service: SiteService,
    cancel: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl Future<Output = std::io::Result<()>> + Send + 'static,
)> {
    use tokio_modbus::server::rtu_over_tcp::{Server, accept_tcp_connection};
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let serve = async move {
        let server = Server::new(listener);
        let on_connected = move |stream, peer| {
            let service = service.clone();
            async move { accept_tcp_connection(stream, peer, |_| Ok(Some(service.clone()))) }
        };
        let on_error = |err| tracing::debug!(%err, "modbus rtu-over-tcp connection error");
        tokio::select! {
            res = server.serve(&on_connected, on_error) => res,
            () = cancel.cancelled() => Ok(()),
        }
    };
    Ok((addr, serve))
}

/// Serves RTU on a serial stream until `cancel`. `keep` is held open meanwhile (the other end of
/// a pseudo-terminal pair, so the master never sees a hang-up when the gateway reopens the port).
pub(crate) async fn serve_rtu(
    port: tokio_serial::SerialStream,
    keep: Option<tokio_serial::SerialStream>,
    service: SiteService,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let server = tokio_modbus::server::rtu::Server::new(port);
    let res = tokio::select! {
        res = server.serve_forever(service) => res,
        () = cancel.cancelled() => Ok(()),
    };
    drop(keep);
    res
}

/// A Modbus TCP connection whose written answers get the wire faults of their unit.
///
/// Answers are buffered until flushed; each complete MBAP frame is inspected once: a unit with
/// `drop_connection` makes the write fail (the server then closes the connection), a unit with
/// `wrong_transaction_id` gets its transaction id altered.
#[derive(Debug)]
pub(crate) struct FaultyStream {
    inner: TcpStream,
    units: Arc<HashMap<u8, Arc<Device>>>,
    out: Vec<u8>,
    /// Bytes of `out` already inspected (whole frames).
    scanned: usize,
    /// Bytes of `out` already written to `inner`.
    written: usize,
}

impl FaultyStream {
    fn new(inner: TcpStream, units: Arc<HashMap<u8, Arc<Device>>>) -> Self {
        FaultyStream {
            inner,
            units,
            out: Vec::new(),
            scanned: 0,
            written: 0,
        }
    }

    fn inspect(&mut self) -> io::Result<()> {
        while self.out.len() >= self.scanned + 7 {
            let h = &self.out[self.scanned..];
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if self.out.len() < self.scanned + 6 + len {
                break;
            }
            let unit = h[6];
            let faults = self
                .units
                .get(&unit)
                .map(|d| d.wire_faults())
                .unwrap_or_default();
            if faults.drop_connection {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "simulated fault: connection dropped",
                ));
            }
            if faults.wrong_transaction_id {
                let tid = u16::from_be_bytes([h[0], h[1]]).wrapping_add(0x1000);
                self.out[self.scanned..self.scanned + 2].copy_from_slice(&tid.to_be_bytes());
            }
            self.scanned += 6 + len;
        }
        Ok(())
    }
}

impl AsyncRead for FaultyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.out.extend_from_slice(buf);
        Poll::Ready(this.inspect().map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Only inspected bytes go out; a partial frame waits for the rest of its bytes.
        while this.written < this.scanned {
            match Pin::new(&mut this.inner).poll_write(cx, &this.out[this.written..this.scanned]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => this.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.out.drain(..this.written);
        this.scanned -= this.written;
        this.written = 0;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
