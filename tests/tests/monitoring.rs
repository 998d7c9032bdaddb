//! The chart's Grafana dashboards (`charts/bulwark/dashboards/`) and Prometheus alert rules
//! (`charts/bulwark/alerts/`), checked against what Bulwark exports: every PromQL expression
//! parses (promql-parser, Prometheus's grammar), every metric it selects is a family
//! documented in docs/operations.md (the proxy's, which a unit test keeps equal to the code)
//! or docs/configuration.md (the control plane's), every label it filters, groups or matches
//! on is one of that family's or one the scrape adds, and every label a legend or an
//! annotation prints is one the result still carries. Then the chart renders them, with
//! Helm's SDK, as Grafana's sidecar and the Prometheus Operator read them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use bulwark_tests::{py_script, python, workspace_root};
use promql_parser::parser::{self, Expr, LabelModifier};
use serde_json::Value;

/// Labels Prometheus adds to every scraped series: the target's (`job`, `instance`) and the
/// Kubernetes service discovery relabelling the dashboards assume (`namespace`, `pod`).
/// `le` is no scrape label: it is allowed on a histogram's `_bucket` series only.
const SCRAPE_LABELS: [&str; 4] = ["namespace", "pod", "job", "instance"];

/// The dashboards, and the template variables each must offer.
const DASHBOARDS: [(&str, &[&str]); 3] = [
    ("mesh", &["datasource", "namespace"]),
    ("target", &["datasource", "namespace", "target"]),
    ("workload", &["datasource", "namespace", "pod"]),
];

/// What Grafana puts for its built-in variables when it runs a query.
const GRAFANA_BUILTINS: [(&str, &str); 3] = [
    ("__rate_interval", "5m"),
    ("__interval", "1m"),
    ("__range", "1h"),
];

/// A documented metric family: its labels, and whether it is a histogram (whose series are
/// `_bucket`, `_sum` and `_count`).
#[derive(Debug)]
struct Family {
    labels: BTreeSet<String>,
    histogram: bool,
}

/// One selector's metric: the family, and whether it is a histogram's `_bucket` series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Selected {
    family: String,
    bucket: bool,
}

/// Every family the proxy and the control plane document.
#[derive(Debug)]
struct Documented(BTreeMap<String, Family>);

impl Documented {
    fn load(root: &Path) -> Result<Self> {
        let mut families =
            proxy_families(&std::fs::read_to_string(root.join("docs/operations.md"))?);
        ensure!(
            families.contains_key("bulwark_endpoints"),
            "no metrics table in docs/operations.md"
        );
        let cp = control_plane_families(&std::fs::read_to_string(
            root.join("docs/configuration.md"),
        )?);
        ensure!(
            cp.contains_key("bulwark_cp_nacks_total"),
            "no control-plane metrics in docs/configuration.md"
        );
        families.extend(cp);
        Ok(Self(families))
    }

    /// The family a series name belongs to, if one is documented.
    fn resolve(&self, name: &str) -> Option<Selected> {
        if self.0.contains_key(name) {
            return Some(Selected {
                family: name.to_string(),
                bucket: false,
            });
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            self.0.get(base).filter(|f| f.histogram).map(|_| Selected {
                family: base.to_string(),
                bucket: *suffix == "_bucket",
            })
        })
    }

    /// Whether series of `s` carry `label`.
    fn allows(&self, s: &Selected, label: &str) -> bool {
        SCRAPE_LABELS.contains(&label)
            || (s.bucket && label == "le")
            || self
                .0
                .get(&s.family)
                .is_some_and(|f| f.labels.contains(label))
    }

    /// Every label series of `s` carry.
    fn labels_of(&self, s: &Selected) -> BTreeSet<String> {
        let mut labels: BTreeSet<String> = SCRAPE_LABELS.iter().map(|l| l.to_string()).collect();
        if let Some(f) = self.0.get(&s.family) {
            labels.extend(f.labels.iter().cloned());
        }
        if s.bucket {
            labels.insert("le".into());
        }
        labels
    }
}

