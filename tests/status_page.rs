//! The status page (`GET /`) in a real headless Chromium, driven over the DevTools protocol,
//! against a real agent (`poolpilot run`'s body) and the emulator on loopback: the pool's card
//! and counts, its decision sentence, a member row, an alert appearing and then resolving
//! through live updates (Server-Sent Events) without a reload, the sandbox timeline page, and
//! the same page complete with JavaScript disabled. Screenshots go to
//! `target/test-artifacts/status-page-*.png`.
//!
//! Chromium is Debian's `chromium` (scripts/test.sh installs it); without it this test fails.
//! Every wait is a bounded poll of the DOM or of the agent's API.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Pool `w` held at `n`, and an alert that fires while it has 2 or more, whose message
/// carries markup that the page must show as text.
fn rules(n: u32) -> String {
    format!(
        "pools:\n  - {{ name: w, min: {n}, max: {n} }}\nalerts:\n  - name: w-full\n    scope: pool\n    \
         pool: w\n    when: size >= 2\n    severity: warning\n    message: \"{{pool}} has <b>{{size}}</b> & more\"\n"
    )
}

/// A headless Chromium started for this test, killed (by its own id) when dropped.
struct Chromium {
    child: std::process::Child,
    /// Its user-data-dir, where it writes `DevToolsActivePort`.
    dir: PathBuf,
}

