//! Modbus TCP server: one listener answers for several unit ids, like a serial-to-TCP
//! converter in front of an RS-485 bus.
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
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;
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
            async move { accept_tcp_connection(stream, peer, |_| Ok(Some(service.clone()))) }
        };
        let on_error = |err| tracing::debug!(%err, "modbus connection error");
        tokio::select! {
            res = server.serve(&on_connected, on_error) => res,
            () = cancel.cancelled() => Ok(()),
        }
    };
    Ok((addr, serve))
}