/// The rows of operations.md's metrics table: `| \`name\` | type | labels | …`.
fn proxy_families(doc: &str) -> BTreeMap<String, Family> {
    doc.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            if !(name.starts_with("bulwark_") || name.starts_with("process_")) {
                return None;
            }
            let labels = code_spans(cells.get(3)?).map(str::to_string).collect();
            let family = Family {
                labels,
                histogram: *cells.get(2)? == "histogram",
            };
            Some((name.to_string(), family))
        })
        .collect()
}

/// configuration.md's paragraph "Control-plane metrics: `name`, `name{label,…}` (histogram, …)".
fn control_plane_families(doc: &str) -> BTreeMap<String, Family> {
    let Some(start) = doc.find("Control-plane metrics:") else {
        return BTreeMap::new();
    };
    let para = &doc[start..];
    let para = &para[..para.find("\n\n").unwrap_or(para.len())];
    let pieces: Vec<&str> = para.split('`').collect();
    let mut families = BTreeMap::new();
    for (i, span) in pieces.iter().enumerate().skip(1).step_by(2) {
        if !span.starts_with("bulwark_cp_") {
            continue;
        }
        let (name, labels) = match span.split_once('{') {
            Some((name, rest)) => (
                name,
                rest.trim_end_matches('}')
                    .split(',')
                    .map(|l| l.split('=').next().unwrap_or("").trim().to_string())
                    .collect(),
            ),
            None => (*span, BTreeSet::new()),
        };
        let after = pieces.get(i + 1).copied().unwrap_or("");
        let family = Family {
            labels,
            histogram: after.trim_start().starts_with("(histogram"),
        };
        families.insert(name.to_string(), family);
    }
    families
}

