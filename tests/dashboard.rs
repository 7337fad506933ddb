//! The shipped Grafana dashboard (docs/grafana/poolpilot-dashboard.json) against the real
//! thing: a running agent, scraped by a real Prometheus (Debian's `prometheus`, installed by
//! scripts/test.sh). Every query of every panel and variable must evaluate without error in
//! Prometheus, every metric it names must be one the agent exports, and every metric the agent
//! exports must be on the dashboard. Counters with labels known up front are exported at 0
//! from the start, so that `increase()` sees their first rise. The shipped alerting rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`). Waits are bounded
//! polls of observable conditions. The exposition itself passes `promtool check metrics`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::until;

/// Prometheus's answer to an instant query: (status, result).
async fn query(prom: &str, q: &str) -> (String, Vec<serde_json::Value>, String) {
    let answer = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await;
    let v: serde_json::Value = match answer {
        Ok(r) => r.json().await.unwrap_or_default(),
        // Not listening yet: the caller's bounded wait asks again.
        Err(e) => {
            return (
                "unreachable".into(),
                Vec::new(),
                e.without_url().to_string(),
            );
        }
    };
    (
        v["status"].as_str().unwrap_or("").to_string(),
        v["data"]["result"].as_array().cloned().unwrap_or_default(),
        v["error"].as_str().unwrap_or("").to_string(),
    )
}

/// What Grafana substitutes before a query reaches Prometheus.
fn grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
        .replace("$pool", ".*")
}

/// The metrics an expression names: poolpilot's own and the standard `process_` families.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for prefix in ["poolpilot_", "process_"] {
        for (i, _) in expr.match_indices(prefix) {
            if expr[..i].ends_with(word) {
                continue;
            }
            let tail = &expr[i..];
            let end = tail.find(|c: char| !word(c)).unwrap_or(tail.len());
            out.insert(tail[..end].to_string());
        }
    }
    out
}

