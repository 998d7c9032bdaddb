//! `bulwarkctl` as an operator runs it: `validate`'s exit status and messages, and the shell
//! completion it prints.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bulwarkctl(args: &[&Path]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bulwarkctl"))
        .arg("validate")
        .args(args)
        .output()
        .expect("bulwarkctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy")
}

#[test]
fn the_shipped_examples_are_valid() {
    let (code, out, err) = bulwarkctl(&[&examples()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "4 files, 6 documents: valid");
}

#[test]
fn every_mistake_is_reported_with_file_line_field_and_reason() {
    let dir = std::env::temp_dir().join(format!("bulwarkctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let web = std::fs::read_to_string(examples().join("web.yaml")).unwrap();
    let broken = web
        .replace("    attempts: 3", "    attempts: 3\n    atempts: 4")
        .replace("maxEjectionPercent: 50", "maxEjectionPercent: 150");
    std::fs::write(dir.join("web.yaml"), broken).unwrap();
    std::fs::write(dir.join("syntax.yml"), "kind: [unclosed\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "not policy").unwrap();
    let (code, out, err) = bulwarkctl(&[&dir]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1, "{out}{err}");
    let file = dir.join("web.yaml");
    let file = file.display();
    assert!(
        err.contains(&format!(
            "error: {file}:21:5: spec.retries.atempts: unknown field `atempts` (did you mean `attempts`?), expected one of"
        )),
        "{err}"
    );
    assert!(err.contains("syntax.yml:"), "{err}");
    assert!(
        err.contains("2 files, 0 valid documents, 2 errors"),
        "notes.txt is not read; {err}"
    );

    // With the unknown field fixed, the range error behind it shows.
    let dir2 = std::env::temp_dir().join(format!("bulwarkctl-test2-{}", std::process::id()));
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::write(
        dir2.join("web.yaml"),
        web.replace("maxEjectionPercent: 50", "maxEjectionPercent: 150"),
    )
    .unwrap();
    let (code, _, err) = bulwarkctl(&[&dir2]);
    std::fs::remove_dir_all(&dir2).unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("web.yaml:34:5: spec.outlierDetection.maxEjectionPercent: must be between 0 and 100, got 150"), "{err}");
}

#[test]
fn a_missing_path_is_an_error_not_an_empty_success() {
    let (code, _, err) = bulwarkctl(&[Path::new("/nonexistent/policy")]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/policy: cannot read"), "{err}");
}

#[test]
fn standard_input_is_read_and_empty_input_fails() {
    use std::io::Write;
    let run = |input: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bulwarkctl"))
            .args(["validate", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let web = std::fs::read_to_string(examples().join("web.yaml")).unwrap();
    let (code, out) = run(&web);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 files, 1 documents: valid"), "{out}");
    let (code, out) = run(&web.replace("kind: TrafficPolicy", "kind: TraficPolicy"));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("error: <stdin>:7:1: kind: must be one of Backend, TrafficPolicy, MeshConfig, AuthorizationPolicy, got \"TraficPolicy\"; did you mean TrafficPolicy?"),
        "{out}"
    );
    for empty in ["", "# only a comment\n---\n---\n"] {
        let (code, out) = run(empty);
        assert_eq!(code, Some(1), "{empty:?}: {out}");
        assert!(
            out.contains("error: no policy documents in - (1 files read)"),
            "{empty:?}: {out}"
        );
    }
}

/// `validate -o FORMAT -` on `input`: exit status and standard output.
fn validate_as(format: &str, input: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulwarkctl"))
        .args(["validate", "-o", format, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bulwarkctl runs");
    child
        .stdin
        .take()
        .expect("a piped stdin")
        .write_all(input.as_bytes())
        .expect("bulwarkctl reads its input");
    let out = child.wait_with_output().expect("bulwarkctl exits");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn validate_speaks_json_and_yaml_for_scripts() {
    let web = std::fs::read_to_string(examples().join("web.yaml")).unwrap();
    let (code, out) = validate_as("json", &web.replace("attempts: 3", "attempts: 30"));
    assert_eq!(code, Some(1), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({
            "files": 1,
            "documents": 0,
            "valid": false,
            "diagnostics": [{
                "file": "<stdin>",
                "line": 20,
                "column": 5,
                "path": "spec.retries.attempts",
                "reason": "must be between 1 and 10, got 30",
            }],
        })
    );
    // YAML is the same document.
    let (code, out) = validate_as("yaml", &web);
    assert_eq!(code, Some(0), "{out}");
    let doc: serde_json::Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({"files": 1, "documents": 1, "valid": true, "diagnostics": []})
    );
    // Nothing to check is not a pass, in either form.
    let (code, out) = validate_as("json", "");
    assert_eq!(code, Some(1), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["diagnostics"][0]["reason"], "no policy documents");
}

/// The reviewed messages: each `tests/golden/validate/NAME.yaml` (a mistake, said in its
/// first comment) is checked from that directory, and what `validate` prints must be
/// `NAME.txt` (standard error) and, with `-o json`, `NAME.json`, exactly. Run with
/// `BULWARK_BLESS=1` to rewrite them after a deliberate change, and review the diff.
#[test]
fn validate_messages_match_the_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/validate");
    let bless = std::env::var_os("BULWARK_BLESS").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the golden directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 5, "{inputs:?}");
    let mut differ = Vec::new();
    for input in &inputs {
        let name = input.file_name().expect("a file name");
        let run = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_bulwarkctl"))
                .current_dir(&dir)
                .arg("validate")
                .args(args)
                .arg(name)
                .output()
                .expect("bulwarkctl runs");
            assert_eq!(out.status.code(), Some(1), "{name:?} is a mistake");
            out
        };
        let text = run(&[]);
        assert!(
            text.stdout.is_empty(),
            "{name:?}: text goes to standard error"
        );
        let json = run(&["-o", "json"]);
        for (ext, got) in [("txt", text.stderr), ("json", json.stdout)] {
            let want = input.with_extension(ext);
            let got = String::from_utf8(got).expect("UTF-8");
            if bless {
                std::fs::write(&want, &got).expect("the golden file is written");
            } else if std::fs::read_to_string(&want).ok().as_deref() != Some(got.as_str()) {
                differ.push(format!("{}:\n{got}", want.display()));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "output differs from the golden files (BULWARK_BLESS=1 rewrites them):\n{}",
        differ.join("\n")
    );
}

/// `inject` reads manifests with the loader's YAML reading: a syntax error is said once, at
/// FILE:LINE:COLUMN, with where the bracket it leaves open was opened.
#[test]
fn inject_says_a_yaml_error_once_as_validate_does() {
    let out = Command::new(env!("CARGO_BIN_EXE_bulwarkctl"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/validate"))
        .args(["inject", "unclosed-bracket.yaml"])
        .output()
        .expect("bulwarkctl runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "bulwarkctl inject: unclosed-bracket.yaml:11:7: invalid YAML: illegal placement of ':' indicator; \
         unclosed-bracket.yaml:10:10: the [ opened here is never closed\n"
    );
}

#[test]
fn version_client_needs_no_control_plane() {
    let out = Command::new(env!("CARGO_BIN_EXE_bulwarkctl"))
        .args(["version", "--client"])
        .output()
        .expect("bulwarkctl runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("bulwarkctl {}\n", env!("CARGO_PKG_VERSION"))
    );
    // Without --client an unreachable control plane is an error that names the address.
    let out = Command::new(env!("CARGO_BIN_EXE_bulwarkctl"))
        .args(["version", "--control-plane", "127.0.0.1:1"])
        .output()
        .expect("bulwarkctl runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    // The transport's causes repeat each other's words; the message says them once.
    let parts: Vec<&str> = err.trim_end().split(": ").collect();
    assert!(parts.windows(2).all(|w| w[0] != w[1]), "{err}");
}

/// The bash script, sourced and asked as bash asks it at a TAB: it completes subcommands
/// and the values of `-o`.
#[test]
fn the_bash_completion_completes_subcommands_and_output_formats() {
    let bin = env!("CARGO_BIN_EXE_bulwarkctl");
    let ask = |words: &str, cword: usize| {
        let script = format!(
            "source <('{bin}' completion bash) && COMP_WORDS=({words}) && COMP_CWORD={cword} \
             && _bulwarkctl bulwarkctl \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\" \
             && echo \"${{COMPREPLY[@]}}\""
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(ask("bulwarkctl st", 1), "status");
    assert_eq!(ask("bulwarkctl un", 1), "uninject");
    assert_eq!(ask("bulwarkctl status -o ''", 3), "text json yaml");
    let zsh = Command::new(bin)
        .args(["completion", "zsh"])
        .output()
        .expect("bulwarkctl runs");
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef bulwarkctl"));
}