/// The text between backticks, every other piece.
fn code_spans(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// The expression with Grafana's variables replaced by values a query could have: the
/// built-ins by durations, the dashboard's own (`$name`, `${name}`, `${name:format}`) by a
/// label value. A variable the dashboard does not define is an error.
fn substitute(expr: &str, defined: &BTreeSet<String>) -> Result<String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').context("an unclosed ${")?;
            let inner = &braced[..end];
            (inner.split(':').next().unwrap_or(inner), end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match GRAFANA_BUILTINS.iter().find(|(n, _)| *n == name) {
            Some((_, value)) => out.push_str(value),
            None if name.starts_with("__") => bail!("unknown Grafana variable ${name}"),
            None if defined.contains(name) => out.push('x'),
            None => bail!("${name} is not a variable of this dashboard"),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `expr` and checks its selectors and label lists against the documented families;
/// returns the families it selects, or the problems found.
fn check_expr(docs: &Documented, expr: &str) -> Result<(Expr, BTreeSet<String>), Vec<String>> {
    let ast = parser::parse(expr).map_err(|e| vec![format!("does not parse: {e}")])?;
    let mut problems = Vec::new();
    let selected = walk(docs, &ast, &mut problems);
    if problems.is_empty() {
        Ok((ast, selected.into_iter().map(|s| s.family).collect()))
    } else {
        Err(problems)
    }
}

/// The metrics `expr` selects; pushes a problem for every undocumented metric, and every
/// label matched, grouped by or joined on that one of the series below does not carry.
fn walk(docs: &Documented, expr: &Expr, problems: &mut Vec<String>) -> BTreeSet<Selected> {
    match expr {
        Expr::VectorSelector(vs) => selector(docs, vs, problems),
        Expr::MatrixSelector(ms) => selector(docs, &ms.vs, problems),
        Expr::Aggregate(a) => {
            let mut under = walk(docs, &a.expr, problems);
            if let Some(p) = &a.param {
                under.extend(walk(docs, p, problems));
            }
            if let Some(m) = &a.modifier {
                must_carry(docs, &m.labels().labels, &under, problems);
            }
            under
        }
        Expr::Binary(b) => {
            let mut under = walk(docs, &b.lhs, problems);
            under.extend(walk(docs, &b.rhs, problems));
            if let Some(m) = &b.modifier {
                if let Some(matching) = &m.matching {
                    must_carry(docs, &matching.labels().labels, &under, problems);
                }
                if let Some(group) = m.card.labels() {
                    must_carry(docs, &group.labels, &under, problems);
                }
            }
            under
        }
        Expr::Call(c) => c
            .args
            .args
            .iter()
            .flat_map(|a| walk(docs, a, problems))
            .collect(),
        Expr::Paren(p) => walk(docs, &p.expr, problems),
        Expr::Unary(u) => walk(docs, &u.expr, problems),
        Expr::Subquery(s) => walk(docs, &s.expr, problems),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => BTreeSet::new(),
    }
}

/// Pushes a problem for each of `labels` that a series of `under` does not carry.
fn must_carry(
    docs: &Documented,
    labels: &[String],
    under: &BTreeSet<Selected>,
    problems: &mut Vec<String>,
) {
    for l in labels {
        for s in under.iter().filter(|s| !docs.allows(s, l)) {
            problems.push(format!("{} has no label {l}", s.family));
        }
    }
}

/// A selector's family; every label it matches on must be one the family's series carry.
fn selector(
    docs: &Documented,
    vs: &parser::VectorSelector,
    problems: &mut Vec<String>,
) -> BTreeSet<Selected> {
    let Some(name) = &vs.name else {
        problems.push(format!("{vs}: a selector without a metric name"));
        return BTreeSet::new();
    };
    let Some(s) = docs.resolve(name) else {
        problems.push(format!("{name} is not a documented metric"));
        return BTreeSet::new();
    };
    let matchers = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten());
    for m in matchers.filter(|m| m.name != "__name__") {
        if !docs.allows(&s, &m.name) {
            problems.push(format!("{name} has no label {} to match", m.name));
        }
    }
    BTreeSet::from([s])
}

/// The labels the series `expr` returns carry (`None`: it is a scalar), for checking the
/// labels a legend or an annotation prints.
fn result_labels(docs: &Documented, expr: &Expr) -> Option<BTreeSet<String>> {
    match expr {
        Expr::VectorSelector(vs) => Some(vs_labels(docs, vs)),
        Expr::MatrixSelector(ms) => Some(vs_labels(docs, &ms.vs)),
        Expr::Aggregate(a) => {
            let inner = result_labels(docs, &a.expr).unwrap_or_default();
            let mut out = match (&a.modifier, a.op.to_string().as_str()) {
                (_, "topk" | "bottomk" | "limitk" | "limit_ratio") => return Some(inner),
                (Some(LabelModifier::Include(l)), _) => l.labels.iter().cloned().collect(),
                (Some(LabelModifier::Exclude(l)), _) => inner
                    .into_iter()
                    .filter(|x| !l.labels.contains(x))
                    .collect(),
                (None, _) => BTreeSet::new(),
            };
            if let (Some(Expr::StringLiteral(s)), "count_values") =
                (a.param.as_deref(), a.op.to_string().as_str())
            {
                out.insert(s.val.clone());
            }
            Some(out)
        }
        Expr::Binary(b) => {
            let (l, r) = (result_labels(docs, &b.lhs), result_labels(docs, &b.rhs));
            match (b.op.to_string().as_str(), l, r) {
                ("or", Some(l), Some(r)) => Some(l.intersection(&r).cloned().collect()),
                (_, Some(l), _) => Some(l),
                (_, None, r) => r,
            }
        }
        Expr::Call(c) => match c.func.name {
            "time" | "scalar" => None,
            "vector" | "absent" | "absent_over_time" => Some(BTreeSet::new()),
            name => {
                let mut labels = c.args.args.iter().find_map(|a| result_labels(docs, a))?;
                if name == "histogram_quantile" {
                    labels.remove("le");
                }
                Some(labels)
            }
        },
        Expr::Paren(p) => result_labels(docs, &p.expr),
        Expr::Unary(u) => result_labels(docs, &u.expr),
        Expr::Subquery(s) => result_labels(docs, &s.expr),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => None,
    }
}

fn vs_labels(docs: &Documented, vs: &parser::VectorSelector) -> BTreeSet<String> {
    vs.name
        .as_deref()
        .and_then(|n| docs.resolve(n))
        .map(|s| docs.labels_of(&s))
        .unwrap_or_default()
}

/// The names in `text` after each `open` (`{{` for a legend, `$labels.` for an annotation).
fn printed_labels<'a>(text: &'a str, open: &str) -> Vec<&'a str> {
    text.split(open)
        .skip(1)
        .map(|rest| {
            let rest = rest.trim_start();
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// Every panel of a dashboard, rows' nested panels too.
fn panels(list: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in list.as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(&p["panels"]));
    }
    out
}

/// A dashboard template variable's PromQL: `label_values(EXPR, LABEL)` (LABEL must be one
/// EXPR's series carry) or `query_result(EXPR)`.
fn variable_query(docs: &Documented, query: &str) -> Result<String, Vec<String>> {
    if let Some(inner) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        let (expr, label) = inner
            .rsplit_once(',')
            .ok_or_else(|| vec![format!("label_values without a metric: {query}")])?;
        let (expr, label) = (expr.trim(), label.trim());
        let (ast, _) = check_expr(docs, expr)?;
        if !result_labels(docs, &ast)
            .unwrap_or_default()
            .contains(label)
        {
            return Err(vec![format!("{expr} has no label {label}")]);
        }
        return Ok(expr.to_string());
    }
    if let Some(expr) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return Ok(expr.to_string());
    }
    Err(vec![format!(
        "a variable query this test does not read: {query}"
    )])
}

