use super::*;

fn deployment() -> Value {
    serde_json::from_str(
        r#"{
          "apiVersion": "apps/v1", "kind": "Deployment",
          "metadata": {"name": "web", "namespace": "shop"},
          "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
              "metadata": {"labels": {"app": "web"}},
              "spec": {
                "initContainers": [{"name": "migrate", "image": "web:1", "args": ["migrate"]}],
                "containers": [{"name": "web", "image": "web:1"}]
              }
            }
          }
        }"#,
    )
    .unwrap()
}

#[test]
fn the_init_container_and_the_native_sidecar_come_first() {
    let mut d = deployment();
    assert_eq!(
        manifest(&mut d, &Settings::default()),
        Ok(vec![Change::Injected])
    );
    let inits = d["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = inits.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]);
    let init = &inits[0];
    assert_eq!(init["args"], json!(["init"]));
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(
        init["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    let proxy = &inits[1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["securityContext"]["runAsUser"], PROXY_UID);
    assert_eq!(
        proxy["securityContext"]["capabilities"],
        json!({"drop": ["ALL"]})
    );
    assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    let env = proxy["env"].as_array().unwrap();
    let workload = env
        .iter()
        .find(|e| e["name"] == "BULWARK_WORKLOAD")
        .unwrap();
    assert_eq!(workload["value"], "$(BULWARK_POD_NAMESPACE)/web");
    // The app's containers are untouched.
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"],
        deployment()["spec"]["template"]["spec"]["containers"]
    );
}

#[test]
fn injecting_twice_changes_nothing_and_an_opt_out_is_kept() {
    let mut d = deployment();
    manifest(&mut d, &Settings::default()).unwrap();
    let once = d.clone();
    assert_eq!(
        manifest(&mut d, &Settings::default()),
        Ok(vec![Change::AlreadyInjected])
    );
    assert_eq!(d, once);
    let mut out = deployment();
    out["spec"]["template"]["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "disabled"});
    let before = out.clone();
    assert_eq!(
        manifest(&mut out, &Settings::default()),
        Ok(vec![Change::OptedOut])
    );
    assert_eq!(out, before);
}

#[test]
fn lists_cronjobs_and_bare_pods_are_found_and_other_kinds_left_alone() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-7c9f-", "namespace": "shop"},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]}});
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report"},
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "r", "image": "r:1"}]}}}}}});
    let svc =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {}});
    let mut list = json!({"apiVersion": "v1", "kind": "List", "items": [pod, cron, svc.clone()]});
    let changes = manifest(&mut list, &Settings::default()).unwrap();
    assert_eq!(changes, [Change::Injected, Change::Injected]);
    let env = &list["items"][0]["spec"]["initContainers"][1]["env"];
    assert!(
        env.to_string()
            .contains("$(BULWARK_POD_NAMESPACE)/web-7c9f"),
        "{env}"
    );
    assert!(
        list["items"][1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"]
            .is_array()
    );
    assert_eq!(list["items"][2], svc);
}

#[test]
fn a_template_that_is_not_one_is_an_error() {
    let mut bad = json!({"kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {"spec": []}}});
    assert!(manifest(&mut bad, &Settings::default()).is_err());
}
