//! Emulator responses validate against E2B's OpenAPI spec (tests/data/e2b-sandboxes.yml, a
//! trimmed copy of e2b-dev/infra's spec/openapi.yml) wherever the spec covers them.
//!
//! For each exercised call the test looks up, in the spec itself, the schema of the status the
//! emulator answered with: a status the spec does not declare for that path fails the test.

mod common;

use jsonschema::Draft;
use reqwest::Method;
use serde_json::{Value, json};

fn spec() -> Value {
    let text = include_str!("data/e2b-sandboxes.yml");
    let mut v: Value = serde_saphyr::from_str(text).expect("spec parses");
    to_json_schema(&mut v);
    v
}

/// OpenAPI 3.0 schemas to JSON Schema: `nullable` becomes a null type.
fn to_json_schema(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type").cloned()
            {
                map.insert("type".into(), json!([t, "null"]));
            }
            for child in map.values_mut() {
                to_json_schema(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => spec
            .pointer(r.trim_start_matches('#'))
            .expect("ref resolves"),
        None => v,
    }
}

/// The response object the spec declares, or a failure naming what is undeclared.
fn declared<'a>(spec: &'a Value, path: &str, method: &str, status: u16) -> &'a Value {
    let op = spec["paths"][path][method.to_lowercase()].as_object();
    let op = op.unwrap_or_else(|| panic!("spec has no {method} {path}"));
    let resp = op["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("spec does not declare status {status} for {method} {path}"));
    resolve(spec, resp)
}

fn validate(spec: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let resp = declared(spec, path, method, status);
    let Some(schema) = resp.pointer("/content/application~1json/schema") else {
        assert!(
            body.is_null(),
            "{method} {path} {status} has no body in the spec, got {body}"
        );
        return;
    };
    let mut root = json!({ "components": spec["components"].clone() });
    root.as_object_mut()
        .unwrap()
        .extend(schema.as_object().unwrap().clone());
    let validator = jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {errors:?}\nbody: {body}"
    );
}

struct Api {
    base: String,
    http: reqwest::Client,
    spec: Value,
}

impl Api {
    /// Calls the emulator and validates the answer against `spec_path`'s declaration.
    async fn call(
        &self,
        method: Method,
        url_path: &str,
        spec_path: &str,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{url_path}", self.base))
            .header("X-API-Key", common::KEY);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        let v: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        validate(&self.spec, spec_path, method.as_str(), status, &v);
        (status, v, headers)
    }
}