/// A PromQL expression found in a dashboard: where, its text, the legend it is drawn with,
/// and whether it is a template variable's query.
#[derive(Debug)]
struct Found {
    at: String,
    expr: String,
    legend: String,
    variable: bool,
}

/// A dashboard's template variables: the names defined, and the queries of those that query
/// Prometheus.
fn variables(name: &str, d: &Value, problems: &mut Vec<String>) -> (BTreeSet<String>, Vec<Found>) {
    let mut defined = BTreeSet::new();
    let mut found = Vec::new();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let vname = v["name"].as_str().unwrap_or("?");
        defined.insert(vname.to_string());
        match v["type"].as_str() {
            Some("datasource") if v["query"] == "prometheus" => {}
            Some("query") => {
                let query = v["query"]["query"].as_str().or(v["query"].as_str());
                let query = query.unwrap_or("").to_string();
                if v["definition"].as_str().is_some_and(|def| def != query) {
                    problems.push(format!("{name} ${vname}: its definition is not its query"));
                }
                if v["datasource"]["uid"] != "${datasource}" {
                    problems.push(format!("{name} ${vname}: not on the datasource variable"));
                }
                found.push(Found {
                    at: format!("{name} ${vname}"),
                    expr: query,
                    legend: String::new(),
                    variable: true,
                });
            }
            other => problems.push(format!("{name} ${vname}: a variable of type {other:?}")),
        }
    }
    (defined, found)
}

