//! Two users behind two NATs find each other by name and chat through a relay: real daemons
//! (the binary) in network namespaces that this test builds.
//!
//! ```text
//!   home1 (192.168.1.2) ── r1 (NAT) ──┐                      ┌── r2 (NAT) ── home2 (192.168.2.2)
//!                          10.99.0.11 ├── pub bridge 10.99.0.0/24 ┤ 10.99.0.12
//!                                     └── relay + bootstrap 10.99.0.1
//! ```
//!
//! The routers masquerade their home network (nftables) and route nothing between the homes:
//! Alice cannot reach Bob's address, nor he hers. Both bootstrap from the relay (mDNS off),
//! reserve a slot on it, find each other by name in the DHT, exchange messages and a 16 MiB
//! file; the test reports whether DCUtR upgraded the connection to a direct one.
//!
//! Needs root, `ip netns` and `nft`; without them it prints why and passes, unless
//! `ENCRYPTO_REQUIRE_NETNS=1` (set by `.ci/run`, which installs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};

use serde_json::Value;
use support::{User, Watch, eventually, ip, skip, texts};

/// In namespace `ns`: `ip netns exec NS PROGRAM ARGS`.
fn exec(ns: &str, program: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    support::run_command("ip", &all).unwrap();
}

/// The namespaces of one run, deleted on drop (with every interface inside them).
struct Topology {
    names: Vec<String>,
}

