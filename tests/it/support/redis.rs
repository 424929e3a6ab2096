//! Real `redis-server` processes for the Redis store tests: a standalone server and a
//! three-master Redis Cluster (`redis-cli --cluster create … --cluster-replicas 0`), each on free
//! loopback ports with its own temporary directory, killed on drop.
//!
//! When `redis-server` or `redis-cli` is missing, [`require`] fails the test under `CI=true` and
//! otherwise returns false with a printed reason so the test can skip.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kappe::store::redis::StoreUrl;

/// True when `redis-server` and `redis-cli` can run. Under `CI=true` a missing program is a
/// failure, not a skip.
pub(crate) fn require(test: &str) -> bool {
    super::require_programs(
        test,
        &["redis-server", "redis-cli"],
        "apt-get install redis-server redis-tools",
    )
}

/// A loopback port that is free now, and whose cluster bus port (port + 10000) is free too.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Runs `redis-cli -p port args…` and returns its stdout.
pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One `redis-server` process.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    cluster: bool,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers.
    pub(crate) fn start() -> RedisServer {
        Self::start_on(free_port(), false)
    }

    fn start_on(port: u16, cluster: bool) -> RedisServer {
        let mut server = RedisServer {
            port,
            cluster,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let dir: PathBuf = self.dir.path().into();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "2000"]);
        }
        self.child = Some(cmd.spawn().expect("spawn redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(self.port, &["PING"]) != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} never answered",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:port`.
    pub(crate) fn url(&self) -> StoreUrl {
        StoreUrl::Redis(format!("redis://127.0.0.1:{}", self.port))
    }

    /// Kills the process (SIGKILL) and waits until the port refuses connections.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops (`true`) or continues (`false`) the process with SIGSTOP or SIGCONT: a stalled
    /// Redis that holds its connections open and answers nothing.
    pub(crate) fn stall(&self, stalled: bool) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let signal = if stalled { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts the server again on the same port (with empty data).
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis Cluster of three masters and no replicas.
pub(crate) struct RedisCluster {
    pub(crate) nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them and waits for `cluster_state:ok`.
    pub(crate) fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_on(free_port(), true))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Kills every node.
    pub(crate) fn kill_all(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }

    /// Restarts every node on its port with its saved cluster config (the data is gone) and
    /// waits for `cluster_state:ok`.
    pub(crate) fn restart_all(&mut self) {
        for n in &mut self.nodes {
            n.restart();
        }
        self.wait_ok();
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        for n in &self.nodes {
            while !cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `redis+cluster://…` over all three masters.
    pub(crate) fn url(&self) -> StoreUrl {
        let list: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        StoreUrl::parse(&format!("redis+cluster://{}", list.join(","))).expect("cluster url")
    }

    /// The node id of the master on `port`.
    fn node_id(&self, port: u16) -> String {
        cli(port, &["CLUSTER", "MYID"])
    }

    /// The port of the master that serves `slot`, as the cluster sees it now.
    pub(crate) fn owner_of(&self, slot: u16) -> u16 {
        let nodes = cli(self.nodes[0].port, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port: u16 = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("node address");
            for range in &fields[8..] {
                if range.starts_with('[') {
                    continue;
                }
                let (lo, hi) = match range.split_once('-') {
                    Some((lo, hi)) => (lo.parse().unwrap(), hi.parse().unwrap()),
                    None => {
                        let s: u16 = range.parse().unwrap();
                        (s, s)
                    }
                };
                if (lo..=hi).contains(&slot) {
                    return port;
                }
            }
        }
        panic!("no owner for slot {slot}:\n{nodes}");
    }

    /// The slot of `key`.
    pub(crate) fn slot_of(&self, key: &str) -> u16 {
        cli(self.nodes[0].port, &["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("slot number")
    }

    /// Moves `slot` with its keys from its owner to `to` (a port), the way `redis-cli --cluster
    /// reshard` does: IMPORTING/MIGRATING, MIGRATE each key, then assign the slot everywhere.
    pub(crate) fn migrate_slot(&self, slot: u16, to: u16) {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let s = slot.to_string();
        assert_eq!(
            cli(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]),
            "OK"
        );
        assert_eq!(
            cli(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]),
            "OK"
        );
        let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &s, "1000"]);
        for key in keys.lines().filter(|k| !k.is_empty()) {
            let to_port = to.to_string();
            let out = cli(from, &["MIGRATE", "127.0.0.1", &to_port, key, "0", "5000"]);
            assert_eq!(out, "OK", "MIGRATE {key}");
        }
        for n in &self.nodes {
            assert_eq!(
                cli(n.port, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]),
                "OK"
            );
        }
    }
}
