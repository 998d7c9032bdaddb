use std::collections::BTreeMap;

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
    // Its identity: the pod's service-account token, projected for the mesh's audience.
    let token = env
        .iter()
        .find(|e| e["name"] == "BULWARK_IDENTITY_TOKEN_FILE")
        .unwrap();
    assert_eq!(token["value"], format!("{TOKEN_DIR}/token"));
    let volumes = d["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let projected = volumes.iter().find(|v| v["name"] == TOKEN_VOLUME).unwrap();
    assert_eq!(
        projected["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        crate::token_review::AUDIENCE
    );
    assert!(
        proxy["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == TOKEN_VOLUME && m["mountPath"] == TOKEN_DIR)
    );
    let mut off = deployment();
    let no_token = Settings {
        identity_token: false,
        ..Settings::default()
    };
    manifest(&mut off, &no_token).unwrap();
    assert!(!off.to_string().contains(TOKEN_VOLUME), "{off}");
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

fn pod_with(annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]}})
}

fn env_of(c: &Value) -> BTreeMap<String, String> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn per_pod_annotations_reach_the_containers_they_configure() {
    let mut p = pod_with(json!({
        "config.bulwark.dev/skip-inbound-ports": "9090, 9100-9110",
        "config.bulwark.dev/skip-outbound-cidrs": "169.254.169.254,10.0.0.0/8",
        "config.bulwark.dev/opaque-ports": "5432,6379",
        "config.bulwark.dev/admin-port": "6191",
        "config.bulwark.dev/log-level": "warn,bulwark_proxy=debug",
        "config.bulwark.dev/detect-timeout": "2s",
        "config.bulwark.dev/proxy-memory-limit": "256Mi",
        "config.bulwark.dev/proxy-cpu-limit": "500m",
        "config.bulwark.dev/access-log": "json",
        "config.bulwark.dev/access-log-sample": "10",
        "config.bulwark.dev/mesh-http1": "multiplexed",
    }));
    assert_eq!(
        manifest(&mut p, &Settings::default()),
        Ok(vec![Change::Injected])
    );
    let inits = p["spec"]["initContainers"].as_array().unwrap();
    let init = env_of(&inits[0]);
    assert_eq!(init["BULWARK_SKIP_INBOUND_PORTS"], "9090,9100:9110");
    assert_eq!(
        init["BULWARK_SKIP_OUTBOUND_CIDRS"],
        "169.254.169.254/32,10.0.0.0/8"
    );
    assert_eq!(init["BULWARK_ADMIN_PORT"], "6191");
    let proxy = env_of(&inits[1]);
    assert_eq!(proxy["BULWARK_OPAQUE_PORTS"], "5432,6379");
    assert_eq!(proxy["BULWARK_ADMIN_ADDR"], "0.0.0.0:6191");
    assert_eq!(proxy["BULWARK_LOG"], "warn,bulwark_proxy=debug");
    assert_eq!(proxy["BULWARK_DETECT_TIMEOUT"], "2s");
    assert_eq!(proxy["BULWARK_ACCESS_LOG"], "json");
    assert_eq!(proxy["BULWARK_ACCESS_LOG_SAMPLE"], "10");
    assert_eq!(proxy["BULWARK_MESH_HTTP1"], "multiplexed");
    assert!(
        !proxy.contains_key("BULWARK_OTLP_ENDPOINT"),
        "no spans unless set"
    );
    assert_eq!(inits[1]["startupProbe"]["httpGet"]["port"], 6191);
    assert_eq!(inits[1]["ports"][0]["containerPort"], 6191);
    assert_eq!(
        inits[1]["resources"],
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}})
    );
    assert_eq!(
        p["metadata"]["annotations"][VERSION_ANNOTATION],
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn the_charts_access_log_otlp_and_mesh_http1_settings_reach_every_proxy() {
    let settings = Settings {
        access_log: crate::inject::AccessLog::Text,
        mesh_http1: crate::inject::MeshHttp1::Multiplexed,
        otlp_endpoint: "http://otel-collector.observability:4317".into(),
        ..Settings::default()
    };
    let mut p = pod_with(json!({}));
    assert_eq!(manifest(&mut p, &settings), Ok(vec![Change::Injected]));
    let proxy = env_of(&p["spec"]["initContainers"][1]);
    assert_eq!(proxy["BULWARK_ACCESS_LOG"], "text");
    assert_eq!(proxy["BULWARK_MESH_HTTP1"], "multiplexed");
    assert_eq!(
        proxy["BULWARK_OTLP_ENDPOINT"],
        "http://otel-collector.observability:4317"
    );
    // Off by default: the defaults add neither.
    let mut p = pod_with(json!({}));
    manifest(&mut p, &Settings::default()).unwrap();
    let proxy = env_of(&p["spec"]["initContainers"][1]);
    assert!(!proxy.contains_key("BULWARK_ACCESS_LOG"));
    assert!(!proxy.contains_key("BULWARK_MESH_HTTP1"));
}

#[test]
fn a_wrong_annotation_is_refused_by_name_with_the_reason() {
    let cases = [
        (
            "config.bulwark.dev/skip-inbound-ports",
            "80,http",
            "\"http\" is not a port",
        ),
        (
            "config.bulwark.dev/access-log",
            "yes",
            "must be off, text or json",
        ),
        (
            "config.bulwark.dev/mesh-http1",
            "h2",
            "must be pooled or multiplexed",
        ),
        (
            "config.bulwark.dev/access-log-sample",
            "0",
            "must be a whole number, 1 or more",
        ),
        ("config.bulwark.dev/skip-inbound-ports", "90:80", "empty"),
        (
            "config.bulwark.dev/opaque-ports",
            "5432:5440",
            "single ports",
        ),
        (
            "config.bulwark.dev/skip-outbound-cidrs",
            "10.0.0.0/33",
            "not a network",
        ),
        ("config.bulwark.dev/detect-timeout", "soon", "soon"),
        ("config.bulwark.dev/proxy-memory-limit", "lots", "quantity"),
        (
            "config.bulwark.dev/inbound-port",
            "5191",
            "another of the proxy's ports",
        ),
        (
            "config.bulwark.dev/skip-inbund-ports",
            "80",
            "did you mean config.bulwark.dev/skip-inbound-ports?",
        ),
    ];
    for (key, value, reason) in cases {
        let mut p = pod_with(json!({key: value}));
        let before = p.clone();
        let err = manifest(&mut p, &Settings::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key) && err.contains(reason),
            "{key}={value}: {err}"
        );
        assert_eq!(p, before, "nothing is changed on an error");
    }
}