impl Topology {
    fn ns(&self, role: &str) -> String {
        self.names
            .iter()
            .find(|n| n.ends_with(&format!("-{role}")))
            .unwrap()
            .clone()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn topology() -> Option<Topology> {
    if !nix::unistd::geteuid().is_root() {
        skip(
            "nat_netns",
            "not running as root (network namespaces need it)",
        );
        return None;
    }
    if let Err(e) = support::run_command("ip", &["netns", "list"]) {
        skip("nat_netns", &format!("`ip netns` does not work here: {e}"));
        return None;
    }
    if let Err(e) = support::run_command("nft", &["--version"]) {
        skip("nat_netns", &format!("nftables is not installed: {e}"));
        return None;
    }
    let pid = std::process::id();
    let mut topo = Topology { names: Vec::new() };
    for role in ["pub", "r1", "r2", "home1", "home2"] {
        let name = format!("encrypto-nat-{pid}-{role}");
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        topo.names.push(name);
    }
    let (public, r1, r2, h1, h2) = (
        topo.ns("pub"),
        topo.ns("r1"),
        topo.ns("r2"),
        topo.ns("home1"),
        topo.ns("home2"),
    );
    for ns in &topo.names {
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    // The public network: a bridge in `pub` (the relay's own address is on it) and one
    // veth per router.
    ip(&["-n", &public, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &public, "addr", "add", "10.99.0.1/24", "dev", "br0"]);
    ip(&["-n", &public, "link", "set", "br0", "up"]);
    for (router, wan_ip, lan_net, lan_gw, home, home_ip, tag) in [
        (
            &r1,
            "10.99.0.11/24",
            "192.168.1.0/24",
            "192.168.1.1",
            &h1,
            "192.168.1.2/24",
            "1",
        ),
        (
            &r2,
            "10.99.0.12/24",
            "192.168.2.0/24",
            "192.168.2.1",
            &h2,
            "192.168.2.2/24",
            "2",
        ),
    ] {
        let (port, wan, lan, host) = (
            format!("p{tag}"),
            format!("wan{tag}"),
            format!("lan{tag}"),
            format!("eth{tag}"),
        );
        ip(&[
            "link", "add", &port, "netns", &public, "type", "veth", "peer", "name", &wan, "netns",
            router,
        ]);
        ip(&["-n", &public, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &public, "link", "set", &port, "up"]);
        ip(&["-n", router, "addr", "add", wan_ip, "dev", &wan]);
        ip(&["-n", router, "link", "set", &wan, "up"]);
        ip(&[
            "link", "add", &lan, "netns", router, "type", "veth", "peer", "name", &host, "netns",
            home,
        ]);
        ip(&[
            "-n",
            router,
            "addr",
            "add",
            &format!("{lan_gw}/24"),
            "dev",
            &lan,
        ]);
        ip(&["-n", router, "link", "set", &lan, "up"]);
        ip(&["-n", home, "addr", "add", home_ip, "dev", &host]);
        ip(&["-n", home, "link", "set", &host, "up"]);
        ip(&["-n", home, "route", "add", "default", "via", lan_gw]);
        exec(router, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        exec(router, "nft", &["add", "table", "ip", "nat"]);
        exec(
            router,
            "nft",
            &[
                "add",
                "chain",
                "ip",
                "nat",
                "post",
                "{ type nat hook postrouting priority srcnat ; }",
            ],
        );
        exec(
            router,
            "nft",
            &[
                "add",
                "rule",
                "ip",
                "nat",
                "post",
                "ip",
                "saddr",
                lan_net,
                "oifname",
                &wan,
                "masquerade",
            ],
        );
    }
    Some(topo)
}

#[test]
fn users_behind_two_nats_find_each_other_and_chat_through_a_relay() {
    let Some(topo) = topology() else { return };
    let (relay, alice, bob) = (User::new("relay"), User::new("Alice"), User::new("Bob"));
    let dr = relay.start_in(
        Some(&topo.ns("pub")),
        "/ip4/10.99.0.1/tcp/4001",
        &[
            "--relay-server",
            "--external-addr",
            "/ip4/10.99.0.1/tcp/4001",
        ],
    );
    let bootstrap = format!("/ip4/10.99.0.1/tcp/4001/p2p/{}", dr.peer_id);
    let da = alice.start_in(
        Some(&topo.ns("home1")),
        "/ip4/0.0.0.0/tcp/0",
        &["--bootstrap", &bootstrap],
    );
    let db = bob.start_in(
        Some(&topo.ns("home2")),
        "/ip4/0.0.0.0/tcp/0",
        &["--bootstrap", &bootstrap],
    );
    let watch = Watch::start(&alice);

    // Each reserves a slot on the relay: its relayed address is among its listen addresses.
    for user in [&alice, &bob] {
        eventually("a relayed listen address", || {
            user.one(&["whoami"])["listen_addrs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.as_str().unwrap().contains("/p2p-circuit"))
        });
    }

    // Alice finds Bob by name, adds him by peer id alone, and they talk.
    eventually("Bob found in the DHT", || {
        alice
            .json(&["search", "--dht", "bob"])
            .iter()
            .any(|f| f["peer_id"] == db.peer_id.as_str())
    });
    alice.one(&["add", &db.peer_id]);
    let sent = alice.one(&["send", &db.peer_id, "hello through two NATs", "--wait"]);
    assert_eq!(sent["status"], "delivered");
    let reply = bob.one(&["send", &da.peer_id, "hello back", "--wait"]);
    assert_eq!(reply["status"], "delivered");
    assert_eq!(
        texts(&alice.json(&["history", &db.peer_id])),
        ["hello through two NATs", "hello back"]
    );

    // A 16 MiB file, over whatever connects them (the relay, or a punched hole).
    let mut content = vec![0u8; 16 << 20];
    for (i, b) in content.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()[7];
    }
    let path = alice.tmp.path().join("holiday.mp4");
    std::fs::write(&path, &content).unwrap();
    let offer = alice.one(&[
        "send-file",
        &db.peer_id,
        path.to_str().unwrap(),
        "--wait",
        "--timeout",
        "55",
    ]);
    let received = bob
        .json(&["files"])
        .into_iter()
        .find(|f| f["file_id"] == offer["file_id"])
        .unwrap();
    assert_eq!(received["state"], "complete");
    assert_eq!(received["sha256"], offer["sha256"]);
    assert!(std::fs::read(received["path"].as_str().unwrap()).unwrap() == content);

    // DCUtR tries to upgrade the relayed connection (it may fail behind some NATs): give it a
    // bounded while, then report what happened.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut punched = Vec::new();
    while punched.is_empty() && std::time::Instant::now() < deadline {
        if let Ok(event) = watch
            .lines
            .recv_timeout(std::time::Duration::from_millis(200))
            && event["event"] == "hole_punch"
        {
            punched.push(event);
        }
    }
    // How they are connected now, honestly: via relay, or direct after hole punching.
    let peers = alice.json(&["peers"]);
    let bob_seen: &Value = peers
        .iter()
        .find(|p| p["peer_id"] == db.peer_id.as_str())
        .unwrap();
    assert_eq!(bob_seen["connected"], true);
    let via = bob_seen["via"].as_str().unwrap().to_owned();
    assert!(via == "relay" || via == "direct", "{via}");
    // What `peers` says agrees with what DCUtR reported.
    if punched.first().is_some_and(|e| e["direct"] == true) {
        assert_eq!(via, "direct");
    }
    println!("NAT test: Alice reaches Bob via {via}; DCUtR events seen by Alice: {punched:?}");
    drop(watch);
    drop((da, db, dr));
}
