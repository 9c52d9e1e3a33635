//! `plan`: the standard measurement. Runs every case of a plan file against
//! every target, in interleaved rounds (round 1 of every case and target,
//! then round 2, …; the order of targets rotates each round), and writes
//! each run's report and a table of medians to a Markdown file.
//!
//! A target with a `command` is started fresh for every run (with `{data}`
//! replaced by a new empty directory) and stopped after it, so that memory
//! and CPU figures start from the same state; a target without one is an
//! already running broker, measured through its `pid` if given. `{port}` in
//! a target's `url` and `command` becomes a free loopback port, new for every
//! run, so that targets need no fixed ports. A target whose program is
//! missing (e.g. the previous revision's build, not made) is skipped, and
//! the results file says so.
//!
//! A target may speak NATS or MQTT instead of STOMP (`protocol`), or take
//! its subscribers over Server-Sent Events (`sse`); only the `fanout` and
//! `topics` cases run against it. A `named_only` target runs only the
//! cases that name it. Its `config`, if any, is
//! written to a file per run (`{config}` in the command), with `{port}` and
//! a second free port `{port2}` (e.g. the plain listener beside the
//! WebSocket one) filled in.
//!
//! A target with a `[target.cluster]` section is several processes
//! (cluster.rs): nats-servers and stomphub nodes on them, started for every
//! run. It takes only the `fanout` and `topics` cases that name it; in a case's `args`,
//! `{node1}`, `{node2}`, … stand for the nodes' URLs (for a one-broker
//! target, its URL), so that one case spreads its clients over the nodes,
//! and the broker's CPU is all nodes' together, the engine's beside it.

use crate::cluster::{self, ClusterSpec};
use crate::pubsub::Protocol;
use crate::report::Report;
use crate::{Cli, Fallible};
use clap::Parser;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Options of `plan`.
#[derive(clap::Args, Clone)]
pub struct PlanArgs {
    /// The plan file (TOML).
    #[arg(default_value = "clients/bench/plan.toml")]
    pub plan: PathBuf,
    /// Where the results file goes.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Override the plan's number of rounds.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Run only the cases whose name contains this (repeatable: any of them).
    #[arg(long, value_name = "TEXT")]
    pub only: Vec<String>,
    /// A line for the results file, e.g. which revision a target was built from (repeatable).
    #[arg(long = "note", value_name = "TEXT")]
    pub note: Vec<String>,
    /// Run only these targets of the plan (repeatable; `--with` targets always run).
    #[arg(long = "target", value_name = "NAME")]
    pub target: Vec<String>,
    /// Also measure a running broker: `name=url@pid` (replacing the plan's
    /// target of that name, if any), e.g.
    /// `rabbitmq=ws://127.0.0.1:15674/ws@$(pgrep -f beam.smp)`.
    #[arg(long = "with", value_name = "NAME=URL@PID")]
    pub with: Vec<String>,
}