#[tokio::test]
async fn responses_match_the_spec() {
    let mut opts = common::options();
    opts.clock = poolpilot::emulator::Clock::Manual;
    let emu = common::emulator(opts).await;
    let api = Api {
        base: emu.url(),
        http: reqwest::Client::new(),
        spec: spec(),
    };
    let adv = |by: &'static str| {
        let url = format!("{}/_emulator/advance", emu.url());
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({ "by": by }))
                .send()
                .await
                .unwrap()
        }
    };

    let (s, created, _) = api
        .call(
            Method::POST,
            "/sandboxes",
            "/sandboxes",
            Some(json!({"templateID": "base", "metadata": {"a": "b"}, "timeout": 300})),
        )
        .await;
    assert_eq!(s, 201);
    let id = created["sandboxID"].as_str().unwrap().to_string();
    // v2 creates answer the same Sandbox schema (v2 is not in this spec revision).
    let (s, v2, _) = api
        .call(
            Method::POST,
            "/v2/sandboxes",
            "/sandboxes",
            Some(json!({"templateID": "base"})),
        )
        .await;
    assert_eq!(s, 201);
    let id2 = v2["sandboxID"].as_str().unwrap().to_string();
    adv("6s").await;

    assert_eq!(
        api.call(Method::GET, "/sandboxes", "/sandboxes", None)
            .await
            .0,
        200
    );
    let (s, _, headers) = api
        .call(Method::GET, "/v2/sandboxes?limit=1", "/v2/sandboxes", None)
        .await;
    assert_eq!(s, 200);
    let declared_headers = declared(&api.spec, "/v2/sandboxes", "GET", 200)["headers"]
        .as_object()
        .unwrap();
    for h in ["X-Next-Token", "X-Total-Running"] {
        assert!(declared_headers.contains_key(h));
        assert!(headers.contains_key(h), "{h} missing");
    }
    assert_eq!(headers["x-total-running"], "2");
    assert_eq!(
        api.call(
            Method::GET,
            &format!("/sandboxes/{id}"),
            "/sandboxes/{sandboxID}",
            None
        )
        .await
        .0,
        200
    );
    let (s, m, _) = api
        .call(
            Method::GET,
            &format!("/sandboxes/{id}/metrics"),
            "/sandboxes/{sandboxID}/metrics",
            None,
        )
        .await;
    // Samples at 1 s and then every 500 ms (the test interval) up to 6 s.
    assert_eq!((s, m.as_array().unwrap().len()), (200, 11));
    let (s, b, _) = api
        .call(
            Method::GET,
            &format!("/sandboxes/metrics?sandbox_ids={id},{id2}"),
            "/sandboxes/metrics",
            None,
        )
        .await;
    assert_eq!((s, b["sandboxes"].as_object().unwrap().len()), (200, 2));
    let t = api
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/timeout"),
            "/sandboxes/{sandboxID}/timeout",
            Some(json!({"timeout": 60})),
        )
        .await;
    assert_eq!(t.0, 204);
    let p = format!("/sandboxes/{id}/pause");
    assert_eq!(
        api.call(Method::POST, &p, "/sandboxes/{sandboxID}/pause", None)
            .await
            .0,
        204
    );
    assert_eq!(
        api.call(Method::POST, &p, "/sandboxes/{sandboxID}/pause", None)
            .await
            .0,
        409
    );
    let r = format!("/sandboxes/{id}/resume");
    assert_eq!(
        api.call(
            Method::POST,
            &r,
            "/sandboxes/{sandboxID}/resume",
            Some(json!({"timeout": 30}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        api.call(
            Method::POST,
            &r,
            "/sandboxes/{sandboxID}/resume",
            Some(json!({"timeout": 30}))
        )
        .await
        .0,
        409
    );
    let c = format!("/sandboxes/{id}/connect");
    assert_eq!(
        api.call(
            Method::POST,
            &c,
            "/sandboxes/{sandboxID}/connect",
            Some(json!({"timeout": 30}))
        )
        .await
        .0,
        200
    );
    api.call(Method::POST, &p, "/sandboxes/{sandboxID}/pause", None)
        .await;
    assert_eq!(
        api.call(
            Method::POST,
            &c,
            "/sandboxes/{sandboxID}/connect",
            Some(json!({"timeout": 30}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        api.call(
            Method::POST,
            &c,
            "/sandboxes/{sandboxID}/connect",
            Some(json!({}))
        )
        .await
        .0,
        400
    );
    // The v2 connect (not in this spec revision) answers like v1 and takes what the SDKs send
    // for `Sandbox.connect(id)`: `{}` or no body, with E2B's default timeout of 300 s.
    let c2 = format!("/v2/sandboxes/{id}/connect");
    let spec_connect = "/sandboxes/{sandboxID}/connect";
    let (status, _, _) = api
        .call(Method::POST, &c2, spec_connect, Some(json!({})))
        .await;
    assert_eq!(status, 200, "v2 connect with {{}} to a running sandbox");
    api.call(Method::POST, &p, "/sandboxes/{sandboxID}/pause", None)
        .await;
    let (status, _, _) = api.call(Method::POST, &c2, spec_connect, None).await;
    assert_eq!(status, 201, "v2 connect without a body resumes");
    let (_, info, _) = api
        .call(
            Method::GET,
            &format!("/sandboxes/{id}"),
            "/sandboxes/{sandboxID}",
            None,
        )
        .await;
    let end = info["endAt"].as_str().unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(end).unwrap();
    let stats: Value = api
        .http
        .get(format!("{}/_emulator/stats", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = chrono::DateTime::parse_from_rfc3339(stats["now"].as_str().unwrap()).unwrap();
    let left = (end - now).num_seconds();
    assert!(
        (295..=300).contains(&left),
        "resumed for 300 s, {left} s left"
    );
    let d = format!("/sandboxes/{id}");
    assert_eq!(
        api.call(Method::DELETE, &d, "/sandboxes/{sandboxID}", None)
            .await
            .0,
        204
    );
    assert_eq!(
        api.call(Method::DELETE, &d, "/sandboxes/{sandboxID}", None)
            .await
            .0,
        404
    );
    assert_eq!(
        api.call(Method::GET, &d, "/sandboxes/{sandboxID}", None)
            .await
            .0,
        404
    );
    assert_eq!(
        api.call(
            Method::GET,
            &format!("{d}/metrics?start=9&end=1"),
            "/sandboxes/{sandboxID}/metrics",
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        api.call(Method::GET, "/v2/sandboxes?limit=0", "/v2/sandboxes", None)
            .await
            .0,
        400
    );
    assert_eq!(
        api.call(
            Method::GET,
            "/sandboxes/metrics",
            "/sandboxes/metrics",
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        api.call(
            Method::POST,
            "/sandboxes",
            "/sandboxes",
            Some(json!({"templateID": 7}))
        )
        .await
        .0,
        400
    );
    // 401 against the spec too.
    let r = reqwest::Client::new()
        .get(format!("{}/v2/sandboxes", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    validate(
        &api.spec,
        "/v2/sandboxes",
        "GET",
        401,
        &r.json().await.unwrap(),
    );
}

#[test]
#[should_panic(expected = "memCache")]
fn the_check_rejects_a_metric_missing_a_field() {
    let sample = json!([{ "timestamp": "2026-01-01T00:00:00Z", "timestampUnix": 1, "cpuCount": 2,
        "cpuUsedPct": 1.0, "memUsed": 1, "memTotal": 2, "diskUsed": 1, "diskTotal": 2 }]);
    validate(
        &spec(),
        "/sandboxes/{sandboxID}/metrics",
        "GET",
        200,
        &sample,
    );
}

#[test]
#[should_panic(expected = "does not declare status 418")]
fn the_check_rejects_an_undeclared_status() {
    validate(&spec(), "/v2/sandboxes", "GET", 418, &json!({}));
}