/// The queries of a dashboard's panels, rows' nested panels too. Every panel has a unique id
/// and a place, and queries the datasource variable; every range is `$__rate_interval`.
fn panel_queries(name: &str, d: &Value, problems: &mut Vec<String>) -> Vec<Found> {
    let mut ids = BTreeSet::new();
    let mut found = Vec::new();
    for p in panels(&d["panels"]) {
        let title = p["title"].as_str().unwrap_or("?");
        if !ids.insert(p["id"].as_u64()) || p["gridPos"]["w"].as_u64().is_none() {
            problems.push(format!("{name} '{title}': no unique id or no gridPos"));
        }
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() || p["datasource"]["uid"] != "${datasource}" {
            problems.push(format!(
                "{name} '{title}': no targets, or not on $datasource"
            ));
        }
        for t in &targets {
            let at = format!("{name} '{title}' {}", t["refId"].as_str().unwrap_or("?"));
            let expr = t["expr"].as_str().unwrap_or("").to_string();
            if t["datasource"]["uid"] != "${datasource}" {
                problems.push(format!("{at}: not on $datasource"));
            }
            if expr
                .split('[')
                .skip(1)
                .any(|r| !r.starts_with("$__rate_interval]"))
            {
                problems.push(format!("{at}: a range other than [$__rate_interval]"));
            }
            let legend = t["legendFormat"].as_str().unwrap_or("").to_string();
            found.push(Found {
                at,
                expr,
                legend,
                variable: false,
            });
        }
    }
    found
}

/// Checks one query of a dashboard; adds the families it selects to `selected`.
fn check_query(
    docs: &Documented,
    q: &Found,
    defined: &BTreeSet<String>,
    selected: &mut BTreeSet<String>,
) -> Vec<String> {
    let at = &q.at;
    let expr = match substitute(&q.expr, defined) {
        Ok(e) if q.variable => variable_query(docs, &e),
        Ok(e) => Ok(e),
        Err(e) => Err(vec![e.to_string()]),
    };
    let checked = expr.and_then(|e| check_expr(docs, &e));
    let (ast, families) = match checked {
        Ok(c) => c,
        Err(ps) => {
            return ps
                .into_iter()
                .map(|p| format!("{at}: {p} ({})", q.expr))
                .collect();
        }
    };
    selected.extend(families);
    let labels = result_labels(docs, &ast).unwrap_or_default();
    printed_labels(&q.legend, "{{")
        .into_iter()
        .filter(|l| !labels.contains(*l))
        .map(|l| {
            format!(
                "{at}: the legend prints {l}, which {} does not return",
                q.expr
            )
        })
        .collect()
}

/// One dashboard's problems; adds the families its expressions select to `selected`.
fn check_dashboard(
    docs: &Documented,
    name: &str,
    d: &Value,
    wanted_vars: &[&str],
    selected: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if d["uid"].as_str().is_none_or(str::is_empty) || d["title"].as_str().is_none() {
        problems.push(format!("{name}: no uid or no title"));
    }
    let (defined, mut queries) = variables(name, d, &mut problems);
    for w in wanted_vars.iter().filter(|w| !defined.contains(**w)) {
        problems.push(format!("{name}: no variable {w}"));
    }
    queries.extend(panel_queries(name, d, &mut problems));
    for q in &queries {
        problems.extend(check_query(docs, q, &defined, selected));
    }
    problems
}

/// The families the dashboards must show between them: traffic, the resilience machinery,
/// mTLS, authorization and discovery.
const DASHBOARD_FAMILIES: [&str; 18] = [
    "bulwark_requests_total",
    "bulwark_request_duration_seconds",
    "bulwark_grpc_responses_total",
    "bulwark_retries_total",
    "bulwark_retries_skipped_total",
    "bulwark_retry_budget_exhausted_total",
    "bulwark_hedges_total",
    "bulwark_outlier_ejections_total",
    "bulwark_endpoints",
    "bulwark_balancer_in_panic",
    "bulwark_bulkhead_rejections_total",
    "bulwark_bulkhead_active",
    "bulwark_detect_learned_opaque_port",
    "bulwark_tls_handshakes_total",
    "bulwark_identity_cert_expiration_timestamp_seconds",
    "bulwark_authz_denied_total",
    "bulwark_discovery_connected",
    "bulwark_discovery_snapshots_rejected_total",
];

