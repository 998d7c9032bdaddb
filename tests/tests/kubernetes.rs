//! The control plane's Kubernetes source end to end: `serve --kubernetes` follows a recorded
//! API server (lists and watches of Services, EndpointSlices, Pods and the policy CRDs, as
//! kube-apiserver writes them), and a client pod's proxy balances a Service's cluster IP
//! across the endpoints its EndpointSlice lists, ejects the one that fails, and drains a
//! terminating one without a failed request.

use std::time::Duration;

use anyhow::{Context, Result};
use bulwark_tests::kubernetes::{
    RecordedApi, endpoint_slice, endpoints, pod_object, service, with_pod_uid,
};
use bulwark_tests::policy::{LoadResult, snapshot_version};
use bulwark_tests::{Fault, Mesh, Pod, bin, wait_for};
use serde_json::{Value, json};

const CLUSTER_IP: &str = "10.96.0.10";

struct Cluster {
    mesh: Mesh,
    api: RecordedApi,
    cp: Pod,
    client: Pod,
    servers: Vec<Pod>,
    server_pids: Vec<u32>,
}

impl Cluster {
    /// The EndpointSlice of shop/web: `ready` and `terminating` index the servers.
    fn ready(&self, ready: &[usize], terminating: &[usize]) -> Value {
        endpoint_slice(
            "shop",
            "web",
            "web-x7k2p",
            &endpoints(&self.servers, ready, terminating),
        )
    }

    /// Applies an API change and waits until the client's proxy runs the version it makes.
    fn change(&self, file: &str, obj: &Value) -> Result<()> {
        let before = snapshot_version(&self.client)?;
        self.api.put(file, obj)?;
        wait_for(
            "the change to reach the proxy",
            Duration::from_secs(10),
            || Ok(snapshot_version(&self.client)? > before),
        )
    }

    fn received(&self) -> Result<Vec<u64>> {
        self.servers.iter().map(|s| s.served("*")).collect()
    }

    fn load(&self, n: u64) -> Result<LoadResult> {
        let out = self.client.sh_ok(&format!(
            "h2load --h1 -n {n} -c 4 -t 1 http://{CLUSTER_IP}/"
        ))?;
        LoadResult::parse(&out).with_context(|| format!("h2load output: {out}"))
    }

    fn endpoint(&self, i: usize) -> Result<Value> {
        let (_, body) = self.client.admin("/outliers")?;
        let all: Value = serde_json::from_str(&body)?;
        let want = format!("{}:8080", self.servers[i].ip);
        all.as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["target"] == "Service/shop/web:80")
            .flat_map(|t| t["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|e| e["address"] == want.as_str())
            .with_context(|| format!("{want} not in /outliers: {all}"))
    }
}

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

fn start() -> Result<Cluster> {
    let mut mesh = Mesh::new("kubernetes")?;
    let cp = mesh.pod("cp")?;
    let client = mesh.pod("client")?;
    let mut servers = Vec::new();
    let mut server_pids = Vec::new();
    for i in 0..3 {
        let pod = mesh.pod(&format!("s{i}"))?;
        let name = format!("web-{i}");
        server_pids.push(
            mesh.testserver(&pod)
                .http("0.0.0.0:8080")
                .name(&name)
                .start()?,
        );
        servers.push(pod);
    }
    let api = RecordedApi::start(&mut mesh, &cp, "e2e")?;
    let mut cluster = Cluster {
        mesh,
        api,
        cp,
        client,
        servers,
        server_pids,
    };
    let api = &cluster.api;
    api.put("service-web", &service("shop", "web", CLUSTER_IP))?;
    api.put("slice-web", &cluster.ready(&[0, 1, 2], &[]))?;
    api.put(
        "policy-web",
        &json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TrafficPolicy",
            "metadata": {"name": "web", "namespace": "shop", "generation": 1},
            "spec": {"targetRef": {"kind": "Service", "name": "web"},
                     "loadBalancer": {"algorithm": "roundRobin", "slowStart": "30s"},
                     "retries": {"attempts": 3, "conditions": ["5xx", "connect-failure"],
                                 "budget": {"ratio": 1.0}},
                     "outlierDetection": {"consecutive5xx": 3, "baseEjectionTime": "30s",
                                          "maxEjectionPercent": 50}}
        }),
    )?;
    for (i, s) in cluster.servers.iter().enumerate() {
        api.put(
            &format!("pod-web-{i}"),
            &pod_object("shop", &format!("web-{i}"), "web", s),
        )?;
    }
    let cp = cluster.cp.clone();
    cluster.api.start_control_plane(
        &mut cluster.mesh,
        &cp,
        "control-plane",
        "0.0.0.0:5171",
        &[],
    )?;
    Ok(cluster)
}

