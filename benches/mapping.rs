//! MQTT payload mapping, per message: the e2e bench's ~100-byte sensor payload through
//! `Mapper::map`, and the JSON read alone, as the mapper's borrowed tree (`mqtt::json::Json`)
//! and as `serde_json::Value` (what the mapper used before). Prints ns per message.
//! Run: `cargo bench --bench mapping`.

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use hazgate::config::mqtt::MqttSource;
use hazgate::sources::mqtt::mapping::{Json, Mapper};

const N: u32 = 400_000;

fn time(name: &str, mut f: impl FnMut(u32)) {
    for i in 0..N / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..N {
        f(i);
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(N);
    println!("{name:<44} {ns:>8.0} ns/msg");
}

fn main() {
    let mut text = String::from(
        "id = \"m\"\naddress = \"127.0.0.1:1883\"\n\
         [[topics]]\nfilter = \"site/{site}/tank/{device}\"\nchannel = \"{site}.{device}.level\"\nvalue = \"level\"\n",
    );
    for ch in 0..2000 {
        let site = if ch % 2 == 0 { "a" } else { "b" };
        text.push_str(&format!("[[channels]]\nid = \"{site}.t{ch}.level\"\n"));
    }
    let src: MqttSource = toml::from_str(&text).expect("bench source parses");
    let m = Mapper::new(&src).expect("bench source compiles");
    let payloads: Vec<(String, String)> = (0..2000u32)
        .map(|ch| {
            let site = if ch % 2 == 0 { "a" } else { "b" };
            (
                format!("site/{site}/tank/t{ch}"),
                format!(
                    r#"{{"level":{:.3},"unit":"%","status":"ok","sn":"TL{ch:06}","fw":"2.1.7","pad":"xxxxxxxxxxxx"}}"#,
                    f64::from(ch) / 7.0
                ),
            )
        })
        .collect();
    let now = SystemTime::now();
    let pick = |i: u32| &payloads[(i % 2000) as usize];
    println!(
        "mapping: {} channels, payload {} bytes",
        payloads.len(),
        pick(0).1.len()
    );
    time("Mapper::map (topic match, JSON, channel)", |i| {
        let (t, p) = pick(i);
        let o = m.map(t, p.as_bytes(), now);
        assert_eq!(o.samples.len(), 1);
        black_box(o);
    });
    time("JSON read: mqtt::json::Json (borrowed)", |i| {
        black_box(Json::parse(pick(i).1.as_bytes()).expect("parses"));
    });
    time("JSON read: serde_json::Value (owned)", |i| {
        black_box(
            serde_json::from_slice::<serde_json::Value>(pick(i).1.as_bytes()).expect("parses"),
        );
    });
}