#[test]
fn every_dashboard_query_parses_and_names_documented_metrics_and_labels() -> Result<()> {
    let root = workspace_root();
    let docs = Documented::load(&root)?;
    let dir = root.join("charts/bulwark/dashboards");
    let mut files: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".json").map(str::to_string))
        .collect();
    files.sort();
    let names: Vec<&str> = DASHBOARDS.iter().map(|(n, _)| *n).collect();
    assert_eq!(files, names, "the dashboards in {}", dir.display());
    let (mut problems, mut selected, mut uids) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
    for (name, vars) in DASHBOARDS {
        let text = std::fs::read_to_string(dir.join(format!("{name}.json")))?;
        let d: Value = serde_json::from_str(&text).with_context(|| format!("{name}.json"))?;
        if !uids.insert(d["uid"].to_string()) {
            problems.push(format!("{name}: a uid another dashboard has"));
        }
        problems.extend(check_dashboard(&docs, name, &d, vars, &mut selected));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let missing: Vec<_> = DASHBOARD_FAMILIES
        .iter()
        .filter(|f| !selected.contains(**f))
        .collect();
    assert!(missing.is_empty(), "no dashboard shows {missing:?}");
    Ok(())
}

/// The families the alert rules must watch.
const ALERT_FAMILIES: [&str; 11] = [
    "bulwark_retry_budget_exhausted_total",
    "bulwark_endpoints",
    "bulwark_balancer_in_panic",
    "bulwark_identity_cert_expiration_timestamp_seconds",
    "bulwark_identity_certify_total",
    "bulwark_discovery_snapshots_rejected_total",
    "bulwark_discovery_connected",
    "bulwark_requests_total",
    "bulwark_authz_denied_total",
    "bulwark_cp_nacks_total",
    "bulwark_cp_certificates_refused_total",
];

/// The rules file's groups, read as Prometheus reads it.
fn rule_groups(root: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(root.join("charts/bulwark/alerts/bulwark.rules.yaml"))?;
    let file: Value = serde_saphyr::from_str(&text).context("the rules file")?;
    file["groups"].as_array().cloned().context("no groups")
}

/// One alert rule's problems; adds the families it selects to `selected`.
fn check_rule(docs: &Documented, rule: &Value, selected: &mut BTreeSet<String>) -> Vec<String> {
    let name = rule["alert"].as_str().unwrap_or("?");
    let mut problems = Vec::new();
    let severity = rule["labels"]["severity"].as_str();
    if !matches!(severity, Some("warning" | "critical")) {
        problems.push(format!("{name}: severity {severity:?}"));
    }
    let duration = rule["for"].as_str().unwrap_or("");
    let unit = duration.trim_start_matches(|c: char| c.is_ascii_digit());
    if unit.len() == duration.len() || !matches!(unit, "s" | "m" | "h") {
        problems.push(format!("{name}: for {duration:?}"));
    }
    let annotations = ["summary", "description"].map(|k| rule["annotations"][k].as_str());
    if annotations.iter().any(|a| a.is_none_or(str::is_empty)) {
        problems.push(format!("{name}: no summary or no description"));
    }
    let expr = rule["expr"].as_str().unwrap_or("");
    match check_expr(docs, expr) {
        Ok((ast, families)) => {
            selected.extend(families);
            let labels = result_labels(docs, &ast).unwrap_or_default();
            for l in annotations
                .iter()
                .flatten()
                .flat_map(|a| printed_labels(a, "$labels."))
            {
                if !labels.contains(l) {
                    problems.push(format!(
                        "{name}: an annotation prints {l}, which the expression does not return"
                    ));
                }
            }
        }
        Err(ps) => problems.extend(ps.into_iter().map(|p| format!("{name}: {p}"))),
    }
    problems
}

