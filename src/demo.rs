//! `hazgate demo`: the gateway against the built-in simulated site (wired once the simulator lands).

use std::net::SocketAddr;

/// Options of `hazgate demo`.
#[derive(Debug)]
pub struct DemoOptions {
    /// API address.
    pub listen: SocketAddr,
    /// Optional InfluxDB v1 URL.
    pub influx_url: Option<String>,
    /// Database.
    pub influx_db: String,
}

/// Runs the demo until `shutdown`.
pub async fn run(_o: DemoOptions, _shutdown: impl Future<Output = ()>) -> Result<(), (u8, String)> {
    Err((3, "the simulator is not wired yet".into()))
}
