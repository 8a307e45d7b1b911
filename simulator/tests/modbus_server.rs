//! End to end: the simulator's Modbus TCP server against tokio-modbus's TCP client on
//! 127.0.0.1 with OS-assigned ports. Every test body runs under a timeout.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hazgate_sim::devmap::{ValueType, WordOrder};
use hazgate_sim::encode::words_to_raw;
use hazgate_sim::{RunningSim, SiteSpec, demo_spec, start};
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;
use tokio_util::sync::CancellationToken;

/// Fails the test if `f` takes longer than 20 s.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test timed out")
}

/// The demo site on a free port.
async fn demo() -> (RunningSim, SocketAddr) {
    let mut spec = demo_spec();
    spec.listeners[0].listen = "127.0.0.1:0".into();
    let sim = start(spec, Path::new("."), CancellationToken::new())
        .await
        .unwrap();
    let addr = sim.addr("rs485-1").unwrap();
    assert_ne!(addr.port(), 0);
    (sim, addr)
}

async fn client(addr: SocketAddr, unit: u8) -> Context {
    tcp::connect_slave(addr, Slave(unit)).await.unwrap()
}

/// No answer within 300 ms (the request future is still pending).
async fn assert_silent<T: std::fmt::Debug>(f: impl Future<Output = T>) {
    let r = tokio::time::timeout(Duration::from_millis(300), f).await;
    assert!(r.is_err(), "expected no answer, got {r:?}");
}

