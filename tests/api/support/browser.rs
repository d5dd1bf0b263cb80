//! A minimal Chrome DevTools Protocol (CDP) client for browser tests.
//!
//! [`Browser::launch`] starts a headless Chromium (`/usr/bin/chromium`, or the
//! path in `$CHROMIUM`) with a fresh profile, finds its DevTools websocket through
//! the `DevToolsActivePort` file, and connects. [`Browser::new_page`] opens a tab
//! and navigates it; a [`Page`] evaluates JavaScript, waits for conditions, takes
//! screenshots, and records console errors and requests to hosts other than
//! localhost (to prove that a page works offline).
//!
//! ```ignore
//! let browser = Browser::launch().await?;
//! let page = browser.new_page(&format!("{base}/playground/")).await?;
//! page.wait_for("document.querySelector('#sign-in')", Duration::from_secs(20)).await?;
//! page.eval("document.querySelector('#sign-in').click()").await?;
//! assert!(page.console_errors().is_empty());
//! assert!(page.foreign_requests().is_empty());
//! ```
//!
//! Design: one background task owns the websocket. It writes the messages queued
//! by callers and reads everything Chromium sends: replies are routed by `id` to a
//! oneshot channel registered by the caller, events are routed by `sessionId` to
//! the page they belong to (tabs are attached with `flatten: true`, so all pages
//! share the browser connection). Every call has a timeout, so a test never hangs
//! on a dead browser. Dropping the [`Browser`] kills Chromium and removes its
//! profile directory.
//!
//! Only the crates the tests already depend on are used: tokio, tokio-tungstenite,
//! futures, serde_json and anyhow.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for a single CDP call (including a navigation's wait for `load`).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to start and write `DevToolsActivePort`.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling interval of [`Page::wait_for`].
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The binary used unless `$CHROMIUM` names another one.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// Locks a mutex, ignoring poisoning (the data are plain lists and maps).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A reply to a call: its `result`, or the text of its `error`.
type Reply = std::result::Result<Value, String>;

/// What the events of one page (one CDP session) have told us so far.
struct PageEvents {
    console_errors: Mutex<Vec<String>>,
    foreign_hosts: Mutex<Vec<String>>,
    /// Number of `Page.loadEventFired` events, to wait for a navigation's load.
    loads: watch::Sender<u64>,
}

/// The connection to the browser, shared by the [`Browser`], its pages and the
/// background task.
struct Connection {
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    sessions: Mutex<HashMap<String, Arc<PageEvents>>>,
    next_id: AtomicU64,
}

impl Connection {
    /// Sends a CDP command (to the browser, or to a page's session) and waits up
    /// to `timeout` for its result.
    async fn call_with_timeout(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        if self
            .outgoing
            .send(Message::text(message.to_string()))
            .is_err()
        {
            lock(&self.pending).remove(&id);
            bail!("CDP {method}: the browser connection is closed");
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                lock(&self.pending).remove(&id);
                bail!("CDP {method}: no reply within {timeout:?}")
            }
            Ok(Err(_)) => bail!("CDP {method}: the browser connection closed before the reply"),
            Ok(Ok(Err(error))) => bail!("CDP {method} failed: {error}"),
            Ok(Ok(Ok(result))) => Ok(result),
        }
    }

    /// [`Self::call_with_timeout`] with the default [`CALL_TIMEOUT`].
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.call_with_timeout(session, method, params, CALL_TIMEOUT)
            .await
    }

    /// Queues a command without waiting for its reply (used from `Drop`).
    fn send_and_forget(&self, session: Option<&str>, method: &str, params: Value) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let _ = self.outgoing.send(Message::text(message.to_string()));
    }

    /// Handles one message from Chromium: a reply or an event.
    fn dispatch(&self, text: &str) {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(id) = message.get("id").and_then(Value::as_u64) {
            let Some(tx) = lock(&self.pending).remove(&id) else {
                return; // a reply nobody waits for (send_and_forget, or timed out)
            };
            let reply = match message.get("error") {
                Some(error) => Err(describe_error(error)),
                None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
            };
            let _ = tx.send(reply);
            return;
        }
        let (Some(method), Some(session)) = (
            message.get("method").and_then(Value::as_str),
            message.get("sessionId").and_then(Value::as_str),
        ) else {
            return; // browser-level events are not needed
        };
        let Some(page) = lock(&self.sessions).get(session).cloned() else {
            return;
        };
        let params = message.get("params").unwrap_or(&Value::Null);
        page.record(method, params);
    }
}

impl PageEvents {
    fn new() -> PageEvents {
        PageEvents {
            console_errors: Mutex::new(Vec::new()),
            foreign_hosts: Mutex::new(Vec::new()),
            loads: watch::channel(0).0,
        }
    }

