//! Test support: real servers started for one test on free loopback ports with temp dirs.
//!
//! Each server is stopped (killed and reaped) when its handle drops, also on panic. A missing
//! binary fails the test with the install command; nothing is skipped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running server process.
#[derive(Debug)]
pub struct Server {
    /// What it is, for messages.
    pub name: &'static str,
    /// Its main port on 127.0.0.1.
    pub port: u16,
    /// Its state directory (kept for restarts).
    pub dir: PathBuf,
    _tmp: Option<TempDir>,
    child: Option<Child>,
    cmd: Vec<String>,
    log: PathBuf,
}

impl Server {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process gracefully (SIGTERM, through the `kill` command) and waits for it;
    /// SIGKILL after 30 s. For servers that lose acknowledged data on SIGKILL
    /// (VictoriaMetrics keeps recent samples in memory).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same command again (same port and state directory) and waits until ready.
    pub fn restart(&mut self) {
        self.kill();
        let child = spawn(&self.cmd, &self.log);
        self.child = Some(child);
        let ready = ready_check(self.name, self.port);
        wait_ready(self.name, &self.log, &mut self.child, ready);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the simulator on a site spec (TOML, as `hazgate-sim --site` reads it); cancelling the
/// returned token stops it.
pub async fn sim(site: &str) -> (hazgate_sim::RunningSim, tokio_util::sync::CancellationToken) {
    let cancel = tokio_util::sync::CancellationToken::new();
    let spec = hazgate_sim::SiteSpec::from_toml_str(site).expect("simulated site spec");
    let sim = hazgate_sim::start(spec, Path::new("."), cancel.clone())
        .await
        .expect("simulator starts");
    (sim, cancel)
}

/// A free TCP port on 127.0.0.1 (bound then released; callers retry on a lost race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// Finds a binary on PATH or in the sbin directories, or fails with the install command.
pub fn require_binary(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed; install it with `apt-get install -y {package}` \
         (scripts/test does this when run as root)"
    );
}

fn spawn(cmd: &[String], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("cannot open server log");
    let err = out.try_clone().expect("cannot clone log handle");
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd[0]))
}

/// A blocking HTTP GET on 127.0.0.1; returns (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    // Read until the body announced by Content-Length is complete, or the peer closes.
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| buf.len() >= h + 4 + n) {
                break;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e),
        }
    }
    let buf = String::from_utf8_lossy(&buf).into_owned();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn ready_check(name: &str, port: u16) -> Box<dyn Fn() -> bool> {
    match name {
        "influxd" => Box::new(move || matches!(http_get(port, "/ping"), Ok((204, _)))),
        "victoria-metrics" => Box::new(move || matches!(http_get(port, "/health"), Ok((200, _)))),
        "chromedriver" => Box::new(move || matches!(http_get(port, "/status"), Ok((200, _)))),
        _ => Box::new(move || TcpStream::connect(("127.0.0.1", port)).is_ok()),
    }
}