#[test]
fn the_patch_adds_and_never_replaces() {
    let d = deployment();
    let t = &d["spec"]["template"];
    let first = plan(&t["metadata"], &t["spec"], &Settings::default(), "web").unwrap();
    let ops = serde_json::to_value(&first.patch).unwrap();
    let paths: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/initContainers/0",
            "/spec/initContainers/1",
            "/spec/volumes",
            "/metadata/annotations"
        ]
    );
    assert!(ops.as_array().unwrap().iter().all(|o| o["op"] == "add"));
    // A pod with annotations gets one key, escaped as RFC 6901 says.
    let p = pod_with(json!({"team": "shop"}));
    let second = plan(&p["metadata"], &p["spec"], &Settings::default(), "web").unwrap();
    let ops = serde_json::to_value(&second.patch).unwrap();
    assert_eq!(
        ops[2]["path"],
        "/metadata/annotations/bulwark.dev~1proxy-version"
    );
}

#[test]
fn a_classic_sidecar_goes_first_in_containers_and_holds_the_app_back() {
    let s = Settings {
        sidecar: SidecarMode::Classic,
        ..Settings::default()
    };
    let mut d = deployment();
    manifest(&mut d, &s).unwrap();
    let spec = &d["spec"]["template"]["spec"];
    let inits: Vec<&str> = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(inits, [INIT_CONTAINER, "migrate"]);
    let proxy = &spec["containers"][0];
    assert_eq!(proxy["name"], PROXY_CONTAINER);
    assert!(proxy.get("restartPolicy").is_none());
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"][1],
        "await"
    );
    // SIGTERM reaches every container at once: the proxy's waits for the app's last calls.
    assert_eq!(
        proxy["lifecycle"]["preStop"]["exec"]["command"][1],
        "linger"
    );
    assert_eq!(env_of(proxy)["BULWARK_ADMIN_SHUTDOWN"], "true");
    assert_eq!(manifest(&mut d, &s), Ok(vec![Change::AlreadyInjected]));
}

#[test]
fn uninject_gives_back_the_manifest_as_it_was() {
    for s in [
        Settings::default(),
        Settings {
            sidecar: SidecarMode::Classic,
            ..Settings::default()
        },
    ] {
        for original in [deployment(), pod_with(json!({"team": "shop"}))] {
            let mut d = original.clone();
            manifest(&mut d, &s).unwrap();
            assert_ne!(d, original);
            assert_eq!(uninject(&mut d), Ok(vec![true]));
            assert_eq!(d, original);
            assert_eq!(uninject(&mut d), Ok(vec![false]));
        }
    }
}

#[test]
fn settings_files_name_the_bad_key() {
    let dir = std::env::temp_dir().join(format!("bulwark-inject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, "proxyImage: registry.local/proxy:1\nsidecar: classic\nresources:\n  requests: {cpu: 50m}\n").unwrap();
    let s = Settings::from_file(&good).unwrap();
    assert_eq!(
        (s.proxy_image.as_str(), s.sidecar),
        ("registry.local/proxy:1", SidecarMode::Classic)
    );
    assert_eq!(s.control_plane, DEFAULT_CONTROL_PLANE);
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "proxyImage: x\nsidecarMode: classic\n").unwrap();
    let err = format!("{:#}", Settings::from_file(&bad).unwrap_err());
    assert!(
        err.contains("bad.yaml") && err.contains("sidecarMode"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_workload_is_named_by_its_label_else_by_its_owner() {
    use super::workload_name;
    let owned = |kind: &str, name: &str, labels: Value| {
        json!({"generateName": format!("{name}-"), "labels": labels,
               "ownerReferences": [{"kind": kind, "name": name, "controller": true}]})
    };
    let m = owned("ReplicaSet", "checkout-5d8f7c9b4", json!({"app": "shop"}));
    assert_eq!(workload_name(&m, &m), "shop");
    let hash = json!({"pod-template-hash": "5d8f7c9b4"});
    let m = owned("ReplicaSet", "checkout-5d8f7c9b4", hash.clone());
    assert_eq!(workload_name(&m, &m), "checkout");
    // Only a ReplicaSet's name carries the hash.
    let m = owned("Job", "checkout-5d8f7c9b4", hash);
    assert_eq!(workload_name(&m, &m), "checkout-5d8f7c9b4");
    let m = json!({"name": "db-0", "ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": true}]});
    assert_eq!(workload_name(&m, &m), "db");
    let m = json!({"generateName": "batch-"});
    assert_eq!(workload_name(&m, &m), "batch");
    let m = json!({"name": "web"});
    assert_eq!(workload_name(&m, &m), "web");
}