/// A `--with` target.
fn running_target(spec: &str) -> Fallible<Target> {
    let (name, rest) = spec.split_once('=').ok_or("--with takes name=url@pid")?;
    let (url, pid) = match rest.rsplit_once('@') {
        Some((url, pid)) => (url, Some(pid.trim().parse::<u32>()?)),
        None => (rest, None),
    };
    Ok(Target {
        name: name.to_owned(),
        url: url.to_owned(),
        command: Vec::new(),
        pid,
        protocol: Protocol::Stomp,
        config: None,
        named_only: false,
        cluster: None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    rounds: usize,
    #[serde(rename = "target")]
    targets: Vec<Target>,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Target {
    name: String,
    /// Where clients connect (a cluster target: its first node's, filled in
    /// once started).
    #[serde(default)]
    url: String,
    /// Started for every run; `{data}` becomes a fresh directory, `{port}`
    /// (here and in `url`) a free port.
    #[serde(default)]
    command: Vec<String>,
    /// The pid of an already running broker.
    pid: Option<u32>,
    /// What the load tool speaks to it (`stomp`, `nats`, `mqtt`, `sse`).
    #[serde(default)]
    protocol: Protocol,
    /// A configuration file's text, written for every run to the path that
    /// `{config}` stands for in `command`; `{port}` and `{port2}` filled in.
    config: Option<String>,
    /// Runs only the cases that name it in `targets` (e.g. stomphub spoken
    /// to over SSE or TCP, for the cases that compare transports).
    #[serde(default)]
    named_only: bool,
    /// Several processes: an engine cluster and stomphub nodes on it.
    cluster: Option<ClusterSpec>,
}

/// The processes one run measures, and the URLs its clients use.
struct Measured {
    /// The broker's (a cluster's first node's) process id.
    pid: Option<u32>,
    /// A cluster's other nodes.
    node_pids: Vec<u32>,
    /// A cluster's engine servers.
    engine_pids: Vec<u32>,
    /// Every node's URL (one broker: its URL).
    urls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// `fanout`, `topics`, `queue` or `idle`, with its options.
    args: Vec<String>,
    /// Figures for the summary table.
    figures: Vec<String>,
    /// The targets this case applies to (default: all).
    targets: Option<Vec<String>>,
}

/// A started broker, stopped on drop.
struct Started {
    child: Child,
}

impl Drop for Started {
    fn drop(&mut self) {
        // SIGTERM first, so that a broker shuts down as in production.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid this process spawned and has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that nothing listens on now.
fn free_port() -> Fallible<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The target as one run sees it: `{port}` and `{port2}` replaced by free
/// ports, `{config}` by `config_path`.
fn for_this_run(target: &Target, config_path: &Path) -> Fallible<Target> {
    let port = free_port()?.to_string();
    let mut port2 = free_port()?.to_string();
    while port2 == port {
        port2 = free_port()?.to_string();
    }
    let fill = |text: &str| {
        text.replace("{port}", &port)
            .replace("{port2}", &port2)
            .replace("{config}", &config_path.to_string_lossy())
    };
    Ok(Target {
        url: fill(&target.url),
        command: target.command.iter().map(|a| fill(a)).collect(),
        config: target.config.as_deref().map(fill),
        ..target.clone()
    })
}

/// Whether `program` can be started: a path that exists, or a bare name
/// found on `PATH`.
fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Whether `case` runs against `target`: the case names it (or names none,
/// and the target is neither `named_only` nor a cluster: cluster cases
/// spread their clients over the nodes, so a cluster takes only the cases
/// that name it), and the target can run its scenario: a target that does
/// not speak STOMP only fan-out, a cluster fan-out and queues.
fn applies(case: &Case, target: &Target) -> bool {
    let named = match &case.targets {
        Some(names) => names.contains(&target.name),
        None => !target.named_only && target.cluster.is_none(),
    };
    let scenario = case.args.first().map(String::as_str);
    // Every protocol fans out; STOMP brokers run every scenario, a cluster
    // the ones that can spread their clients over its nodes.
    let speaks = matches!(scenario, Some("fanout" | "topics"))
        || (target.protocol == Protocol::Stomp
            && (target.cluster.is_none() || scenario == Some("queue")));
    named && speaks
}

fn listen_address(url: &str) -> Fallible<SocketAddr> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or("a URL needs a scheme")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("{url}: no address").into())
}

fn start(target: &Target, data: &Path, log: &Path, config_path: &Path) -> Fallible<Started> {
    if let Some(config) = &target.config {
        std::fs::write(config_path, config)?;
    }
    let argv: Vec<String> = target
        .command
        .iter()
        .map(|a| a.replace("{data}", &data.to_string_lossy()))
        .collect();
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let address = listen_address(&target.url)?;
    if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
        return Err(format!(
            "{}: something already listens on {address}; stop it first",
            target.name
        )
        .into());
    }
    let log = std::fs::File::create(log)?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: cannot start {program}: {e}", target.name))?;
    let mut started = Started { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{} does not listen on {address}", target.name).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // What answers must be the process just started, not one left running.
    if let Some(status) = started.child.try_wait()? {
        return Err(format!("{} exited at start: {status}", target.name).into());
    }
    Ok(started)
}

/// One run of one case against one target, on a fresh runtime.
fn run_once(case: &Case, target: &Target, measured: &Measured) -> Fallible<Report> {
    let (scenario, options) = case.args.split_first().ok_or("a case needs a scenario")?;
    let mut argv = vec![
        "stomphub-bench".to_owned(),
        scenario.clone(),
        "--url".to_owned(),
        measured.urls.first().unwrap_or(&target.url).clone(),
    ];
    if let Some(pid) = measured.pid {
        argv.extend(["--pid".to_owned(), pid.to_string()]);
    }
    for pid in &measured.node_pids {
        argv.extend(["--node-pid".to_owned(), pid.to_string()]);
    }
    for pid in &measured.engine_pids {
        argv.extend(["--engine-pid".to_owned(), pid.to_string()]);
    }
    if target.protocol != Protocol::Stomp {
        argv.extend(["--protocol".to_owned(), target.protocol.name().to_owned()]);
    }
    argv.extend(
        options
            .iter()
            .map(|a| cluster::fill_nodes(a, &measured.urls)),
    );
    let cli = Cli::try_parse_from(&argv)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::run_scenario(cli.scenario))
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn format_figure(value: f64) -> String {
    if value.abs() >= 100.0 {
        let whole = format!("{:.0}", value);
        // Thin groups of three digits for large numbers.
        let mut grouped = String::new();
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 && c.is_ascii_digit() {
                grouped.push(' ');
            }
            grouped.push(c);
        }
        grouped
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    format!("{cores} cores ({cpu}), Linux {kernel}")
}

/// Runs the plan and writes the results file.
pub fn run(args: PlanArgs) -> Fallible<()> {
    let text =
        std::fs::read_to_string(&args.plan).map_err(|e| format!("{}: {e}", args.plan.display()))?;
    let plan: PlanFile =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", args.plan.display()))?;
    let mut plan = plan;
    if !args.target.is_empty() {
        plan.targets.retain(|t| args.target.contains(&t.name));
    }
    for spec in &args.with {
        // A running broker named like a plan target takes its place, so
        // that cases naming that target run against it.
        let running = running_target(spec)?;
        plan.targets.retain(|t| t.name != running.name);
        plan.targets.push(running);
    }
    let mut skipped: Vec<String> = Vec::new();
    plan.targets.retain(|t| {
        let programs = match &t.cluster {
            Some(spec) => spec.programs().to_vec(),
            None => t.command.first().map(String::as_str).into_iter().collect(),
        };
        match programs.into_iter().find(|p| !program_exists(p)) {
            Some(program) => {
                let note = format!("target {} skipped: {program} not found", t.name);
                eprintln!("{note}");
                skipped.push(note);
                false
            }
            None => true,
        }
    });
    let rounds = args.rounds.unwrap_or(plan.rounds).max(1);
    let cases: Vec<&Case> = plan
        .cases
        .iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| c.name.contains(o.as_str())))
        .collect();
    std::fs::create_dir_all(&args.out)?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let results_path = args.out.join(format!("plan-{stamp}.md"));
    let scratch = args.out.join(format!("plan-{stamp}"));
    std::fs::create_dir_all(&scratch)?;

    // (case, target) -> figure -> values over rounds
    let mut figures: BTreeMap<(usize, usize), BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut details = String::new();
    for round in 1..=rounds {
        for (case_index, case) in cases.iter().enumerate() {
            let applicable: Vec<usize> = (0..plan.targets.len())
                .filter(|t| applies(case, &plan.targets[*t]))
                .collect();
            for k in 0..applicable.len() {
                let target_index = applicable[(k + round - 1) % applicable.len()];
                let target_name = &plan.targets[target_index].name;
                let heading = format!("round {round}/{rounds} | {} | {target_name}", case.name);
                eprintln!("== {heading}");
                let run_dir = scratch.join(format!("r{round}-c{case_index}-{target_name}"));
                std::fs::create_dir_all(&run_dir)?;
                let config_path = std::path::absolute(run_dir.join("broker.conf"))?;
                let target = &for_this_run(&plan.targets[target_index], &config_path)?;
                let one = |pid: Option<u32>| Measured {
                    pid,
                    node_pids: Vec::new(),
                    engine_pids: Vec::new(),
                    urls: vec![target.url.clone()],
                };
                let outcome = if let Some(spec) = &target.cluster {
                    cluster::start(spec, &run_dir.join("cluster")).and_then(|started| {
                        let pids = started.node_pids();
                        let measured = Measured {
                            pid: pids.first().copied(),
                            node_pids: pids.iter().skip(1).copied().collect(),
                            engine_pids: started.server_pids(),
                            urls: started.urls.clone(),
                        };
                        run_once(case, target, &measured)
                    })
                } else if target.command.is_empty() {
                    run_once(case, target, &one(target.pid))
                } else {
                    start(
                        target,
                        &run_dir.join("data"),
                        &run_dir.join("broker.log"),
                        &config_path,
                    )
                    .and_then(|started| {
                        let pid = started.child.id();
                        run_once(case, target, &one(Some(pid)))
                    })
                };
                let _ = writeln!(details, "### {heading}\n\n```");
                match outcome {
                    Ok(report) => {
                        eprint!("{}", report.text());
                        let _ = write!(details, "{}", report.text());
                        let slot = figures.entry((case_index, target_index)).or_default();
                        for figure in &report.figures {
                            slot.entry(figure.name.to_owned())
                                .or_default()
                                .push(figure.value);
                        }
                        for problem in report.problems {
                            problems.push(format!("{heading}: {problem}"));
                        }
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e}");
                        let _ = writeln!(details, "FAILED: {e}");
                        problems.push(format!("{heading}: failed: {e}"));
                    }
                }
                let _ = writeln!(details, "```\n");
                // Let sockets in TIME_WAIT and the kernel settle between runs.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }

    let mut summary = String::new();
    let _ = writeln!(summary, "# stomphub-bench plan results\n");
    let _ = writeln!(
        summary,
        "Plan `{}`, {rounds} interleaved rounds, on {}. Medians of the rounds; every round's value in brackets.\n",
        args.plan.display(),
        machine()
    );
    for target in &plan.targets {
        let how = if let Some(spec) = &target.cluster {
            format!(
                "{} nodes `{}` (`{}` with `[cluster] engine = \"nats\"`) on {} routed `{}` servers with JetStream (`sync_interval: always`), all on this machine",
                spec.nodes, spec.broker, spec.broker_config, spec.servers, spec.nats_server
            )
        } else if target.command.is_empty() {
            format!("running at {}", target.url)
        } else {
            format!("started as `{}`", target.command.join(" "))
        };
        let how = match target.protocol {
            Protocol::Stomp => how,
            other => format!("{how}, spoken to in {}", other.name()),
        };
        let _ = writeln!(summary, "- {}: {how}", target.name);
    }
    for note in args.note.iter().chain(&skipped) {
        let _ = writeln!(summary, "- {note}");
    }
    let _ = writeln!(summary);
    let _ = writeln!(
        summary,
        "| case | figure | {} |",
        plan.targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(
        summary,
        "| --- | --- |{}",
        " --- |".repeat(plan.targets.len())
    );
    for (case_index, case) in cases.iter().enumerate() {
        for figure in &case.figures {
            let mut row = format!("| {} | {figure} |", case.name);
            for target_index in 0..plan.targets.len() {
                let values = figures
                    .get(&(case_index, target_index))
                    .and_then(|f| f.get(figure))
                    .cloned()
                    .unwrap_or_default();
                let mut sorted = values.clone();
                let cell = match median(&mut sorted) {
                    Some(m) => format!(
                        " **{}** ({}) |",
                        format_figure(m),
                        values
                            .iter()
                            .map(|v| format_figure(*v))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => " — |".to_owned(),
                };
                row.push_str(&cell);
            }
            let _ = writeln!(summary, "{row}");
        }
    }
    let _ = writeln!(summary);
    if problems.is_empty() {
        let _ = writeln!(summary, "No run lost or duplicated a message or failed.\n");
    } else {
        let _ = writeln!(summary, "Problems:\n");
        for problem in &problems {
            let _ = writeln!(summary, "- {problem}");
        }
        let _ = writeln!(summary);
    }
    println!("{summary}");
    std::fs::write(&results_path, format!("{summary}## Every run\n\n{details}"))?;
    println!("results: {}", results_path.display());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} runs had problems", problems.len()).into())
    }
}