#[test]
fn every_alert_rule_parses_and_names_documented_metrics_and_labels() -> Result<()> {
    let root = workspace_root();
    let docs = Documented::load(&root)?;
    let (mut problems, mut selected, mut names) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
    for group in rule_groups(&root)? {
        let rules = group["rules"].as_array().cloned().unwrap_or_default();
        assert!(!rules.is_empty(), "group {} has no rules", group["name"]);
        for rule in &rules {
            let name = rule["alert"].as_str().context("a rule without alert")?;
            assert!(names.insert(name.to_string()), "two alerts {name}");
            assert!(name.starts_with("Bulwark"), "{name}: not named Bulwark…");
            problems.extend(check_rule(&docs, rule, &mut selected));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let missing: Vec<_> = ALERT_FAMILIES
        .iter()
        .filter(|f| !selected.contains(**f))
        .collect();
    assert!(missing.is_empty(), "no alert watches {missing:?}");
    Ok(())
}

/// The checks themselves refuse what they exist to catch.
#[test]
fn the_checks_refuse_undocumented_metrics_labels_and_variables() -> Result<()> {
    let docs = Documented::load(&workspace_root())?;
    let refused = |expr: &str, why: &str| {
        let problems = check_expr(&docs, expr).err().unwrap_or_default();
        assert!(
            problems.iter().any(|p| p.contains(why)),
            "{expr}: {problems:?}, not {why}"
        );
    };
    refused(
        "rate(bulwark_retry_total[5m])",
        "bulwark_retry_total is not a documented metric",
    );
    refused(
        "bulwark_endpoints{stat=\"ejected\"}",
        "bulwark_endpoints has no label stat",
    );
    refused(
        "sum by (target) (rate(bulwark_request_duration_seconds_count[5m]))",
        "has no label target",
    );
    refused(
        "sum by (le) (rate(bulwark_request_duration_seconds_count[5m]))",
        "has no label le",
    );
    refused(
        "sum by (reason) (bulwark_endpoints) / on (state) bulwark_endpoints",
        "has no label reason",
    );
    refused(
        "max(bulwark_cp_certificates_refused_total{outcome=\"x\"})",
        "has no label outcome",
    );
    refused("sum(rate(bulwark_endpoints[5m])", "does not parse");
    let (ok, _) = check_expr(
        &docs,
        "histogram_quantile(0.99, sum by (le, authority) (rate(bulwark_request_duration_seconds_bucket{pod=\"p\"}[5m])))",
    )
    .map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let labels = result_labels(&docs, &ok).unwrap_or_default();
    assert_eq!(labels, BTreeSet::from(["authority".to_string()]));
    let defined = BTreeSet::from(["namespace".to_string()]);
    let expr = substitute(
        "rate(x{namespace=~\"${namespace:regex}\"}[$__rate_interval])",
        &defined,
    )?;
    assert_eq!(expr, "rate(x{namespace=~\"x\"}[5m])");
    assert!(substitute("x{pod=\"$pod\"}", &defined).is_err());
    Ok(())
}

#[test]
fn the_chart_renders_the_dashboards_and_rules_when_asked() -> Result<()> {
    let root = workspace_root();
    let out = std::process::Command::new(python())
        .arg(py_script("check_monitoring.py"))
        .arg(root.join("charts/bulwark"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("lint ok with dashboards and alerts"),
        "{stdout}"
    );
    assert!(
        stdout.contains("default render ok: no dashboards, no PrometheusRule"),
        "{stdout}"
    );
    assert!(
        stdout.contains("built-in documents valid for Kubernetes"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("dashboard ok:").count(),
        DASHBOARDS.len(),
        "{stdout}"
    );
    let groups = rule_groups(&root)?;
    let alerts: usize = groups
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    let line = format!(
        "{alerts} alerts in {} groups, as in alerts/bulwark.rules.yaml",
        groups.len()
    );
    assert!(stdout.contains(&line), "{line} not in\n{stdout}");
    assert_eq!(stdout.matches("bad values refused").count(), 2, "{stdout}");
    Ok(())
}
