//! A plan target made of several processes: nats-servers with JetStream
//! routed into one cluster, and stomphub nodes with `engine = "nats"` on
//! them, all on free loopback ports with their own directories, started for
//! one run and stopped by process id after it (`[target.cluster]`).

use crate::Fallible;
use serde::Deserialize;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process may take to be ready: JetStream elects a meta leader
/// first, and a node connects to its engine before it listens. Generous for
/// a busy 2-core machine.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// `[target.cluster]`: what to start.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// The nats-server binary.
    pub nats_server: String,
    /// How many nats-servers (routed to each other).
    pub servers: usize,
    /// The stomphub binary.
    pub broker: String,
    /// Every node's configuration file; its `[cluster]` section is added.
    pub broker_config: String,
    /// How many stomphub nodes.
    pub nodes: usize,
}

impl ClusterSpec {
    /// The binaries that must exist for the target to run.
    pub fn programs(&self) -> [&str; 2] {
        [&self.nats_server, &self.broker]
    }
}

/// `{node1}` … `{node9}` in a case's argument replaced by the nodes' URLs,
/// round the list: with one URL (a one-broker target) every node is it.
pub fn fill_nodes(arg: &str, urls: &[String]) -> String {
    let mut arg = arg.to_owned();
    for n in 1..=9 {
        let url = urls
            .get((n - 1) % urls.len().max(1))
            .map_or("", String::as_str);
        arg = arg.replace(&format!("{{node{n}}}"), url);
    }
    arg
}

/// A running cluster; every process is stopped on drop.
pub struct StartedCluster {
    servers: Vec<Child>,
    nodes: Vec<Child>,
    /// Each node's WebSocket URL, node 1 first.
    pub urls: Vec<String>,
}

impl StartedCluster {
    /// The stomphub nodes' process ids, node 1 first.
    pub fn node_pids(&self) -> Vec<u32> {
        self.nodes.iter().map(Child::id).collect()
    }

    /// The nats-servers' process ids.
    pub fn server_pids(&self) -> Vec<u32> {
        self.servers.iter().map(Child::id).collect()
    }
}

impl Drop for StartedCluster {
    fn drop(&mut self) {
        // Nodes first, with SIGTERM as in production; then the engine.
        for node in &self.nodes {
            // SAFETY: kill(2) with a pid this process spawned and has not reaped.
            unsafe { libc::kill(node.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for node in &mut self.nodes {
            while Instant::now() < deadline && matches!(node.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = node.kill();
            let _ = node.wait();
        }
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

/// Free loopback ports, all held until every one is chosen (so they differ).
fn free_ports(count: usize) -> Fallible<Vec<u16>> {
    let probes = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    probes.iter().map(|p| Ok(p.local_addr()?.port())).collect()
}

/// The status code of `GET path` on 127.0.0.1:`port`, if anything answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

/// Waits until `ready()` or the child exits or the deadline passes.
fn wait_for(
    child: &mut Child,
    what: &str,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Fallible<()> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!("{what} exited at start ({status}); see {}", log.display()).into());
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} not ready within {READY_WITHIN:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(program: &str, args: &[String], log: &Path) -> Fallible<Child> {
    let log_file = std::fs::File::create(log)?;
    Ok(Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?)
}

/// Starts the engine, then the nodes, in `dir`; returns once every server
/// says it is healthy and every node listens.
pub fn start(spec: &ClusterSpec, dir: &Path) -> Fallible<StartedCluster> {
    std::fs::create_dir_all(dir)?;
    let dir = std::path::absolute(dir)?;
    let ports = free_ports(spec.servers * 3 + spec.nodes)?;
    let mut cluster = StartedCluster {
        servers: Vec::new(),
        nodes: Vec::new(),
        urls: Vec::new(),
    };
    let routes: Vec<String> = (0..spec.servers)
        .map(|i| format!("\"nats-route://127.0.0.1:{}\"", ports[i * 3 + 2]))
        .collect();
    for i in 0..spec.servers {
        let (client, monitor, route) = (ports[i * 3], ports[i * 3 + 1], ports[i * 3 + 2]);
        let store = dir.join(format!("nats{i}"));
        let config = format!(
            "server_name: \"n{i}\"\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
             cluster {{\n  name: \"stomphub-bench\"\n  listen: \"127.0.0.1:{route}\"\n  routes: [{}]\n}}\n",
            store.display(),
            routes.join(", ")
        );
        let config_path = dir.join(format!("nats{i}.conf"));
        std::fs::write(&config_path, config)?;
        let log = dir.join(format!("nats{i}.log"));
        let args = ["-c".to_owned(), config_path.to_string_lossy().into_owned()];
        cluster.servers.push(spawn(&spec.nats_server, &args, &log)?);
    }
    for i in 0..spec.servers {
        let monitor = ports[i * 3 + 1];
        let log = dir.join(format!("nats{i}.log"));
        wait_for(&mut cluster.servers[i], "a nats-server", &log, || {
            http_status(monitor, "/healthz") == Some(200)
        })?;
    }
    let servers: Vec<String> = (0..spec.servers)
        .map(|i| format!("\"nats://127.0.0.1:{}\"", ports[i * 3]))
        .collect();
    let base = std::fs::read_to_string(&spec.broker_config)
        .map_err(|e| format!("{}: {e}", spec.broker_config))?;
    for n in 0..spec.nodes {
        let port = ports[spec.servers * 3 + n];
        // Each node starts on a different server of the list.
        let mut list = servers.clone();
        list.rotate_left(n % servers.len().max(1));
        let config = format!(
            "{base}\n[cluster]\nengine = \"nats\"\nservers = [{}]\nnode_name = \"node{}\"\n# The first node creates the queue stream: slow on a busy machine.\nconnect_timeout = \"30s\"\n",
            list.join(", "),
            n + 1
        );
        let config_path = dir.join(format!("node{}.toml", n + 1));
        std::fs::write(&config_path, config)?;
        let log = dir.join(format!("node{}.log", n + 1));
        let args = [
            "--config".to_owned(),
            config_path.to_string_lossy().into_owned(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--data-dir".to_owned(),
            dir.join(format!("node{}-data", n + 1))
                .to_string_lossy()
                .into_owned(),
        ];
        cluster.nodes.push(spawn(&spec.broker, &args, &log)?);
        cluster.urls.push(format!("ws://127.0.0.1:{port}/ws"));
    }
    for n in 0..spec.nodes {
        let port = ports[spec.servers * 3 + n];
        let log = dir.join(format!("node{}.log", n + 1));
        wait_for(&mut cluster.nodes[n], "a stomphub node", &log, || {
            TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
        })?;
    }
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_placeholders_take_the_nodes_urls_round_the_list() {
        let three: Vec<String> = ["ws://a", "ws://b", "ws://c"].map(String::from).to_vec();
        assert_eq!(fill_nodes("{node2}", &three), "ws://b");
        assert_eq!(fill_nodes("{node1},{node3}", &three), "ws://a,ws://c");
        let one = vec!["ws://only".to_owned()];
        assert_eq!(fill_nodes("{node3}", &one), "ws://only");
        assert_eq!(fill_nodes("--subscribers", &one), "--subscribers");
    }
}