/// `promtool check metrics` on an exposition: the text format is valid (histograms
/// included) and the names pass its lint (units, `_total` on counters).
fn promtool_check_metrics(exposition: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_works_on_a_real_prometheus_scraping_the_agent() {
    // The agent, with a pool, an alert, a notifier and the webhook receiver, so that every
    // metric family has series.
    let emu = common::emulator(common::options()).await;
    let agent_dir = common::AgentDir::new(
        "dash",
        &emu.url(),
        "notifiers:\n  - { name: log, kind: log }\npools:\n  - { name: w, min: 2, max: 4 }\nalerts:\n  - { name: small, scope: pool, pool: w, when: 'size < 1', notify: [log] }\n",
        common::KeyIn::File,
        "poll: { metrics: 200ms, events: 1s }\nwebhook: { secret_file: hook-secret }\n",
    );
    let dir = agent_dir.dir.clone();
    std::fs::write(dir.join("hook-secret"), "s3cr3t").unwrap();
    let common::InProcessAgent {
        task: agent,
        stop: stop_tx,
        ..
    } = agent_dir.spawn();
    let agent_url = agent_dir.base();
    let agent_port = agent_dir.port;
    until("the agent is ready", 30, async || {
        reqwest::get(format!("{agent_url}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    // A real Prometheus scraping it every second.
    let prom_port = common::free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: poolpilot\n    static_configs: [{{ targets: ['127.0.0.1:{agent_port}'] }}]\n"
        ),
    )
    .unwrap();
    let _prom = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start prometheus: {e}; scripts/test.sh installs it (Debian package prometheus)"));
    let prom = format!("http://127.0.0.1:{prom_port}");
    until("prometheus has scraped the agent 3 times", 60, async || {
        let (_, r, _) = query(&prom, "count_over_time(poolpilot_up[1m])").await;
        r.first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n >= 3.0)
    })
    .await;

    // A route with a parameter and a path no route has, so that both route labels exist.
    for path in ["/api/v1/pools/w", "/no/such/page"] {
        reqwest::get(format!("{agent_url}{path}")).await.unwrap();
    }
    // What the agent exports: metric families, with a histogram's series names.
    let exposition = reqwest::get(format!("{agent_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut families = BTreeSet::new();
    let mut series_names = BTreeSet::new();
    for l in exposition.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            families.insert(name.to_string());
            series_names.insert(name.to_string());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    series_names.insert(format!("{name}{s}"));
                }
            }
        }
    }
    assert!(families.len() >= 10, "{exposition}");
    promtool_check_metrics(&exposition);
    // The agent's own API is labelled with route templates, never raw paths.
    for series in [
        "poolpilot_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/pools/{pool}\",code=\"200\"} ",
        "poolpilot_http_request_duration_seconds_count{method=\"GET\",route=\"unmatched\",code=\"404\"} ",
        "poolpilot_http_request_duration_seconds_bucket{method=\"GET\",route=\"/readyz\",code=\"200\",le=\"+Inf\"} ",
        "poolpilot_loop_turn_duration_seconds_bucket{le=\"+Inf\"} ",
        "poolpilot_pool_desired_sandboxes{pool=\"w\"} ",
        "poolpilot_pool_min_sandboxes{pool=\"w\"} 2",
        "poolpilot_pool_max_sandboxes{pool=\"w\"} 4",
        "poolpilot_pool_pending_sandboxes{pool=\"w\"} ",
        "poolpilot_team_sandboxes{state=\"running\"} ",
    ] {
        assert!(
            exposition.contains(series),
            "{series} missing:\n{exposition}"
        );
    }
    assert!(
        !exposition.contains("/pools/w\"") && !exposition.contains("/no/such"),
        "a raw path became a label:\n{exposition}"
    );
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "poolpilot_e2b_request_duration_seconds",
    ] {
        assert!(
            exposition.contains(&format!("\n# TYPE {family} ")),
            "{family} missing:\n{exposition}"
        );
    }
    // Known label combinations are there before anything happened to them.
    for kind in ["create", "kill", "set_timeout", "pause", "notify"] {
        for result in ["ok", "failed", "refused", "dry_run"] {
            let series = format!("poolpilot_actions_total{{kind=\"{kind}\",result=\"{result}\"}} ");
            assert!(
                exposition.contains(&series),
                "{series} missing:\n{exposition}"
            );
        }
    }
    for series in [
        "poolpilot_ticks_total{result=\"failed\"} ",
        "poolpilot_rule_reloads_total{result=\"failed\"} 0",
        "poolpilot_webhook_deliveries_total{outcome=\"bad_signature\"} 0",
        "poolpilot_notifications_total{notifier=\"log\",result=\"failed\"} 0",
        "poolpilot_dry_run{pool=\"w\"} 0",
    ] {
        assert!(
            exposition.contains(series),
            "{series} missing:\n{exposition}"
        );
    }
    let build = format!(
        "poolpilot_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(exposition.contains(&build), "{build} missing");

    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("docs/grafana/poolpilot-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id: {p}"
        );
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap();
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: the data source is the variable"
        );
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for m in metric_names(expr) {
                assert!(
                    series_names.contains(&m),
                    "{title}: {m} is not exported by the agent"
                );
                used.insert(
                    m.trim_end_matches("_bucket")
                        .trim_end_matches("_sum")
                        .trim_end_matches("_count")
                        .to_string(),
                );
            }
            let (status, _, error) = query(&prom, &grafana(expr)).await;
            assert_eq!(status, "success", "{title}: {expr}: {error}");
            queries += 1;
        }
    }
    assert!(queries >= 15);
    for f in &families {
        assert!(used.contains(f), "{f} is exported but on no panel");
    }

    // The queries a person looks at first show the running agent.
    let (_, up, _) = query(
        &prom,
        &grafana("min(poolpilot_up{instance=~\"$instance\"})"),
    )
    .await;
    assert_eq!(up[0]["value"][1], "1");
    let actual =
        "sum by (pool) (poolpilot_pool_actual_sandboxes{instance=~\"$instance\",pool=~\"$pool\"})";
    assert!(
        dash.to_string().contains(&actual.replace('"', "\\\"")),
        "the dashboard plots actual pool size"
    );
    let (_, r, _) = query(&prom, &grafana(actual)).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["metric"]["pool"], "w");
    // The template variables resolve to this agent and this pool.
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let def = v["definition"].as_str().unwrap();
        let inner = def
            .strip_prefix("label_values(")
            .unwrap()
            .strip_suffix(')')
            .unwrap();
        let (selector, label) = inner.rsplit_once(", ").unwrap();
        let values: serde_json::Value = reqwest::Client::new()
            .get(format!("{prom}/api/v1/label/{label}/values"))
            .query(&[("match[]", grafana(selector))])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let values = values["data"].as_array().unwrap();
        assert!(
            !values.is_empty(),
            "variable {}: no values for {def}",
            v["name"]
        );
    }

    // The shipped alerting rules for poolpilot itself: valid for promtool, and every metric
    // they name is exported.
    let rules_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/prometheus/poolpilot-alerts.yml");
    let check = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules_file)
        .output()
        .expect("promtool (Debian package prometheus) is installed");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let unit = std::process::Command::new("promtool")
        .args(["test", "rules", "poolpilot-alerts.test.yml"])
        .current_dir(rules_file.parent().unwrap())
        .output()
        .expect("promtool (Debian package prometheus) is installed");
    assert!(
        unit.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&unit.stdout),
        String::from_utf8_lossy(&unit.stderr)
    );
    let text = std::fs::read_to_string(&rules_file).unwrap();
    for m in metric_names(&text) {
        assert!(
            series_names.contains(&m),
            "alert rules: {m} is not exported"
        );
    }
    for l in text.lines().filter_map(|l| l.trim().strip_prefix("expr: ")) {
        if l.starts_with('|') {
            continue;
        }
        let (status, _, error) = query(&prom, l).await;
        assert_eq!(status, "success", "{l}: {error}");
    }

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("shut down in time")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
