//! A real etcd cluster on loopback for the fleet tests (Debian's `etcd-server`, installed by
//! scripts/setup): N members on free ports in a temp dir, each stoppable and restartable on its
//! data, and a reader of what the ledger holds (through the same v3 JSON gateway the plugin uses).
//!
//! ```no_run
//! use keygate_e2e::etcd::EtcdCluster;
//! let mut etcd = EtcdCluster::start(3);
//! etcd.kill(0); // quorum holds with two
//! assert!(etcd.keys("keygate/line/").is_empty());
//! ```

use crate::gateway::free_port;
use crate::http;
use serde_json::{json, Value};
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ETCD: &str = "/usr/bin/etcd";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Child>,
}

pub struct EtcdCluster {
    members: Vec<Member>,
    dir: PathBuf,
    token: String,
    /// `--auth-token jwt,…`: tokens any member accepts (etcd's default "simple" tokens are
    /// valid only on the member that issued them).
    jwt: Option<String>,
    /// root's password once authentication is enabled (the reader logs in with it).
    root_password: Option<String>,
}

fn b64(s: &str) -> String {
    data_encoding::BASE64.encode(s.as_bytes())
}

/// The end of the range of keys under `prefix` (its last byte plus one).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    String::from_utf8_lossy(&end).into_owned()
}

fn unb64(v: &Value) -> String {
    let bytes = data_encoding::BASE64
        .decode(v.as_str().unwrap_or("").as_bytes())
        .expect("etcd sends base64");
    String::from_utf8_lossy(&bytes).into_owned()
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one reports healthy (a leader is elected).
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, false)
    }

    /// Like `start`; with `jwt`, the members sign auth tokens with one RSA key (made with
    /// openssl), so a token from one member is good on all, as a fleet behind one Envoy
    /// cluster needs.
    pub fn start_with(n: usize, jwt: bool) -> EtcdCluster {
        assert!(
            std::path::Path::new(ETCD).exists(),
            "{ETCD} is missing: run scripts/setup (Debian package etcd-server)"
        );
        let token = format!("keygate-e2e-{}-{}", std::process::id(), free_port());
        let dir = std::env::temp_dir().join(&token);
        fs::create_dir_all(&dir).expect("etcd temp dir");
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                process: None,
            })
            .collect();
        let jwt = jwt.then(|| {
            let (private, public) = (dir.join("jwt.key"), dir.join("jwt.pub"));
            let ok = Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(&private)
                .arg("2048")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                && Command::new("openssl")
                    .args(["rsa", "-pubout", "-in"])
                    .arg(&private)
                    .arg("-out")
                    .arg(&public)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            assert!(ok, "openssl could not make the JWT signing key");
            format!(
                "jwt,pub-key={},priv-key={},sign-method=RS256,ttl=10m",
                public.display(),
                private.display()
            )
        });
        let mut cluster = EtcdCluster {
            members,
            dir,
            token,
            jwt,
            root_password: None,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_healthy();
        cluster
    }

    /// The members' client ports (the Envoy cluster's endpoints).
    pub fn client_ports(&self) -> Vec<u16> {
        self.members.iter().map(|m| m.client_port).collect()
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let log = fs::File::create(self.dir.join(format!("{}.log", m.name))).expect("etcd log");
        let child = Command::new(ETCD)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client_port),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client_port),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-token",
                &self.token,
                "--initial-cluster-state",
                "new",
                // Loopback: elect fast, so the tests wait little after a member dies.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--logger",
                "zap",
            ])
            .args(self.jwt.iter().flat_map(|j| ["--auth-token", j.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        self.members[i].process = Some(child);
    }

    /// SIGKILL member `i` (no goodbye to its peers).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// Start member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Start every stopped member again and wait for a healthy cluster.
    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].process.is_none() {
                self.spawn(i);
            }
        }
        self.wait_healthy();
    }

    fn live_addrs(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .filter(|m| m.process.is_some())
            .map(|m| SocketAddr::from(([127, 0, 0, 1], m.client_port)))
            .collect()
    }

    /// Every running member answers `/health` with `"health":"true"`.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let healthy = self.live_addrs().iter().all(|a| {
                http::request(*a, "GET", "/health", &[], b"", Duration::from_secs(1))
                    .is_ok_and(|r| r.status == 200 && r.text().contains("true"))
            });
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy after {READY_TIMEOUT:?}; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn call(&self, path: &str, body: &Value, token: Option<&str>) -> Value {
        let body = body.to_string();
        let mut headers = vec![("content-type", "application/json")];
        if let Some(t) = token {
            headers.push(("authorization", t));
        }
        for addr in self.live_addrs() {
            match http::request(
                addr,
                "POST",
                path,
                &headers,
                body.as_bytes(),
                Duration::from_secs(3),
            ) {
                Ok(r) if r.status == 200 => {
                    return serde_json::from_str(&r.text()).expect("etcd replies with JSON")
                }
                Ok(r) => panic!("etcd {path}: {} {}", r.status, r.text()),
                Err(_) => continue,
            }
        }
        panic!("no etcd member answered {path}");
    }

    /// Turns etcd's authentication on: `root` (password `root_password`, for this reader) and
    /// `user` with read-write access to the keys under `prefix` only.
    pub fn enable_auth(&mut self, root_password: &str, user: &str, password: &str, prefix: &str) {
        let end = prefix_end(prefix);
        for (path, body) in [
            (
                "/v3/auth/user/add",
                json!({"name": "root", "password": root_password}),
            ),
            (
                "/v3/auth/user/grant",
                json!({"user": "root", "role": "root"}),
            ),
            (
                "/v3/auth/user/add",
                json!({"name": user, "password": password}),
            ),
            ("/v3/auth/role/add", json!({"name": "keygate"})),
            (
                "/v3/auth/role/grant",
                json!({"name": "keygate", "perm": {"permType": "READWRITE", "key": b64(prefix), "range_end": b64(&end)}}),
            ),
            (
                "/v3/auth/user/grant",
                json!({"user": user, "role": "keygate"}),
            ),
            ("/v3/auth/enable", json!({})),
        ] {
            self.call(path, &body, None);
        }
        self.root_password = Some(root_password.to_owned());
    }

    /// `(key, value)` of every key under `prefix`, read (linearizably) from a running member.
    pub fn keys(&self, prefix: &str) -> Vec<(String, String)> {
        if let Some(pw) = &self.root_password {
            let login = self.call(
                "/v3/auth/authenticate",
                &json!({"name": "root", "password": pw}),
                None,
            );
            let token = login["token"].as_str().unwrap_or("").to_owned();
            return self.range(prefix, Some(&token));
        }
        self.range(prefix, None)
    }

    fn range(&self, prefix: &str, token: Option<&str>) -> Vec<(String, String)> {
        let body = json!({"key": b64(prefix), "range_end": b64(&prefix_end(prefix))});
        let v = self.call("/v3/kv/range", &body, token);
        v["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| (unb64(&kv["key"]), unb64(&kv["value"])))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