fn wait_ready(name: &str, log: &Path, child: &mut Option<Child>, ready: Box<dyn Fn() -> bool>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        if let Some(c) = child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!(
                    "{name} exited with {status} before becoming ready; its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{name} not ready within 30 s; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn start(name: &'static str, make: impl Fn(&Path, u16) -> Vec<String>) -> Server {
    let mut last_log = String::new();
    for _ in 0..3 {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("hazgate-{name}-"))
            .tempdir()
            .expect("cannot create temp dir");
        let dir = tmp.path().to_owned();
        let port = free_port();
        let cmd = make(&dir, port);
        let log = dir.join("server.log");
        let mut child = Some(spawn(&cmd, &log));
        let ready = ready_check(name, port);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut exited = false;
        while Instant::now() < deadline {
            if ready() {
                return Server {
                    name,
                    port,
                    dir,
                    _tmp: Some(tmp),
                    child,
                    cmd,
                    log,
                };
            }
            if let Some(Ok(Some(_))) = child.as_mut().map(|c| c.try_wait()) {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        last_log = std::fs::read_to_string(&log).unwrap_or_default();
        if !exited {
            break;
        }
        // Exited early: most likely lost a port race; try another port.
    }
    panic!("{name} did not start; its last log:\n{last_log}");
}

/// InfluxDB 1.x (`influxd`, Debian package `influxdb`) with reporting disabled and its own dirs.
pub fn influxd() -> Server {
    let bin = require_binary("influxd", "influxdb");
    start("influxd", |dir, port| {
        let rpc = free_port();
        let conf = dir.join("influxdb.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n  logging-enabled = false\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  enabled = true\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n\
                 [continuous_queries]\n  enabled = false\n"
            ),
        )
        .expect("cannot write influxdb.conf");
        vec![
            bin.display().to_string(),
            "-config".into(),
            conf.display().to_string(),
        ]
    })
}

/// VictoriaMetrics (Debian package `victoria-metrics`), which accepts `/api/v2/write`.
pub fn victoria_metrics() -> Server {
    let bin = require_binary("victoria-metrics", "victoria-metrics");
    start("victoria-metrics", |dir, port| {
        vec![
            bin.display().to_string(),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-storageDataPath={}/data", dir.display()),
            "-loggerLevel=ERROR".into(),
            "-search.latencyOffset=0s".into(),
        ]
    })
}

/// mosquitto (Debian package `mosquitto`) with a generated config: anonymous, persistent.
pub fn mosquitto() -> Server {
    let bin = require_binary("mosquitto", "mosquitto");
    start("mosquitto", |dir, port| {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\n",
                dir.display()
            ),
        )
        .expect("cannot write mosquitto.conf");
        vec![
            bin.display().to_string(),
            "-c".into(),
            conf.display().to_string(),
        ]
    })
}

/// Runs an InfluxQL statement against `server` and returns the JSON answer.
pub async fn influxql(server: &Server, db: &str, q: &str) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let resp = client
        .post(format!("{}/query", server.url()))
        .query(&[("db", db), ("q", q), ("epoch", "ns")])
        .send()
        .await
        .unwrap_or_else(|e| panic!("InfluxQL `{q}` failed: {e}"));
    resp.json().await.expect("InfluxQL answer is JSON")
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ChromeDriver (Debian package `chromium-driver`) driving Debian's headless Chromium.
pub fn chromedriver() -> Server {
    let bin = require_binary("chromedriver", "chromium-driver");
    require_binary("chromium", "chromium");
    start("chromedriver", |_dir, port| {
        vec![
            bin.display().to_string(),
            format!("--port={port}"),
            "--allowed-ips=127.0.0.1".into(),
        ]
    })
}

/// A minimal WebDriver client (W3C protocol over HTTP) for one headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    base: String,
    client: reqwest::Client,
    _profile: TempDir,
}

impl Browser {
    /// Opens a headless Chromium session through `driver` (browser language en-US).
    pub async fn open(driver: &Server) -> Browser {
        Self::open_lang(driver, "en-US").await
    }

    /// Opens a headless Chromium session whose browser language is `lang` (e.g. `zh-CN`).
    pub async fn open_lang(driver: &Server, lang: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1024,900",
                         format!("--lang={lang}"),
                         format!("--user-data-dir={}", profile.path().display())],
                "prefs": { "intl.accept_languages": lang }
            }
        }}});
        let r: serde_json::Value = client
            .post(format!("{}/session", driver.url()))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_owned();
        Browser {
            base: format!("{}/session/{id}", driver.url()),
            client,
            _profile: profile,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: serde_json::Value = req
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("webdriver json");
        if v["value"]["error"].is_string() {
            panic!("webdriver {path}: {v}");
        }
        v["value"].clone()
    }

    /// Navigates to `url`.
    pub async fn goto(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            "/url",
            Some(serde_json::json!({ "url": url })),
        )
        .await;
    }

    /// Element ids matching a CSS selector (possibly none).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(serde_json::json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_owned))
            .collect()
    }

    /// Visible text of an element.
    pub async fn text(&self, element: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// An attribute of an element.
    pub async fn attr(&self, element: &str, name: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/attribute/{name}"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Clicks an element.
    pub async fn click(&self, element: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(serde_json::json!({})),
        )
        .await;
    }

    /// Types into an element.
    pub async fn type_text(&self, element: &str, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(serde_json::json!({ "text": text })),
        )
        .await;
    }

    /// Runs a script in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(serde_json::json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Resizes the browser window (CSS pixels of the outer window).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(serde_json::json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Saves a PNG screenshot.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Ends the session.
    pub async fn close(self) {
        let _ = self.client.delete(&self.base).send().await;
    }
}

