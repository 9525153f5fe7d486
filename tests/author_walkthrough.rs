//! The "Write your first policy" walkthrough
//! (examples/policy-template/README.md), followed for real: build the
//! template into a component, `policy check` and `policy run` it with the
//! real binary and the template's own `input.json` and `config.yaml`, then
//! bind it with the template's `tenants.yaml`, `serve` it, evaluate
//! `evaluate.json`, and hot reload a config change.
//! If this test fails, the walkthrough is lying to newcomers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

fn workspace_root() -> PathBuf {
    fluxpay_policy_build::workspace_root_from(Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("the host lives in the workspace")
}

fn template(file: &str) -> String {
    workspace_root()
        .join("examples/policy-template")
        .join(file)
        .display()
        .to_string()
}

/// Step "Build the component", once for every test: `fluxpay-host policy
/// build` as the walkthrough runs it, writing into this test's own directory
/// so it never races the real `target/policies/`.
fn built_template() -> String {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    let module = MODULE.get_or_init(|| {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("author_walkthrough");
        let crate_dir = workspace_root().join("examples/policy-template");
        let out = fluxpay_host(&[
            "policy",
            "build",
            crate_dir.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "policy build: {}", describe(&out));
        let printed = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            printed.exists(),
            "policy build printed {}",
            printed.display()
        );
        printed
    });
    assert_eq!(module.file_name().unwrap(), "my-policy.wasm");
    module.display().to_string()
}

fn fluxpay_host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxpay-host"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("running fluxpay-host")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `policy run` prints the answer as pretty JSON, a blank line, then the
/// usage table.
fn printed_answer(out: &Output) -> (Value, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (json, table) = stdout
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("no answer/table split:\n{}", describe(out)));
    let answer = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("the answer is not JSON ({e}):\n{}", describe(out)));
    (answer, table.to_owned())
}

#[test]
fn the_template_builds_checks_and_quotes_as_the_walkthrough_says() {
    let module = built_template();

    // Step "Check it": loads as a pricing policy, exit 0.
    let out = fluxpay_host(&["policy", "check", &module]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("world     pricing (fluxpay:policy/pricer@0.1.0)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("result    ok: loads as a pricing policy"),
        "{stdout}"
    );

    // Step "Run it": 3 image renders at 5 credits each.
    let (input, config) = (template("input.json"), template("config.yaml"));
    let out = fluxpay_host(&[
        "policy", "run", &module, "--kind", "pricing", "--input", &input, "--config", &config,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (answer, table) = printed_answer(&out);
    assert_eq!(
        answer["total"],
        serde_json::json!({ "Credits": 15 }),
        "{answer}"
    );
    assert_eq!(answer["line_items"][0]["code"], "feature:image-render");
    for row in ["fuel", "memory (peak)", "module"] {
        assert!(table.contains(row), "{table}");
    }
}

#[test]
fn a_config_the_template_refuses_makes_run_exit_1() {
    // Step "When the config is wrong": check-config names the field.
    let module = built_template();
    let out_dir = tempfile::tempdir().unwrap();
    let bad_config = out_dir.path().join("bad.yaml");
    std::fs::write(&bad_config, "features:\n  image-render: -5\n").unwrap();
    let out = fluxpay_host(&[
        "policy",
        "run",
        &module,
        "--kind",
        "pricing",
        "--input",
        &template("input.json"),
        "--config",
        &bad_config.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let (answer, _) = printed_answer(&out);
    let message = answer["policy_error"]["InvalidConfig"]
        .as_str()
        .unwrap_or_else(|| panic!("not InvalidConfig: {answer}"));
    assert!(
        message.contains("features.image-render: must not be negative"),
        "{message}"
    );
}

/// `fluxpay-host serve`, stopped when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(config: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fluxpay-host"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("FLUXPAY_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting fluxpay-host serve");
        // The first stdout line: `fluxpay-host listening on http://<addr>`.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Server { child, addr }
    }

    /// One HTTP/1.1 request with the admin token; the status and JSON body.
    fn send(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// Evaluates `evaluate.json` against the demo tenant's credit binding
    /// once the first snapshot serves; the answer's `result`.
    fn evaluate(&self) -> Value {
        let body = std::fs::read_to_string(template("evaluate.json")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, answer) =
                self.send("POST", "/admin/v1/policies/demo/credit/evaluate", &body);
            if status == 200 {
                return answer["result"].clone();
            }
            assert!(Instant::now() < deadline, "not serving: {status} {answer}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ADMIN_TOKEN: &str = "walkthrough-token";

#[test]
fn the_bound_template_serves_and_hot_reloads_a_config_change() {
    // Step "Bind it to a tenant": the template's tenants.yaml, pointing at
    // this test's build instead of target/policies/.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(template("tenants.yaml")).unwrap();
    let bound = "../../target/policies/my-policy.wasm";
    assert!(text.contains(bound), "{text}");
    let config = dir.path().join("tenants.yaml");
    std::fs::write(&config, text.replace(bound, &built_template())).unwrap();

    let server = Server::start(&config);
    let result = server.evaluate();
    assert_eq!(
        result["quote"]["total"],
        serde_json::json!({ "Credits": 15 }),
        "{result}"
    );
    assert_eq!(result["version"], 1);

    // Step "Change it while it runs": a new price in the binding's config is
    // picked up by the file watcher, without a restart.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("image-render: 5", "image-render: 6")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let result = server.evaluate();
        if result["quote"]["total"] == serde_json::json!({ "Credits": 18 }) {
            assert_eq!(result["version"], 2, "{result}");
            break;
        }
        assert!(Instant::now() < deadline, "no reload: {result}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The explicit reload answers that nothing else changed.
    let (status, answer) = server.send("POST", "/admin/v1/policies/reload", "");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["swapped"], false, "{answer}");
}