    /// Records what a page event says about console errors, requests and loads.
    fn record(&self, method: &str, params: &Value) {
        match method {
            "Runtime.consoleAPICalled" => {
                let kind = params["type"].as_str().unwrap_or("");
                if kind == "error" || kind == "assert" {
                    let args = params["args"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                    let text: Vec<String> = args.iter().map(remote_object_text).collect();
                    lock(&self.console_errors).push(format!("console.{kind}: {}", text.join(" ")));
                }
            }
            "Runtime.exceptionThrown" => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or_else(|| details["text"].as_str())
                    .unwrap_or("exception");
                let url = details["url"].as_str().unwrap_or("");
                let line = details["lineNumber"].as_u64().unwrap_or(0);
                lock(&self.console_errors).push(format!("uncaught: {text} ({url}:{line})"));
            }
            // Content-Security-Policy violations (e.g. a blocked request to another
            // host) only show up in the browser's log.
            "Log.entryAdded" if params["entry"]["source"] == "security" => {
                let text = params["entry"]["text"].as_str().unwrap_or("");
                lock(&self.console_errors).push(format!("security: {text}"));
            }
            "Inspector.targetCrashed" => {
                lock(&self.console_errors).push("the page crashed".to_owned());
            }
            "Network.requestWillBeSent" => self.note_url(params["request"]["url"].as_str()),
            "Network.webSocketCreated" => self.note_url(params["url"].as_str()),
            "Page.loadEventFired" => self.loads.send_modify(|n| *n += 1),
            _ => {}
        }
    }

