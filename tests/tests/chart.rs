//! The chart's CRDs, checked by real Kubernetes tooling, and the example policy against them.

use bulwark_tests::{py_script, python, workspace_root};

#[test]
fn crds_pass_kubernetes_validation_and_examples_conform() {
    let root = workspace_root();
    let out = std::process::Command::new(python())
        .arg(py_script("check_crds.py"))
        .arg(root.join("charts/bulwark/crds"))
        .arg(root.join("control-plane/examples/policy"))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("crd ok:").count(), 4, "{stdout}");
    assert!(stdout.contains("examples ok: 6 documents"), "{stdout}");
    assert!(stdout.contains("broken example rejected"), "{stdout}");
}