impl Server {
    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the same command again after [`Server::terminate`] or [`Server::kill`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        self.child = Some(spawn(&self.cmd, &self.log));
        let ready = ready_check(self.name, self.port);
        wait_ready(self.name, &self.log, &mut self.child, ready);
    }
}

/// mosquitto with extra configuration lines for its one listener (TLS, password file);
/// `extra` gets the server's directory.
pub fn mosquitto_with(extra: impl Fn(&Path) -> String) -> Server {
    let bin = require_binary("mosquitto", "mosquitto");
    start("mosquitto", |dir, port| {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\nper_listener_settings false\nlistener {port} 127.0.0.1\npersistence true\n\
                 persistence_location {}/\n{}\n",
                dir.display(),
                extra(dir)
            ),
        )
        .expect("cannot write mosquitto.conf");
        vec![
            bin.display().to_string(),
            "-c".into(),
            conf.display().to_string(),
        ]
    })
}

/// A test PKI made at test time with the `openssl` CLI: a CA, a server certificate for
/// 127.0.0.1/localhost and a client certificate, as PEM files in a temp dir.
#[derive(Debug)]
pub struct TestPki {
    /// Directory holding `ca.crt`, `server.{crt,key}`, `client.{crt,key}`.
    pub dir: TempDir,
}

impl TestPki {
    /// Path of one of the files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Generates a [`TestPki`] (EC P-256 keys, valid two days).
pub fn test_pki() -> TestPki {
    let openssl = require_binary("openssl", "openssl");
    let dir = tempfile::Builder::new()
        .prefix("hazgate-pki-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(d)
            .output()
            .expect("cannot run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=hazgate test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ];
    ca.extend(ec);
    ca.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        ),
        (
            "client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        ),
    ] {
        std::fs::write(d.join(format!("{name}.ext")), ext).expect("write ext");
        let (key, csr, crt, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        let subj = format!("/CN=hazgate-{name}");
        let mut req = vec!["req", "-subj", &subj, "-keyout", &key, "-out", &csr];
        req.extend(ec);
        run(&req);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extf,
            "-out",
            &crt,
        ]);
    }
    // mosquitto may read them after dropping root privileges; these are throw-away test keys.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
    for f in std::fs::read_dir(d).expect("pki dir").flatten() {
        let _ = std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644));
    }
    TestPki { dir }
}

/// Writes a mosquitto password file with one user.
pub fn mosquitto_password_file(dir: &Path, user: &str, password: &str) -> PathBuf {
    let bin = require_binary("mosquitto_passwd", "mosquitto");
    let f = dir.join("passwd");
    let out = Command::new(bin)
        .args(["-b", "-c"])
        .arg(&f)
        .args([user, password])
        .output()
        .expect("cannot run mosquitto_passwd");
    assert!(
        out.status.success(),
        "mosquitto_passwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    f
}

/// A small tmpfs mounted on a temporary directory, for real disk-full failures (ENOSPC).
/// Unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB. Needs root (CI runs as root): panics saying so otherwise.
    pub fn mount(kib: u64) -> Tmpfs {
        // The effective user, from /proc (no libc call needed).
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?");
        assert_eq!(
            euid, "0",
            "this test needs root to mount a small tmpfs and fill it (a real ENOSPC); CI runs as root"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={kib}k,mode=0755"))
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a file `name` until the write fails with ENOSPC.
    pub fn fill(&self, name: &str) {
        let mut f = std::fs::File::create(self.path().join(name)).expect("create filler");
        let block = [0u8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// User + system CPU seconds of process `pid` (a number or `self`), from `/proc/PID/stat`;
/// 0 when it cannot be read. For benchmarks that print figures.
pub fn proc_cpu_seconds(pid: impl std::fmt::Display) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`) of process `pid` (or `self`).
pub fn proc_status_kib(pid: impl std::fmt::Display, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
