//! A private `redis-server` per test, and a TCP proxy that can cut a client off from it.
//!
//! [`RedisServer::start`] runs its own `redis-server` on a free port of 127.0.0.1 (never the
//! machine's 6379, whose data is someone else's), without persistence, in a fresh temporary
//! directory that also holds its unix socket; dropping it kills the server and removes the
//! directory. [`RedisServer::start_tls`] does the same with TLS only, on certificates made
//! with the `openssl` command. [`RedisServer::start_persistent`] keeps an append-only file
//! fsynced on every write, so that [`RedisServer::restart`] (a kill -9 and a start on the
//! same port and directory) comes back with everything it acknowledged. [`RedisCluster`] is a
//! private three-node Redis Cluster, made with `redis-cli --cluster create`, that can cut one
//! client off from one node. [`TcpProxy`] forwards 127.0.0.1 connections to
//! a target and can [`cut`](TcpProxy::cut) them, to simulate a replica losing Redis.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long a fresh server may take to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries with a new port when another process took the chosen one first.
const START_ATTEMPTS: usize = 5;

/// A `redis-server` process of this test alone.
pub struct RedisServer {
    /// The process, killed on drop.
    child: Child,
    /// Its TCP port on 127.0.0.1 (the TLS port for a TLS server).
    port: u16,
    /// Its working directory, unix socket and log (and certificate, for TLS); removed on
    /// drop.
    dir: PathBuf,
    /// Whether it speaks TLS only.
    tls: bool,
    /// Whether it keeps an append-only file (`appendfsync always`).
    persistent: bool,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        Self::start_with(false, false)
    }

    /// Starts a server that writes every change to its append-only file before answering,
    /// and waits until it answers `PING`.
    pub fn start_persistent() -> RedisServer {
        Self::start_with(false, true)
    }

    /// Kills the server (SIGKILL: no chance to save anything more) and starts it again on the
    /// same port and directory; with [`RedisServer::start_persistent`] it comes back with
    /// every write it answered. Waits until it answers `PING` again.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Kills the server (SIGKILL), leaving it down until [`RedisServer::start_again`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a killed server again on the same port and directory, and waits until it
    /// answers `PING`.
    pub fn start_again(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut child = redis_command(&self.dir, self.port, self.tls, self.persistent)
                .spawn()
                .expect("redis-server restarts");
            match wait_ready(&mut child, self.addr(), self.tls) {
                Ok(()) => {
                    self.child = child;
                    return;
                }
                // The old process's port may take a moment to be free again.
                Err(reason) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    assert!(
                        Instant::now() < deadline,
                        "redis-server did not restart: {reason}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Starts a server that accepts TLS connections only, with a certificate for 127.0.0.1
    /// issued by a test CA (clients must trust [`RedisServer::ca_file`]), and waits until it
    /// listens.
    pub fn start_tls() -> RedisServer {
        Self::start_with(true, false)
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for TLS).
    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://127.0.0.1:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    /// `redis+unix:///.../redis.sock`.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// The test CA's certificate (PEM) of a TLS server.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The TCP address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    fn start_with(tls: bool, persistent: bool) -> RedisServer {
        let dir = temp_dir();
        if tls {
            test_certificates(&dir);
        }
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut child = match redis_command(&dir, port, tls, persistent).spawn() {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = std::fs::remove_dir_all(&dir);
                    panic!(
                        "redis-server is not installed; these tests need a real Redis \
                         (Debian/Ubuntu: apt-get install redis-server)"
                    )
                }
                Err(e) => panic!("cannot run redis-server: {e}"),
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_ready(&mut child, addr, tls) {
                Ok(()) => {
                    return RedisServer {
                        child,
                        port,
                        dir,
                        tls,
                        persistent,
                    };
                }
                Err(reason) => {
                    failures.push(format!("port {port}: {reason}"));
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        panic!(
            "redis-server did not start: {}\n--- redis.log ---\n{log}",
            failures.join("; ")
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `redis-server` command line of a server in `dir` on `port`.
fn redis_command(dir: &Path, port: u16, tls: bool, persistent: bool) -> Command {
    let mut command = Command::new("redis-server");
    command.args(["--bind", "127.0.0.1", "--save", ""]);
    if persistent {
        command.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        command.args(["--appendonly", "no"]);
    }
    command
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .arg("--unixsocket")
        .arg(dir.join("redis.sock"))
        .args(["--unixsocketperm", "700"]);
    if tls {
        let files = tls_files(dir);
        command
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&files.cert)
            .arg("--tls-key-file")
            .arg(&files.key)
            .arg("--tls-ca-cert-file")
            .arg(&files.ca)
            .args(["--tls-auth-clients", "no"]);
    } else {
        command.args(["--port", &port.to_string()]);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Waits until the server at `addr` answers `PING` (listens, for TLS), or fails.
fn wait_ready(child: &mut Child, addr: SocketAddr, tls: bool) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}"));
        }
        let ready = if tls {
            StdTcpStream::connect(addr).is_ok()
        } else {
            ping(addr)
        };
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no answer within {READY_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a Redis at `addr` answers `PING` with `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line == "+PONG\r\n"
}

/// A port nobody listens on now (the OS's pick for 127.0.0.1:0, released at once).
pub fn free_port() -> u16 {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("a bound address").port()
}

/// A fresh, empty directory under the system's temporary directory.
fn temp_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-redis-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Files of the test TLS setup, all in the server's directory.
struct TlsFiles {
    /// The test CA's certificate: what Redis checks clients against, and what clients must
    /// trust.
    ca: PathBuf,
    /// The server's certificate for 127.0.0.1, issued by the test CA.
    cert: PathBuf,
    /// The server's private key.
    key: PathBuf,
}

/// A test CA and a server certificate for 127.0.0.1 it issued, written into `dir` (rustls
/// refuses a CA certificate as the server's own, so a lone self-signed one will not do).
/// Where a TLS server's files are in its directory.
fn tls_files(dir: &Path) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

fn test_certificates(dir: &Path) -> TlsFiles {
    let files = tls_files(dir);
    let (ca_key, request, extensions) = (
        dir.join("ca-key.pem"),
        dir.join("server.csr"),
        dir.join("server.ext"),
    );
    std::fs::write(
        &extensions,
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1\n",
    )
    .expect("writing the certificate extensions");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(|c| {
        c.args([
            "req",
            "-x509",
            "-days",
            "1",
            "-subj",
            "/CN=switchyard test CA",
        ])
        .args(ec)
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&files.ca)
    });
    openssl(|c| {
        c.args(["req", "-subj", "/CN=127.0.0.1"])
            .args(ec)
            .arg("-keyout")
            .arg(&files.key)
            .arg("-out")
            .arg(&request)
    });
    openssl(|c| {
        c.args(["x509", "-req", "-days", "1", "-set_serial", "2"])
            .arg("-in")
            .arg(&request)
            .arg("-CA")
            .arg(&files.ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&extensions)
            .arg("-out")
            .arg(&files.cert)
    });
    files
}

/// Runs the `openssl` command with the arguments `args` sets, which must succeed.
fn openssl(args: impl FnOnce(&mut Command) -> &mut Command) {
    let mut command = Command::new("openssl");
    let output = args(&mut command).output().unwrap_or_else(|e| {
        panic!("the TLS test needs the openssl command (apt-get install openssl): {e}")
    });
    assert!(
        output.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A TCP proxy on 127.0.0.1 to `target` that can cut its clients off.
pub struct TcpProxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// Whether it is cut, and the forwarding tasks of open connections.
    state: Arc<ProxyState>,
    /// The accept loop, stopped on drop.
    acceptor: JoinHandle<()>,
}

struct ProxyState {
    /// `Some(tasks)` while connections pass, `None` while cut. One lock for both, so that a
    /// connection is either registered before a cut (and closed by it) or refused after.
    connections: Mutex<Option<Vec<JoinHandle<()>>>>,
    /// Where connections go.
    target: SocketAddr,
}

impl TcpProxy {
    /// A proxy to `target`, passing connections.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(ProxyState {
            connections: Mutex::new(Some(Vec::new())),
            target,
        });
        let acceptor = tokio::spawn(accept(listener, Arc::clone(&state)));
        TcpProxy {
            addr,
            state,
            acceptor,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://` + [`TcpProxy::addr`].
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Closes every open connection, and closes new ones as soon as they are accepted,
    /// until [`TcpProxy::restore`]. Returns once the open ones are closed.
    pub async fn cut(&self) {
        let open = self
            .state
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        for task in &open {
            task.abort();
        }
        for task in open {
            let _ = task.await;
        }
    }

    /// Passes new connections again.
    pub fn restore(&self) {
        let mut connections = self
            .state
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if connections.is_none() {
            *connections = Some(Vec::new());
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        let open = self
            .state
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for task in open.into_iter().flatten() {
            task.abort();
        }
    }
}

/// Accepts clients and forwards each to the target, unless cut.
async fn accept(listener: TcpListener, state: Arc<ProxyState>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors, say: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut connections = state
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(open) = connections.as_mut() else {
            // Cut: close it at once.
            drop(client);
            continue;
        };
        open.retain(|task| !task.is_finished());
        open.push(tokio::spawn(forward(client, state.target)));
    }
}

/// Copies both ways between `client` and a new connection to `target` until either ends.
async fn forward(mut client: TcpStream, target: SocketAddr) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A private Redis Cluster of three primaries (no replicas), each a `redis-server` of this
/// test alone on free ports of 127.0.0.1, without persistence, in one temporary directory;
/// dropping it kills the nodes and removes the directory.
///
/// Started as an operator would: `redis-server --cluster-enabled yes` per node, then
/// `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`, then waiting until
/// every node says `cluster_state:ok`. The nodes' cluster bus ports are chosen free too
/// (`--cluster-port`), not the port + 10000 convention, which may be taken or out of range.
///
/// [`RedisCluster::add_user`], [`RedisCluster::cut_user`] and [`RedisCluster::restore_user`]
/// cut one client off from one node and let it back: the user is switched off on that node
/// (no new connection can authenticate) and its connections there are killed.
pub struct RedisCluster {
    /// The node processes, killed on drop.
    nodes: Vec<Child>,
    /// Their client ports on 127.0.0.1, in the same order.
    ports: Vec<u16>,
    /// Their directories (a subdirectory per node: nodes.conf and log); removed on drop.
    dir: PathBuf,
}

/// Nodes of [`RedisCluster`].
const CLUSTER_NODES: usize = 3;

impl RedisCluster {
    /// Starts three nodes, joins them into a cluster and waits until it is `ok`.
    pub fn start() -> RedisCluster {
        let dir = temp_dir();
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for node in 0..CLUSTER_NODES {
            let (child, port) = cluster.start_node(node);
            cluster.nodes.push(child);
            cluster.ports.push(port);
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("the cluster tests need redis-cli (apt-get install redis-server): {e}")
            });
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        for node in 0..CLUSTER_NODES {
            loop {
                let info = cluster.cli(node, &["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{CLUSTER_NODES}"))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {node} did not see the cluster ok:\n{info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Starts node `node` on free ports, waiting until it answers `PING`.
    fn start_node(&self, node: usize) -> (Child, u16) {
        let dir = self.dir.join(format!("node{node}"));
        std::fs::create_dir_all(&dir).expect("creating a node's directory");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let (port, bus) = (free_port(), free_port());
            if port == bus {
                continue;
            }
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--port", &port.to_string()])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-port", &bus.to_string()])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf"))
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "the cluster tests need redis-server (apt-get install redis-server): {e}"
                    )
                });
            match wait_ready(&mut child, SocketAddr::from(([127, 0, 0, 1], port)), false) {
                Ok(()) => return (child, port),
                Err(reason) => {
                    failures.push(format!("ports {port}/{bus}: {reason}"));
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = std::fs::remove_file(dir.join("nodes.conf"));
                }
            }
        }
        let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
        panic!(
            "cluster node {node} did not start: {}\n--- redis.log ---\n{log}",
            failures.join("; ")
        )
    }

    /// `redis://127.0.0.1:PORT` of the first node: a seed, from which clients learn the rest.
    pub fn seed_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }

    /// The seed's URL with the credentials of `user` (see [`RedisCluster::add_user`]).
    pub fn seed_url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.ports[0])
    }

    /// The URLs of the nodes other than the seed, with the user and password of `seed_url`
    /// (one of [`RedisCluster::seed_url`], [`RedisCluster::seed_url_as`]).
    pub fn other_node_urls(&self, seed_url: &str) -> Vec<String> {
        let seed = format!("127.0.0.1:{}", self.ports[0]);
        self.ports[1..]
            .iter()
            .map(|port| seed_url.replace(&seed, &format!("127.0.0.1:{port}")))
            .collect()
    }

    /// The nodes' client ports on 127.0.0.1.
    pub fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    /// How many nodes there are.
    pub fn node_count(&self) -> usize {
        self.ports.len()
    }

    /// The output of `redis-cli -p <node's port> <args>` (a command of the test's own on that
    /// node, as the default user), which must run.
    pub fn cli(&self, node: usize, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.ports[node].to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(output.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The node whose slots hold `key` (the others answer `MOVED`).
    pub fn node_holding(&self, key: &str) -> usize {
        (0..self.node_count())
            .find(|&node| !self.cli(node, &["TYPE", key]).contains("MOVED"))
            .unwrap_or_else(|| panic!("no node holds {key}"))
    }

    /// `XLEN key` on the node holding it.
    pub fn stream_length(&self, key: &str) -> u64 {
        let node = self.node_holding(key);
        let length = self.cli(node, &["XLEN", key]);
        length
            .parse()
            .unwrap_or_else(|_| panic!("XLEN {key}: {length}"))
    }

    /// Creates `user` with `password` and every permission on every node (ACLs are per
    /// node in a cluster).
    pub fn add_user(&self, user: &str, password: &str) {
        for node in 0..self.node_count() {
            let answer = self.cli(
                node,
                &[
                    "ACL",
                    "SETUSER",
                    user,
                    "on",
                    &format!(">{password}"),
                    "~*",
                    "&*",
                    "+@all",
                ],
            );
            assert_eq!(answer, "OK", "ACL SETUSER on node {node}");
        }
    }

    /// Cuts `user` off from `node`: it can no longer authenticate there, and its open
    /// connections to that node are closed. Its connections to the other nodes stay.
    pub fn cut_user(&self, node: usize, user: &str) {
        assert_eq!(self.cli(node, &["ACL", "SETUSER", user, "off"]), "OK");
        let killed = self.cli(node, &["CLIENT", "KILL", "USER", user]);
        assert!(
            killed.parse::<u32>().is_ok_and(|n| n > 0),
            "{user} had connections to node {node} to kill: {killed}"
        );
    }

    /// Lets `user` connect to `node` again.
    pub fn restore_user(&self, node: usize, user: &str) {
        assert_eq!(self.cli(node, &["ACL", "SETUSER", user, "on"]), "OK");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
