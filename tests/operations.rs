//! Operations against the real binary: the effective config printed,
//! `check-config`, one-line startup errors, plain and JSON logs, SIGHUP,
//! and the admin listener (health, metrics, API).

mod common;

use common::BrokerProcess;
use std::process::Command;
use std::time::Duration;

fn stomphub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stomphub"))
}

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stomphub-ops-")
        .tempdir()
        .expect("temp dir")
}

#[test]
fn print_config_shows_the_file_and_the_flags() {
    let dir = temp();
    let path = dir.path().join("broker.toml");
    std::fs::write(
        &path,
        "[queues]\nprefetch = 7\n[shutdown]\ngrace = \"1500ms\"\n",
    )
    .expect("write");
    let output = stomphub()
        .arg("--config")
        .arg(&path)
        .args([
            "--listen",
            "127.0.0.1:7001",
            "--admin-listen",
            "127.0.0.1:7002",
            "--print-config",
        ])
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    assert!(text.contains("prefetch = 7\n"), "{text}");
    assert!(text.contains("grace = \"1500ms\"\n"), "{text}");
    assert!(text.contains("address = \"127.0.0.1:7001\""), "{text}");
    assert!(text.contains("address = \"127.0.0.1:7002\""), "{text}");
    // Keys the file left out are printed with their defaults.
    assert!(text.contains("max_body_bytes = 1048576\n"), "{text}");
    // And what it prints is itself a valid configuration.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &text).expect("write");
    let check = stomphub()
        .arg("check-config")
        .arg(&printed)
        .output()
        .expect("runs");
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn check_config_accepts_a_good_file_and_names_what_is_wrong_in_a_bad_one() {
    let dir = temp();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[queues]\nprefetch = 5\n").expect("write");
    let output = stomphub()
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");

    let cases = [
        ("[auth]\nanonymos = \"any\"\n", "anonymos"),
        ("[queues]\nprefetch = 0\n", "queues.prefetch"),
        ("[[auth.users]]\nlogin = \"a\"\npassword_hash = \"x\"\n", "auth.users 'a'"),
        (
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[listeners.tls]\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/nonexistent.key\"\n",
            "nonexistent",
        ),
    ];
    for (text, named) in cases {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).expect("write");
        let output = stomphub()
            .arg("check-config")
            .arg(&bad)
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(1), "{text}: {output:?}");
        let stderr = String::from_utf8(output.stderr).expect("utf-8");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("stomphub: "), "{stderr}");
        assert!(stderr.contains(named), "{text}: {stderr}");
        assert!(
            !stderr.contains("Error {") && !stderr.contains("Os {"),
            "{stderr}"
        );
    }
}

#[test]
fn a_startup_error_is_one_readable_line() {
    let dir = temp();
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = blocker.local_addr().expect("addr");
    let output = stomphub()
        .args([
            "--listen",
            &taken.to_string(),
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("stomphub: listeners: "), "{stderr}");
    assert!(last.contains(&taken.to_string()), "{stderr}");
    assert!(!stderr.contains("Os {"), "{stderr}");
}

#[test]
fn logs_have_no_colours_off_a_terminal_and_can_be_json() {
    let dir = temp();
    let broker = BrokerProcess::start_logging("", dir.path(), "info").expect("starts");
    drop(broker);
    let log = std::fs::read_to_string(dir.path().join("broker.log")).expect("log");
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape in a log file: {log:?}"
    );

    let dir = temp();
    let broker = BrokerProcess::start_logging("[log]\nformat = \"json\"\n", dir.path(), "info")
        .expect("starts");
    drop(broker);
    let log = std::fs::read_to_string(dir.path().join("broker.log")).expect("log");
    let mut lines = 0;
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(value.get("level").is_some(), "{line}");
        lines += 1;
    }
    assert!(lines > 0 && log.contains("listening"), "{log}");
}

#[test]
fn sighup_does_not_stop_the_broker() {
    let dir = temp();
    let mut broker = BrokerProcess::start_logging("", dir.path(), "info").expect("starts");
    let status = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // The broker logs that it handled the signal; only then is "alive" news.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let log_path = dir.path().join("broker.log");
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("SIGHUP")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no SIGHUP line in the log"
        );
        assert!(broker.alive(), "SIGHUP stopped the broker");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(broker.alive(), "SIGHUP stopped the broker");
}