impl Chromium {
    /// Starts `chromium`; fails the test when it is not installed.
    fn start() -> Chromium {
        let dir = common::fresh_dir("status-page-chromium");
        let child = std::process::Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1366,768",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromium is installed (scripts/test.sh installs Debian's chromium)");
        Chromium { child, dir }
    }

    /// The browser's DevTools websocket URL, once Chromium has written it.
    async fn devtools_url(&self) -> String {
        let file = self.dir.join("DevToolsActivePort");
        let mut url = String::new();
        common::until("chromium's DevToolsActivePort", 60, async || {
            let Ok(text) = std::fs::read_to_string(&file) else {
                return false;
            };
            let mut lines = text.lines();
            match (lines.next(), lines.next()) {
                (Some(port), Some(path)) if !port.is_empty() && !path.is_empty() => {
                    url = format!("ws://127.0.0.1:{port}{path}");
                    true
                }
                _ => false,
            }
        })
        .await;
        url
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One page of the browser over the DevTools protocol (a flat session on the browser's socket).
struct Page {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: String,
}

impl Page {
    /// Opens a new tab at about:blank, sized as a 1366x768 laptop screen.
    async fn open(browser: &Chromium) -> Page {
        let (ws, _) = tokio_tungstenite::connect_async(browser.devtools_url().await)
            .await
            .expect("connect to chromium's DevTools");
        let mut page = Page {
            ws,
            next_id: 0,
            session: String::new(),
        };
        let target = page
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        page.session = attached["sessionId"].as_str().expect("a session").into();
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1366, "height": 768, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        page
    }

    /// Calls `method` (on the page's session once attached) and returns its result; fails the
    /// test on a protocol error.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to chromium");
        loop {
            let frame = self
                .ws
                .next()
                .await
                .expect("chromium answers")
                .expect("a frame");
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).expect("JSON from chromium");
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (awaited when it is a promise).
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Navigates to `url` and waits until the document is loaded.
    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait(
            "the page loaded",
            "document.readyState === 'complete' && document.URL !== 'about:blank'",
        )
        .await;
    }

    /// Polls `expression` until it is `true`, failing the test after a minute naming `what`.
    async fn wait(&mut self, what: &str, expression: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.eval(expression).await != json!(true) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element matching `selector` ("" when none).
    async fn text(&mut self, selector: &str) -> String {
        let js = format!(
            "(document.querySelector({}) || {{ textContent: '' }}).textContent",
            json!(selector)
        );
        self.eval(&js)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG of the viewport to `target/test-artifacts/status-page-{name}.png`.
    async fn screenshot(&mut self, name: &str) {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64 PNG");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
        std::fs::write(dir.join(format!("status-page-{name}.png")), png).expect("save it");
    }
}

/// The count named `name` on pool `w`'s card.
fn count(name: &str) -> String {
    format!("article[data-pool=\"w\"] [data-count=\"{name}\"] dd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_agent_live_and_without_javascript() {
    let emu = common::emulator(common::options()).await;
    let dir = common::AgentDir::new(
        "status-page",
        &emu.url(),
        &rules(1),
        common::KeyIn::File,
        "poll: { metrics: 200ms, events: 1s }\n",
    );
    let agent = dir.spawn();
    let base = dir.base();
    common::until("pool w at 1 with its member observed", 30, async || {
        let (_, body) = common::get(&format!("{base}/api/v1/pools/w")).await;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["actual"] == 1 && v["desired"] == 1
    })
    .await;
    headers(&base).await;

    let browser = Chromium::start();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("{base}/")).await;
    page.wait(
        "the live stream open",
        "document.body.dataset.live === 'live'",
    )
    .await;
    pool_card(&mut page, &base).await;
    page.screenshot("calm").await;
    alert_comes_and_goes_live(&mut page, &dir, &agent).await;
    page.screenshot("resolved").await;
    sandbox_page(&mut page, &base).await;
    without_javascript(&mut page, &base).await;

    stream_ends_at_shutdown(&base, agent).await;
}

/// The page's headers: HTML under a policy that allows only this origin and the nonce.
async fn headers(base: &str) {
    let r = reqwest::get(format!("{base}/")).await.expect("GET /");
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'nonce-"),
        "{csp}"
    );
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("http://") || !body.contains("<script src"),
        "nothing external"
    );
    let (code, body) = common::get(&format!("{base}/?colour=red")).await;
    assert_eq!(code, 400);
    assert!(
        body.contains("unknown parameter &quot;colour&quot;"),
        "{body}"
    );
}

/// Pool `w`'s card: its counts, its decision sentence as the API says it, a member row, the
/// stylesheet applied (the nonce let it in).
async fn pool_card(page: &mut Page, base: &str) {
    page.wait(
        "pool w's card at 1",
        &format!(
            "document.querySelector({}).textContent === '1'",
            json!(count("actual"))
        ),
    )
    .await;
    assert_eq!(page.text(&count("min")).await, "1");
    assert_eq!(page.text(&count("max")).await, "1");
    assert_eq!(page.text(&count("pending")).await, "0");
    let (_, body) = common::get(&format!("{base}/api/v1/pools/w")).await;
    let pool: Value = serde_json::from_str(&body).expect("JSON");
    let summary = pool["summary"].as_str().expect("a summary").to_string();
    page.wait(
        "the decision sentence",
        &format!(
            "document.querySelector('article[data-pool=\"w\"] .summary').textContent === {}",
            json!(summary)
        ),
    )
    .await;
    page.wait(
        "a member row of w",
        "[...document.querySelectorAll('#members tr.member')].some(r => r.textContent.includes('w'))",
    )
    .await;
    holder(page, base).await;
    page.wait(
        "a decision with its cause",
        "document.querySelectorAll('#decisions tr.decision').length > 0",
    )
    .await;
    let font = page
        .eval("getComputedStyle(document.body).fontFamily")
        .await;
    assert!(
        font.as_str().unwrap_or_default().contains("system-ui"),
        "{font}"
    );
}

/// A claim's holder on its member's row (as text: it is the application's string), and the
/// pool's claimed count.
async fn holder(page: &mut Page, base: &str) {
    let answer = common::raw()
        .post(format!("{base}/api/v1/pools/w/claims?wait=10s"))
        .json(&json!({ "holder": "<i>job-7</i>", "lease": "10m" }))
        .send()
        .await
        .expect("claim");
    assert_eq!(answer.status(), 201);
    let claim: Value = answer.json().await.expect("a claim");
    let row = format!(
        "#members tr.member[data-sandbox={}] td:last-child",
        json!(claim["sandbox_id"])
    );
    page.wait(
        "the holder on the member's row",
        &format!(
            "(document.querySelector({}) || {{}}).textContent === '<i>job-7</i>'",
            json!(row)
        ),
    )
    .await;
    page.wait(
        "one claimed member of w",
        &format!(
            "document.querySelector({}).textContent === '1'",
            json!(count("claimed"))
        ),
    )
    .await;
}

/// The alert fires once the pool holds 2 and resolves once it is back at 1; the page follows
/// both through the stream, without a reload (a marker set on `window` survives).
async fn alert_comes_and_goes_live(
    page: &mut Page,
    dir: &common::AgentDir,
    agent: &common::InProcessAgent,
) {
    assert_eq!(page.text("#no-firing").await, "Nothing is firing.");
    page.eval("window.notReloaded = true").await;
    std::fs::write(dir.dir.join("rules/pool.yaml"), rules(2)).expect("rewrite the rules");
    agent.reload.send(()).await.expect("reload");
    page.wait(
        "the alert firing on the page",
        "!!document.querySelector('#alerts li.alert[data-alert=\"w-full\"]')",
    )
    .await;
    let firing = page.text("#alerts li.alert").await;
    assert!(
        firing.contains("w has <b>2</b> & more"),
        "shown as text: {firing}"
    );
    page.screenshot("firing").await;
    std::fs::write(dir.dir.join("rules/pool.yaml"), rules(1)).expect("rewrite the rules");
    agent.reload.send(()).await.expect("reload");
    page.wait(
        "the alert resolved on the page",
        "!!document.querySelector('#no-firing') && \
         !!document.querySelector('#alerts tr[data-episode=\"w-full\"][data-state=\"resolved\"]')",
    )
    .await;
    assert_eq!(
        page.eval("window.notReloaded === true").await,
        json!(true),
        "no reload"
    );
}

/// A member's link opens its timeline: the decision that created it and its created event.
async fn sandbox_page(page: &mut Page, base: &str) {
    let id = page
        .eval("document.querySelector('#members tr.member').dataset.sandbox")
        .await
        .as_str()
        .expect("a member")
        .to_string();
    common::until(
        "the member's created event in the history",
        30,
        async || {
            let (_, body) = common::get(&format!("{base}/api/v1/sandboxes/{id}/timeline")).await;
            body.contains("sandbox.lifecycle.created")
        },
    )
    .await;
    page.eval(&format!(
        "document.querySelector('#members tr.member[data-sandbox={}] a').click()",
        json!(id)
    ))
    .await;
    page.wait(
        "the sandbox page",
        &format!("location.pathname === '/sandboxes/{id}' && document.readyState === 'complete'"),
    )
    .await;
    assert!(page.text("h1").await.contains(&id));
    page.wait(
        "the create decision and the created event on the timeline",
        "[...document.querySelectorAll('tr.entry')].some(r => r.dataset.kind === 'decision') && \
         [...document.querySelectorAll('tr.entry')].some(r => r.textContent.includes('sandbox.lifecycle.created')) && \
         [...document.querySelectorAll('tr.entry')].some(r => r.textContent.includes('claimed by <i>job-7</i>'))",
    )
    .await;
    page.screenshot("sandbox").await;
}

/// With JavaScript disabled the page is all there: pools, counts, members, events; only the
/// live line stays as rendered.
async fn without_javascript(page: &mut Page, base: &str) {
    page.call(
        "Emulation.setScriptExecutionDisabled",
        json!({ "value": true }),
    )
    .await;
    page.goto(&format!("{base}/?pool=w")).await;
    assert_eq!(
        page.text("#live-state").await,
        "static page",
        "the script did not run"
    );
    assert_eq!(page.text(&count("actual")).await, "1");
    assert_eq!(page.text(&count("max")).await, "1");
    let members = page
        .eval("document.querySelectorAll('#members tr.member').length")
        .await;
    assert!(members.as_u64().unwrap_or(0) >= 1, "{members}");
    let events = page
        .eval("document.querySelectorAll('#events tr.event').length")
        .await;
    assert!(events.as_u64().unwrap_or(0) >= 1, "{events}");
    let selected = page.eval("document.querySelector('#f-pool').value").await;
    assert_eq!(selected, json!("w"), "the filter shows what it filters by");
    assert!(
        page.eval("document.querySelectorAll('svg.chart path').length")
            .await
            .as_u64()
            .unwrap_or(0)
            >= 2
    );
    page.screenshot("no-js").await;
    page.eval("document.getElementById('members').scrollIntoView()")
        .await;
    page.screenshot("members-and-events").await;
    accessible(page).await;
}

/// Landmarks, a label on every form field, a scope on every table header, and the dark
/// scheme when the system asks for it.
async fn accessible(page: &mut Page) {
    let checks = page
        .eval(
            "({ main: !!document.querySelector('main'), header: !!document.querySelector('header'), \
               unlabelled: [...document.querySelectorAll('input, select')].filter(e => e.labels.length === 0).length, \
               unscoped: [...document.querySelectorAll('th')].filter(t => !t.getAttribute('scope')).length })",
        )
        .await;
    assert_eq!(
        checks,
        json!({ "main": true, "header": true, "unlabelled": 0, "unscoped": 0 }),
        "{checks}"
    );
    page.call(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    )
    .await;
    let bg = page
        .eval("getComputedStyle(document.body).backgroundColor")
        .await;
    assert_eq!(bg, json!("rgb(13, 17, 23)"), "the dark scheme");
    page.screenshot("dark").await;
}

/// `GET /api/v1/stream` is an event stream that ends when the agent shuts down.
async fn stream_ends_at_shutdown(base: &str, agent: common::InProcessAgent) {
    let r = reqwest::get(format!("{base}/api/v1/stream"))
        .await
        .expect("open a stream");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut r = r;
    let first = r.chunk().await.expect("bytes").expect("a first event");
    assert!(
        String::from_utf8_lossy(&first).contains("event: turn"),
        "{first:?}"
    );
    let _ = agent.stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(_)) = r.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ends at shutdown");
    agent
        .task
        .await
        .expect("the agent's task")
        .expect("the agent stops cleanly");
}
