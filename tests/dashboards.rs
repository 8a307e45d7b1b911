//! Every query of every Grafana dashboard (panels, variables, annotations) runs against a real
//! influxd filled by the whole demo (simulated Modbus devices and MQTT data units), and returns data.

#[allow(dead_code, reason = "each test binary uses part of the support module")]
mod support;

use std::path::Path;
use std::time::Duration;

/// Every query in a dashboard with where it came from.
fn queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel `{}`", p["title"].as_str().unwrap_or("?")),
                t["query"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            out.push((
                format!("variable `{}`", v["name"].as_str().unwrap_or("?")),
                v["query"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        out.push((
            format!("annotation `{}`", a["name"].as_str().unwrap_or("?")),
            a["query"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    out
}

/// Grafana's substitutions, as a dashboard opened with "All" selected would send.
fn substitute(q: &str) -> String {
    q.replace("$timeFilter", "time > now() - 1h")
        .replace("$__interval", "1s")
        .replace("/^$site$/", "/^demo$/")
        .replace("/^$area$/", "/^(.*)$/")
        .replace("/^$channel$/", "/^(.*)$/")
}

fn has_data(v: &serde_json::Value) -> bool {
    v["results"][0]["series"].as_array().is_some_and(|series| {
        series.iter().any(|s| {
            s["values"].as_array().is_some_and(|rows| {
                rows.iter().any(|r| {
                    r.as_array()
                        .is_some_and(|cols| cols.iter().skip(1).any(|c| !c.is_null()))
                })
            })
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let influx = support::influxd();
        support::influxql(&influx, "", "CREATE DATABASE hazgate").await;
        // The whole demo (Modbus devices and the data units publishing to the embedded broker)
        // at 20x, with a scenario of no events: the test stages its incidents by hand.
        let quiet = hazgate_sim::Scenario::from_toml_str(
            "name = \"quiet\"\ndescription = \"nothing happens\"\nduration = \"1h\"\n",
        )
        .expect("scenario");
        let opts = hazgate::demo::DemoOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            influx_url: Some(influx.url()),
            influx_db: "hazgate".into(),
            operator_token: None,
        };
        let demo = hazgate::demo::start(&opts, quiet, 20.0)
            .await
            .unwrap_or_else(|e| panic!("demo does not start: {e:?}"));
        let sim = &demo.sim;
        sim.handle.set_value("gd101", "lel", 30.0).expect("set gas");
        sim.handle
            .set_value("t101", "level", 10.5)
            .expect("set level");
        support::eventually(
            Duration::from_secs(30),
            "alarm events in influxd",
            || async {
                let v = support::influxql(
                    &influx,
                    "hazgate",
                    "SELECT count(seq) FROM alarm_event WHERE transition = 'raised'",
                )
                .await;
                has_data(&v).then_some(())
            },
        )
        .await;
        // A broken detector loop so that fault panels have something to show.
        sim.handle.set_raw("gd102", "lel", 1000.0).expect("set raw");
        support::eventually(Duration::from_secs(15), "fault readings", || async {
            let v = support::influxql(
                &influx,
                "hazgate",
                "SELECT count(quality) FROM reading WHERE quality = 'bad'",
            )
            .await;
            has_data(&v).then_some(())
        })
        .await;
        // Energy differences need at least two intervals.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
        let mut checked = 0;
        let mut failures = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("dashboards/") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let d: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
                    .expect("dashboard is JSON");
            assert_eq!(d["tags"][0], "hazgate", "{}", path.display());
            for (what, q) in queries(&d) {
                let q = substitute(&q);
                let unsubstituted = q.match_indices('$').any(|(i, _)| {
                    q[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                });
                assert!(
                    !unsubstituted,
                    "{}: {what}: unsubstituted variable in {q}",
                    path.display()
                );
                let v = support::influxql(&influx, "hazgate", &q).await;
                if let Some(err) = v["results"][0]["error"].as_str().or(v["error"].as_str()) {
                    failures.push(format!("{}: {what}: error `{err}` for {q}", path.display()));
                } else if !has_data(&v) {
                    failures.push(format!("{}: {what}: no data for {q}", path.display()));
                }
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} queries found");
        assert!(
            failures.is_empty(),
            "{} of {checked} queries failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        demo.stop().await.expect("stop");
    })
    .await
    .expect("test timed out");
}