#[test]
fn a_services_endpoints_from_its_endpoint_slice_share_load_eject_and_drain() -> Result<()> {
    let mut c = start()?;
    let cp = c.cp.clone();

    // The client's pod routes the Service CIDR as a node does; its proxy follows the cluster.
    let client = c.client.clone();
    client.sh_ok("ip route add 10.96.0.0/16 dev eth0")?;
    c.mesh
        .proxy(&client)
        .flag("--control-plane", format!("{}:5170", cp.ip))
        .flag("--workload", "shop/client")
        .flag("--pod-ips", client.ip.to_string())
        .start()?;
    wait_for(
        "the proxy's first snapshot",
        Duration::from_secs(10),
        || Ok(snapshot_version(&client)? > 0),
    )?;

    // Three endpoints share the cluster IP's load, and the Service's names reach it too.
    let before = c.received()?;
    let r = c.load(600)?;
    assert_eq!((r.ok, r.errored), (600, 0), "{r:?}");
    let shares = delta(&c.received()?, &before);
    assert_eq!(shares.iter().sum::<u64>(), 600, "{shares:?}");
    assert!(
        shares.iter().all(|&s| s >= 120),
        "every endpoint takes a fair part: {shares:?}"
    );
    let by_name = client.sh_ok(&format!(
        "curl -s -m 2 --resolve web.shop.svc.cluster.local:80:{CLUSTER_IP} http://web.shop.svc.cluster.local/"
    ))?;
    assert!(by_name.contains("hello from web-"), "{by_name}");

    // web-0's pod is replaced by another on the same IP (a new UID in the slice): the
    // proxy's pooled connections to that address are dropped, never reused.
    let conns = |pod: &Pod| -> Result<std::collections::BTreeSet<String>> {
        Ok(pod
            .sh_ok("ss -Htn state established '( sport = :8080 )'")?
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect())
    };
    let pooled = conns(&c.servers[0])?;
    assert!(
        !pooled.is_empty(),
        "the proxy keeps idle connections to web-0"
    );
    let ip0 = c.servers[0].ip.to_string();
    c.change(
        "slice-web",
        &with_pod_uid(c.ready(&[0, 1, 2], &[]), &ip0, "pod-uid-replaced"),
    )?;
    assert_eq!(
        c.endpoint(0)?["pod"],
        "pod-uid-replaced",
        "/outliers names the new pod"
    );
    let r = c.load(30)?;
    assert_eq!((r.ok, r.errored), (30, 0), "{r:?}");
    let after = conns(&c.servers[0])?;
    assert!(!after.is_empty(), "web-0 still served");
    assert!(
        pooled.is_disjoint(&after),
        "no connection opened to the old pod is reused: {pooled:?} then {after:?}"
    );

    // One endpoint fails: retries absorb it and outlier detection ejects it.
    c.servers[2].sh_ok(&format!(
        "curl -sf -m 5 -X POST 'http://127.0.0.1:8080/_fault?{}' >/dev/null",
        Fault::FailRate(1.0)
    ))?;
    let r = c.load(300)?;
    assert_eq!(
        (r.ok, r.errored),
        (300, 0),
        "retries hide the failing endpoint: {r:?}"
    );
    let ejected = c.endpoint(2)?;
    assert_eq!(ejected["state"], "ejected", "{ejected}");
    assert_eq!(
        ejected["ejection"]["reason"], "consecutive_5xx",
        "{ejected}"
    );

    // Scale-down: web-1 turns terminating. It gets no new request, then it goes away, and
    // nothing fails meanwhile.
    c.change("slice-web", &c.ready(&[0, 2], &[1]))?;
    let before = c.received()?;
    let r = c.load(300)?;
    assert_eq!((r.ok, r.errored), (300, 0), "{r:?}");
    let shares = delta(&c.received()?, &before);
    assert_eq!(
        shares[1], 0,
        "the terminating endpoint is drained: {shares:?}"
    );
    let pid = c.server_pids[1];
    c.mesh.terminate(pid, Duration::from_secs(5))?;
    c.change("slice-web", &c.ready(&[0, 2], &[]))?;
    let r = c.load(300)?;
    assert_eq!((r.ok, r.errored), (300, 0), "{r:?}");

    // The watch expires (410 Gone); the control plane relists, and a change made meanwhile
    // still arrives: web-1, restarted, is ready again.
    let lists = |c: &Cluster| {
        c.mesh
            .log_of("api-server")
            .matches("\"list\": \"/apis/discovery.k8s.io/v1/endpointslices\"")
            .count()
    };
    let listed = lists(&c);
    let s1 = c.servers[1].clone();
    c.mesh
        .testserver(&s1)
        .http("0.0.0.0:8080")
        .name("web-1")
        .start()?;
    std::fs::write(c.api.dir.join(".expire"), b"")?;
    c.change("slice-web", &c.ready(&[0, 1, 2], &[]))?;
    wait_for("a relist after 410 Gone", Duration::from_secs(5), || {
        Ok(lists(&c) > listed)
    })
    .with_context(|| c.mesh.log_of("api-server"))?;
    let log = c.mesh.log_of("control-plane");
    assert!(log.contains("cluster state served"), "{log}");

    // web-1 joined again, so it slow-starts (30 s from a tenth of its share); web-0 and
    // web-2 were there from the start and are at full weight.
    let ramping = c.endpoint(1)?;
    let weight = ramping["slow_start"]["weight"].as_f64().unwrap_or(1.0);
    assert!(weight < 0.5, "{ramping}");
    assert!(
        ramping["slow_start"]["remaining_ms"].as_u64().unwrap_or(0) > 10_000,
        "{ramping}"
    );
    assert!(c.endpoint(0)?.get("slow_start").is_none());
    let before = c.servers[1].served("*")?;
    let r = c.load(300)?;
    assert_eq!((r.ok, r.errored), (300, 0), "{r:?}");
    let got = c.servers[1].served("*")? - before;
    assert!(
        got < 60,
        "the restarted endpoint takes a small share while it ramps: {got} of 300"
    );

    // A Service of another namespace joins the proxy's scope once the proxy calls it. The
    // first call goes where the app dialled, which kube-proxy's DNAT (emulated by one rule
    // after the proxy's own) sends to web-0; the proxy reports it, and from the snapshot
    // with billing/api on, calls are balanced over both of its endpoints, with billing's
    // policy for it and none of billing's others.
    let (s0, s2) = (c.servers[0].ip, c.servers[2].ip);
    c.api.put(
        "service-api",
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": "billing"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
        }),
    )?;
    c.api.put(
        "slice-api",
        &json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "api-9f3kd", "namespace": "billing",
                         "labels": {"kubernetes.io/service-name": "api"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [s0.to_string()], "conditions": {"ready": true}},
                          {"addresses": [s2.to_string()], "conditions": {"ready": true}}]
        }),
    )?;
    for (name, service) in [("api", "api"), ("ledger", "ledger")] {
        c.api.put(
            &format!("policy-{name}"),
            &json!({
                "apiVersion": "bulwark.dev/v1alpha1", "kind": "TrafficPolicy",
                "metadata": {"name": name, "namespace": "billing"},
                "spec": {"targetRef": {"kind": "Service", "name": service},
                         "loadBalancer": {"algorithm": "roundRobin"}}
            }),
        )?;
    }
    c.servers[2]
        .sh_ok("curl -sf -m 5 -X POST 'http://127.0.0.1:8080/_fault?fail_rate=0' >/dev/null")?;
    client.sh_ok(&format!(
        "iptables -t nat -A OUTPUT -d 10.96.0.20 -p tcp --dport 80 -j DNAT --to-destination {s0}:8080"
    ))?;
    wait_for(
        "billing/api in the control plane",
        Duration::from_secs(10),
        || Ok(c.mesh.log_of("control-plane").contains("\"services\":2")),
    )?;
    let first = client.sh_ok("curl -s -m 2 http://10.96.0.20/")?;
    assert!(
        first.contains("hello from web-0"),
        "kube-proxy's answer: {first}"
    );
    wait_for(
        "billing/api in the proxy's scope",
        Duration::from_secs(10),
        || {
            Ok(c.client
                .admin("/config_dump")?
                .1
                .contains("Service/billing/api:80"))
        },
    )?;
    let dump = c.client.admin("/config_dump")?.1;
    assert!(
        !dump.contains("ledger"),
        "billing's other policies stay out: {dump}"
    );
    // web-1 is gone: count the two live pods only.
    let live = |c: &Cluster| -> Result<Vec<u64>> {
        Ok(vec![c.servers[0].served("*")?, c.servers[2].served("*")?])
    };
    let before = live(&c)?;
    let out = client.sh_ok("h2load --h1 -n 200 -c 2 -t 1 http://10.96.0.20/")?;
    let r = LoadResult::parse(&out).context("h2load")?;
    assert_eq!((r.ok, r.errored), (200, 0), "{r:?}");
    let shares = delta(&live(&c)?, &before);
    assert!(
        shares[0] >= 80 && shares[1] >= 80,
        "both of billing/api's endpoints: {shares:?}"
    );

    // Status written back by the replica holding the Lease: the policy is Accepted and its
    // namespace's proxy is in sync; an invalid one says why, and is not pushed.
    c.api.put(
        "policy-bad",
        &json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TrafficPolicy",
            "metadata": {"name": "bad", "namespace": "shop", "generation": 2},
            "spec": {"targetRef": {"kind": "Service", "name": "web"},
                     "timeouts": {"perTry": "5s", "request": "1s"}}
        }),
    )?;
    let status_of = |file: &str| c.api.status_of(file);
    wait_for("the statuses", Duration::from_secs(15), || {
        let web = status_of("policy-web")?;
        Ok(web["conditions"][0]["status"] == "True"
            && web["proxies"]["inSync"] == 1
            && status_of("policy-bad")?["conditions"][0]["status"] == "False")
    })
    .with_context(|| c.mesh.log_of("control-plane"))?;
    let web = status_of("policy-web")?;
    assert_eq!(web["conditions"][0]["reason"], "Accepted", "{web}");
    assert_eq!(web["observedGeneration"], 1, "{web}");
    let bad = status_of("policy-bad")?;
    assert_eq!(bad["conditions"][0]["reason"], "Invalid", "{bad}");
    assert_eq!(bad["observedGeneration"], 2, "{bad}");
    let why = bad["conditions"][0]["message"].as_str().unwrap_or("");
    assert!(why.contains("spec.timeouts.perTry"), "{bad}");
    assert!(
        !c.client.admin("/config_dump")?.1.contains("\"bad\""),
        "never pushed"
    );
    assert!(
        c.mesh
            .log_of("control-plane")
            .contains("status writer elected")
    );

    // bulwarkctl sees the proxy in sync with the cluster's version.
    let status = cp.sh_ok(&format!(
        "{} status --control-plane 127.0.0.1:5170 -o json",
        bin("bulwarkctl").display()
    ))?;
    let status: Value = serde_json::from_str(&status)?;
    assert_eq!(status["proxies"][0]["in_sync"], true, "{status}");
    Ok(())
}