#[tokio::test]
async fn reads_every_table_of_the_demo_site() {
    within(async {
        let (sim, addr) = demo().await;
        let mut c = client(addr, 1).await;

        // FC4, gas detector: 4..20 mA in µA.
        let lel = c.read_input_registers(0, 1).await.unwrap().unwrap();
        assert!((4000..=20000).contains(&lel[0]), "{lel:?}");

        // FC3, tank radar: f32 CDAB level, i16 temperature x0.1, u16 pressure x0.1.
        c.set_slave(Slave(3));
        let t = c.read_holding_registers(0, 4).await.unwrap().unwrap();
        let level = words_to_raw(ValueType::F32, WordOrder::CDAB, &t[0..2]);
        assert!((5.9..=10.6).contains(&level), "level {level}");
        assert!((195..=285).contains(&t[2]), "temperature raw {}", t[2]);
        assert!((1005..=1065).contains(&t[3]), "pressure raw {}", t[3]);

        // FC3, power meter: f32 ABCD power (night base load: the site clock starts at 00:00),
        // u32 energy in 0.1 kWh from 10000 kWh.
        c.set_slave(Slave(5));
        let p = c.read_holding_registers(0, 4).await.unwrap().unwrap();
        let power = words_to_raw(ValueType::F32, WordOrder::ABCD, &p[0..2]);
        assert!((8.0..=16.0).contains(&power), "power {power}");
        let energy = words_to_raw(ValueType::U32, WordOrder::ABCD, &p[2..4]);
        assert!((100_000.0..100_100.0).contains(&energy), "energy {energy}");

        // FC1 and FC2, dust collector: running coil set, spark/valve_fault clear; FC4 dp.
        c.set_slave(Slave(4));
        assert_eq!(c.read_coils(0, 1).await.unwrap().unwrap(), [true]);
        assert_eq!(
            c.read_discrete_inputs(0, 2).await.unwrap().unwrap(),
            [false, false]
        );
        sim.handle.set_value("dc1", "spark", 1.0).unwrap();
        assert_eq!(
            c.read_discrete_inputs(0, 2).await.unwrap().unwrap(),
            [true, false]
        );
        let dc = c.read_input_registers(0, 2).await.unwrap().unwrap();
        assert!((740..=1110).contains(&dc[0]), "dp {}", dc[0]);
        assert!((370..=490).contains(&dc[1]), "hopper_temp raw {}", dc[1]);

        sim.shutdown();
        sim.wait().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn unit_ids_are_routed_and_overrides_apply() {
    within(async {
        let (sim, addr) = demo().await;
        let h = &sim.handle;
        h.set_value("gd101", "lel", 50.0).unwrap();
        h.set_value("gd102", "lel", 7.5).unwrap();
        let mut c = client(addr, 1).await;
        assert_eq!(
            c.read_input_registers(0, 1).await.unwrap().unwrap(),
            [12000]
        );
        c.set_slave(Slave(2));
        assert_eq!(c.read_input_registers(0, 1).await.unwrap().unwrap(), [5200]);

        // Broken loop: 1000 µA, below the map's valid range.
        h.set_raw("gd102", "lel", 1000.0).unwrap();
        assert_eq!(c.read_input_registers(0, 1).await.unwrap().unwrap(), [1000]);
        h.clear_override("gd102", "lel").unwrap();
        let v = c.read_input_registers(0, 1).await.unwrap().unwrap();
        assert!((4000..=5280).contains(&v[0]), "back to the walk: {v:?}");
        sim.shutdown();
        sim.wait().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn protocol_errors_and_exceptions() {
    within(async {
        let (sim, addr) = demo().await;
        let mut c = client(addr, 1).await;
        assert_eq!(
            c.read_input_registers(100, 2).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            c.read_holding_registers(0, 1).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            c.write_single_register(0, 1).await.unwrap(),
            Err(ExceptionCode::IllegalFunction)
        );
        // Gap bridged: input 0..3 of the gas detector holds one point, the rest reads 0.
        let w = c.read_input_registers(0, 3).await.unwrap().unwrap();
        assert_eq!(&w[1..], [0, 0]);

        sim.handle.set_exception("gd101", Some(4)).unwrap();
        assert_eq!(
            c.read_input_registers(0, 1).await.unwrap(),
            Err(ExceptionCode::ServerDeviceFailure)
        );
        sim.handle.set_exception("gd101", Some(0x0B)).unwrap();
        assert_eq!(
            c.read_input_registers(0, 1).await.unwrap(),
            Err(ExceptionCode::GatewayTargetDevice)
        );
        sim.handle.set_exception("gd101", None).unwrap();
        assert!(c.read_input_registers(0, 1).await.unwrap().is_ok());
        sim.shutdown();
        sim.wait().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn unknown_and_silent_units_do_not_answer() {
    within(async {
        let (sim, addr) = demo().await;
        let mut c = client(addr, 9).await;
        assert_silent(c.read_input_registers(0, 1)).await;

        sim.handle.set_silent("gd101", true).unwrap();
        let mut c = client(addr, 1).await;
        assert_silent(c.read_input_registers(0, 1)).await;

        // Other units behind the same listener still answer (fresh connection: the pending
        // request above was abandoned).
        let mut c = client(addr, 2).await;
        assert!(c.read_input_registers(0, 1).await.unwrap().is_ok());

        sim.handle.set_silent("gd101", false).unwrap();
        let mut c = client(addr, 1).await;
        assert!(c.read_input_registers(0, 1).await.unwrap().is_ok());
        sim.shutdown();
        sim.wait().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn delayed_unit_answers_slowly() {
    within(async {
        let (sim, addr) = demo().await;
        let mut c = client(addr, 3).await;
        let t0 = Instant::now();
        c.read_holding_registers(0, 4).await.unwrap().unwrap();
        let fast = t0.elapsed();

        sim.handle
            .set_delay("t101", Duration::from_millis(400))
            .unwrap();
        let t0 = Instant::now();
        c.read_holding_registers(0, 4).await.unwrap().unwrap();
        let slow = t0.elapsed();
        assert!(slow >= Duration::from_millis(400), "{slow:?}");
        assert!(fast < Duration::from_millis(400), "{fast:?}");
        sim.shutdown();
        sim.wait().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn speed_factor_and_multiple_listeners_from_a_spec_file_layout() {
    within(async {
        // Map paths relative to base_dir; two listeners; 3600x speed: 1 simulated hour/second.
        let spec = SiteSpec::from_toml_str(
            r#"
            seed = 5
            speed = 3600
            [[listeners]]
            id = "a"
            [[listeners.devices]]
            id = "pm1"
            unit_id = 7
            map = "../config/maps/power-meter.toml"
            signals.energy = { counter = { start = 0, rate_per_hour = 100 } }
            [[listeners]]
            id = "b"
            [[listeners.devices]]
            id = "gd1"
            unit_id = 7
            map_id = "gas-4-20ma"
            signals.lel = { constant = 100 }
            "#,
        )
        .unwrap();
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cancel = CancellationToken::new();
        let sim = start(spec, base, cancel.clone()).await.unwrap();
        let (a, b) = (sim.addr("a").unwrap(), sim.addr("b").unwrap());
        assert_ne!(a, b);
        assert_eq!(sim.listeners.len(), 2);

        let mut gas = client(b, 7).await;
        assert_eq!(
            gas.read_input_registers(0, 1).await.unwrap().unwrap(),
            [20000]
        );

        let mut pm = client(a, 7).await;
        let read = |w: Vec<u16>| words_to_raw(ValueType::U32, WordOrder::ABCD, &w) / 10.0;
        let e0 = read(pm.read_holding_registers(2, 2).await.unwrap().unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let e1 = read(pm.read_holding_registers(2, 2).await.unwrap().unwrap());
        // 0.5 s real = 0.5 h simulated = 50 kWh (generous bounds for slow machines).
        assert!(e1 - e0 >= 45.0 && e1 - e0 < 500.0, "{e0} -> {e1}");
        assert!(sim.handle.sim_time() >= Duration::from_secs(1800));

        // Cancelling the caller's token stops every listener.
        cancel.cancel();
        sim.wait().await.unwrap();
        assert!(tcp::connect_slave(a, Slave(7)).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn start_fails_when_the_address_is_taken() {
    within(async {
        let (sim, addr) = demo().await;
        let mut spec = demo_spec();
        spec.listeners[0].listen = addr.to_string();
        let err = start(spec, Path::new("."), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("rs485-1"), "{err:#}");

        let mut spec = demo_spec();
        spec.listeners[0].devices[0].map_id = Some("no-such-map".into());
        let err = start(spec, Path::new("."), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no-such-map"), "{err}");
        sim.shutdown();
        sim.wait().await.unwrap();
    })
    .await;
}
