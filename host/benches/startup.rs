//! Start-up time and memory of the real `fluxpay-host serve` with 100 tenants
//! × 4 policies (targets: ready ≤ 1 s with precompiled artifacts, RSS ≤ 300 MB).
//!
//! ```text
//! RUST_BACKTRACE=0 cargo bench -p fluxpay-host --bench startup
//! ```
//!
//! Two fleets: *shared* — every tenant binds the four reference modules with
//! its own config (the usual case: one module, many configs); *distinct* —
//! every binding is a different module (each reference component with a
//! tenant-specific custom section, so 400 content hashes, 400 compiles and
//! 400 artifacts: the worst case). Each fleet starts twice: cold (empty
//! artifact directory, everything compiles) and warm (a restart).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{example_config, module, validation_config};

const TENANTS: usize = 100;

fn main() {
    println!(
        "{:<10} {:<6} {:>12} {:>10} {:>12}",
        "fleet", "start", "ready ms", "RSS MB", "peak RSS MB"
    );
    for distinct in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_fleet(dir.path(), distinct);
        for start in ["cold", "warm"] {
            let (ready, rss, peak) = start_and_measure(&config);
            println!(
                "{:<10} {:<6} {:>12.0} {:>10.1} {:>12.1}",
                if distinct { "distinct" } else { "shared" },
                start,
                ready.as_secs_f64() * 1e3,
                rss,
                peak
            );
        }
    }
}

/// Writes `tenants.yaml` for the fleet (and, for `distinct`, its modules).
fn write_fleet(dir: &Path, distinct: bool) -> PathBuf {
    let kinds = [
        ("credit", "fluxpay-policy-credit"),
        ("subscription", "fluxpay-policy-subscription"),
        ("metered", "fluxpay-policy-metered"),
    ];
    let validation = ("limits", "fluxpay-policy-validation");
    let mut yaml = format!(
        "engine:\n  artifact_dir: {}\n  max_concurrent_instances: 64\ntenants:\n",
        dir.join("artifacts").display()
    );
    let module_for = |tenant: usize, package: &str| -> PathBuf {
        if !distinct {
            return module(package);
        }
        let mut bytes = std::fs::read(module(package)).unwrap();
        append_custom_section(
            &mut bytes,
            "fluxpay-bench-tenant",
            tenant.to_string().as_bytes(),
        );
        let path = dir.join(format!("{package}-{tenant}.wasm"));
        std::fs::write(&path, bytes).unwrap();
        path
    };
    for t in 0..TENANTS {
        yaml.push_str(&format!("  tenant-{t}:\n    pricing:\n"));
        for (kind, package) in kinds {
            let config = example_config(&["tenants", "acme", "pricing", kind]);
            yaml.push_str(&format!(
                "      {kind}:\n        module: {}\n        config: {config}\n",
                module_for(t, package).display()
            ));
        }
        yaml.push_str(&format!(
            "    validation:\n      - name: {}\n        module: {}\n        config: {}\n",
            validation.0,
            module_for(t, validation.1).display(),
            validation_config(validation.0)
        ));
    }
    let path = dir.join("tenants.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A component may carry custom sections anywhere at top level; one at the
/// end changes the content hash and nothing else.
fn append_custom_section(bytes: &mut Vec<u8>, name: &str, payload: &[u8]) {
    let mut body = Vec::new();
    leb128(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    bytes.push(0);
    leb128(bytes, body.len());
    bytes.extend_from_slice(&body);
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Starts `serve`, waits for `/health/ready`, reads its memory, stops it.
fn start_and_measure(config: &Path) -> (Duration, f64, f64) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fluxpay-host"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .env("FLUXPAY_ADMIN_TOKEN", "bench-token")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fluxpay-host serve");
    let ready = loop {
        if ready(port) {
            break started.elapsed();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("fluxpay-host exited before it was ready: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not ready after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let (rss, peak) = memory_mb(&child);
    stop(&mut child);
    (ready, rss, peak)
}

fn ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = "GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// (VmRSS, VmHWM) in MB from /proc.
fn memory_mb(child: &Child) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let field = |name: &str| -> f64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn stop(child: &mut Child) {
    // SIGTERM lets the server shut down gracefully, as in production.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