    /// Remembers the host of `url` if it is a network URL to a non-local host.
    fn note_url(&self, url: Option<&str>) {
        let Some(host) = url.and_then(url_host) else {
            return;
        };
        if !is_local(&host) {
            let mut hosts = lock(&self.foreign_hosts);
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
}

/// The text of a CDP `error` object: its message and data.
fn describe_error(error: &Value) -> String {
    let message = error["message"].as_str().unwrap_or("unknown error");
    match error["data"].as_str() {
        Some(data) => format!("{message}: {data}"),
        None => message.to_owned(),
    }
}

/// A console argument (a `Runtime.RemoteObject`) as text.
fn remote_object_text(object: &Value) -> String {
    match &object["value"] {
        Value::String(s) => s.clone(),
        Value::Null => object["description"]
            .as_str()
            .or_else(|| object["unserializableValue"].as_str())
            .or_else(|| object["type"].as_str())
            .unwrap_or("")
            .to_owned(),
        value => value.to_string(),
    }
}

/// The lower-cased host of an http(s) or ws(s) URL; `None` for other schemes
/// (`data:`, `blob:`, `about:`, ...).
fn url_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(
        scheme.to_ascii_lowercase().as_str(),
        "http" | "https" | "ws" | "wss"
    ) {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match authority.strip_prefix('[') {
        Some(ipv6) => ipv6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    Some(host.to_ascii_lowercase())
}

/// Whether a host is this machine.
fn is_local(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1") || host.ends_with(".localhost")
}

/// Decodes standard base64 (as in `Page.captureScreenshot`), ignoring whitespace.
fn decode_base64(text: &str) -> Result<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut bits, mut nbits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = value(c).ok_or_else(|| anyhow!("invalid base64 character {:?}", c as char))?;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Ok(out)
}

/// The background task: writes queued messages, reads and dispatches replies and
/// events, until either side closes. Then every pending call fails.
async fn run_connection(
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    connection: Arc<Connection>,
    mut outgoing: mpsc::UnboundedReceiver<Message>,
) {
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            message = outgoing.recv() => match message {
                Some(message) => {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => connection.dispatch(text.as_str()),
                Some(Ok(Message::Binary(bytes))) => {
                    if let Ok(text) = std::str::from_utf8(&bytes) {
                        connection.dispatch(text);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // Dropping the senders makes every waiting call fail at once.
    lock(&connection.pending).clear();
}

/// A headless Chromium and the DevTools connection to it.
///
/// Dropping it kills the browser process and removes its temporary profile.
pub struct Browser {
    connection: Arc<Connection>,
    task: JoinHandle<()>,
    process: Mutex<Process>,
}

/// The Chromium process and its profile directory: dropping it kills the process
/// (and waits for it), then removes the directory.
struct Process {
    child: Child,
    user_data_dir: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        // Chromium's helper processes (zygote, renderers, network service) exit
        // on their own once the browser process is gone, but may write to the
        // profile until then: note them, kill the browser, and give them up to
        // 2 s before removing the profile.
        let helpers = descendants(self.child.id());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(2);
        while helpers.iter().any(|&pid| is_running(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..10 {
            if std::fs::remove_dir_all(&self.user_data_dir).is_ok() || !self.user_data_dir.exists()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The state letter and parent pid of a process, from `/proc/<pid>/stat` (Linux).
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (command) S ppid ...": the command may contain spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// All descendants of `root` (empty where there is no `/proc`).
fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?.1)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Whether a process exists and is not a zombie.
fn is_running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

impl Browser {
    /// Launches `/usr/bin/chromium` (or `$CHROMIUM`) headless with a fresh
    /// `--user-data-dir` under [`std::env::temp_dir`] and `--remote-debugging-port=0`,
    /// reads the `DevToolsActivePort` file Chromium writes there to find the
    /// port and the browser's websocket path, and connects.
    ///
    /// Fails with a message naming `apt-get install chromium` if the binary is
    /// missing, and with Chromium's stderr if it exits during start-up.
    pub async fn launch() -> Result<Browser> {
        let binary = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CHROMIUM));
        let not_found = || {
            anyhow!(
                "Chromium not found at {}: browser tests need it; install it with \
                 `apt-get install chromium` (Debian) or point $CHROMIUM at a Chrome/Chromium binary",
                binary.display()
            )
        };
        if binary.components().count() > 1 && !binary.is_file() {
            return Err(not_found());
        }

        static LAUNCHES: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let user_data_dir = std::env::temp_dir().join(format!(
            "switchyard-chromium-{}-{}-{nanos}",
            std::process::id(),
            LAUNCHES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&user_data_dir)
            .with_context(|| format!("creating {}", user_data_dir.display()))?;
        let stderr_path = user_data_dir.join("chromium-stderr.log");
        let spawned = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))
            .and_then(|stderr| spawn_chromium(&binary, &user_data_dir, stderr, not_found));
        let child = match spawned {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&user_data_dir);
                return Err(error);
            }
        };
        // From here on, dropping `process` (on any error) kills Chromium and
        // removes the directory.
        let mut process = Process {
            child,
            user_data_dir,
        };

        // DevToolsActivePort: the port on line 1, the browser's ws path on line 2.
        let port_file = process.user_data_dir.join("DevToolsActivePort");
        let started = Instant::now();
        let ws_url = loop {
            if let Ok(contents) = std::fs::read_to_string(&port_file) {
                let mut lines = contents.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
                }
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                bail!(
                    "Chromium exited during start-up ({status}); its stderr:\n{}",
                    tail(&log, 30)
                );
            }
            if started.elapsed() > LAUNCH_TIMEOUT {
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                bail!(
                    "Chromium wrote no {} within {LAUNCH_TIMEOUT:?}; its stderr:\n{}",
                    port_file.display(),
                    tail(&log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };

        let config = WebSocketConfig::default()
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let (socket, _) = tokio::time::timeout(
            CALL_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(ws_url.as_str(), Some(config), true),
        )
        .await
        .map_err(|_| anyhow!("connecting to Chromium at {ws_url} timed out"))?
        .with_context(|| format!("connecting to Chromium at {ws_url}"))?;

        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let connection = Arc::new(Connection {
            outgoing,
            pending: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let task = tokio::spawn(run_connection(socket, connection.clone(), outgoing_rx));
        Ok(Browser {
            connection,
            task,
            process: Mutex::new(process),
        })
    }

    /// Opens a new tab (`Target.createTarget`, then `Target.attachToTarget` with
    /// `flatten: true`), enables the Page, Runtime, Network and Log domains, navigates
    /// to `url` and waits for its `load` event.
    pub async fn new_page(&self, url: &str) -> Result<Page> {
        let conn = &self.connection;
        let created = conn
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = created["targetId"]
            .as_str()
            .ok_or_else(|| anyhow!("Target.createTarget returned no targetId: {created}"))?
            .to_owned();
        let attached = conn
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let session_id = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("Target.attachToTarget returned no sessionId: {attached}"))?
            .to_owned();
        let events = Arc::new(PageEvents::new());
        lock(&conn.sessions).insert(session_id.clone(), events.clone());
        let page = Page {
            connection: conn.clone(),
            session_id,
            target_id,
            events,
        };
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Network.enable",
            "Log.enable",
        ] {
            page.call(domain, json!({})).await?;
        }
        page.goto(url).await?;
        Ok(page)
    }

    /// Closes the browser gracefully (`Browser.close`, then waits up to 5 s for
    /// the process to exit); dropping the `Browser` afterwards cleans up the rest.
    pub async fn close(self) -> Result<()> {
        let _ = self
            .connection
            .call_with_timeout(None, "Browser.close", json!({}), Duration::from_secs(5))
            .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = lock(&self.process).child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The `process` field is dropped next: it kills Chromium and removes the profile.
        self.task.abort();
    }
}

/// Starts Chromium headless on a random DevTools port, its stderr going to `stderr`.
fn spawn_chromium(
    binary: &Path,
    user_data_dir: &Path,
    stderr: std::fs::File,
    not_found: impl Fn() -> anyhow::Error,
) -> Result<Child> {
    Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            "--no-default-browser-check",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", user_data_dir.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => not_found(),
            _ => anyhow!(error).context(format!("starting {}", binary.display())),
        })
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A browser tab, attached through its own CDP session.
///
/// Dropping it closes the tab.
pub struct Page {
    connection: Arc<Connection>,
    session_id: String,
    target_id: String,
    events: Arc<PageEvents>,
}

impl Page {
    /// Sends a CDP command to this page's session.
    async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.connection
            .call(Some(&self.session_id), method, params)
            .await
    }

    /// Navigates to `url` (`Page.navigate`) and waits for the `load` event (so not
    /// for a same-document navigation such as a `#fragment` change).
    pub async fn goto(&self, url: &str) -> Result<()> {
        let mut loads = self.events.loads.subscribe();
        let before = *loads.borrow_and_update();
        let navigated = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = navigated["errorText"].as_str().filter(|e| !e.is_empty()) {
            bail!("navigating to {url} failed: {error}");
        }
        tokio::time::timeout(CALL_TIMEOUT, loads.wait_for(|n| *n > before))
            .await
            .map_err(|_| anyhow!("{url} did not finish loading within {CALL_TIMEOUT:?}"))?
            .map_err(|_| anyhow!("the page closed while loading {url}"))?;
        Ok(())
    }

    /// Evaluates `js` in the page (`Runtime.evaluate` with `awaitPromise` and
    /// `returnByValue`, as a user gesture) and returns its value: `Null` for
    /// `undefined`, a DOM node comes back as `{}`. A JavaScript exception or a
    /// rejected promise becomes an `Err` with its text.
    pub async fn eval(&self, js: &str) -> Result<Value> {
        self.eval_with_timeout(js, CALL_TIMEOUT).await
    }

    async fn eval_with_timeout(&self, js: &str, timeout: Duration) -> Result<Value> {
        let params = json!({
            "expression": js,
            "awaitPromise": true,
            "returnByValue": true,
            "userGesture": true,
        });
        let reply = self
            .connection
            .call_with_timeout(Some(&self.session_id), "Runtime.evaluate", params, timeout)
            .await?;
        if let Some(details) = reply.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or_else(|| details["exception"]["value"].as_str())
                .or_else(|| details["text"].as_str())
                .unwrap_or("exception");
            bail!("JavaScript error: {text}");
        }
        Ok(reply["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Polls the boolean expression `js` every 100 ms until it is truthy. Errors
    /// while polling (e.g. during a navigation) count as false. On timeout, the
    /// error names the expression (and the last JavaScript error, if any).
    pub async fn wait_for(&self, js: &str, timeout: Duration) -> Result<()> {
        let expression = format!("Boolean(\n{}\n)", js.trim().trim_end_matches(';'));
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let per_call = left.clamp(Duration::from_millis(500), CALL_TIMEOUT);
            match self.eval_with_timeout(&expression, per_call).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(_) => {}
                Err(error) => last_error = Some(error),
            }
            if Instant::now() >= deadline {
                let hint = last_error
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default();
                bail!("timed out after {timeout:?} waiting for `{js}`{hint}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Saves a PNG screenshot of the viewport (`Page.captureScreenshot`) to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| anyhow!("Page.captureScreenshot returned no data"))?;
        let png = decode_base64(data).context("decoding the screenshot")?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Console errors (`console.error`, failed `console.assert`), uncaught
    /// exceptions and Content-Security-Policy violations seen so far, as text.
    /// Failed network requests that the browser itself logs (e.g. "Failed to
    /// load resource: ... 404") are not included.
    pub fn console_errors(&self) -> Vec<String> {
        lock(&self.events.console_errors).clone()
    }

    /// Hosts, other than 127.0.0.1, localhost and ::1, of the http(s) and ws(s)
    /// requests the page made so far (each host once). Empty means the page
    /// worked offline. A request the page's CSP blocks is never sent, so it is
    /// not here but in [`Page::console_errors`].
    pub fn foreign_requests(&self) -> Vec<String> {
        lock(&self.events.foreign_hosts).clone()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        lock(&self.connection.sessions).remove(&self.session_id);
        self.connection.send_and_forget(
            None,
            "Target.closeTarget",
            json!({ "targetId": self.target_id }),
        );
    }
}
