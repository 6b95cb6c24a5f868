//! The Redis launchers themselves, exercised with redis-cli and raw RESP
//! only: persistence across restarts, passwords, TLS, a Sentinel failover,
//! a Cluster across slots and a Cluster failover.

use std::time::{Duration, Instant};

use crate::support::redis::*;
use crate::support::{TempDir, test_certs};

#[test]
fn persistent_redis_keeps_data_across_restarts_and_kills() {
    let t0 = Instant::now();
    let mut r = RedisServer::start(RedisOpts::default().persistent());
    eprintln!("standalone (AOF) started in {:?}", t0.elapsed());
    let url = r.url();
    assert_eq!(url, format!("redis://127.0.0.1:{}", r.port));

    assert_eq!(r.cli(&["SET", "sess:1", "alice"]), "OK");
    assert_eq!(r.cli(&["SADD", "user:alice", "sess:1"]), "1");
    r.stop();
    assert!(!r.is_running());
    let t0 = Instant::now();
    r.restart();
    eprintln!("standalone (AOF) restarted in {:?}", t0.elapsed());
    assert_eq!(r.url(), url, "same port after a restart");
    assert_eq!(r.cli(&["GET", "sess:1"]), "alice");

    // appendfsync always: even a SIGKILL loses nothing acknowledged.
    assert_eq!(r.cli(&["SET", "sess:2", "bob"]), "OK");
    r.kill();
    assert!(
        redis_cmd(r.port, &["PING"]).is_err(),
        "killed, yet answering"
    );
    r.restart();
    assert_eq!(r.keys("sess:*"), ["sess:1", "sess:2"]);
    assert_eq!(r.cli(&["SMEMBERS", "user:alice"]), "sess:1");
}

#[test]
fn redis_without_persistence_forgets_everything_on_restart() {
    let mut r = RedisServer::start(RedisOpts::default());
    assert_eq!(r.cli(&["SET", "sess:1", "alice", "PX", "60000"]), "OK");
    r.query(&["HSET", "h", "f", "v"]);
    let dump = r.dump_all();
    assert!(dump.contains("sess:1 (string, pttl "), "{dump}");
    assert!(dump.contains(": alice\n"), "{dump}");
    assert!(dump.contains("h (hash, pttl -1): [\"f\", \"v\"]"), "{dump}");

    r.stop(); // SIGTERM: no save point, so no RDB either
    r.restart();
    assert_eq!(r.cli(&["GET", "sess:1"]), "");
    assert!(r.keys("*").is_empty(), "{}", r.dump_all());
    assert_eq!(r.dump_all(), "");

    // Dropping the launcher kills the process.
    let pid = r.pid().unwrap();
    drop(r);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} survived the drop"
    );
}

#[test]
fn redis_with_a_password() {
    let r = RedisServer::start(RedisOpts::default().password("s3cret pass"));
    assert_eq!(
        r.url(),
        format!("redis://:s3cret pass@127.0.0.1:{}", r.port)
    );
    assert_eq!(r.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(r.cmd(&["GET", "k"]).unwrap(), "v");
    let anon = redis_cmd(r.port, &["GET", "k"]).unwrap_err();
    assert!(anon.starts_with("NOAUTH"), "{anon}");
    let wrong = RedisConn::connect(r.port, Some("nope")).err().unwrap();
    assert!(wrong.starts_with("WRONGPASS"), "{wrong}");
}

#[test]
fn redis_over_tls() {
    let certs = TempDir::new("redis-certs");
    let (ca, cert, key) = test_certs(&certs);
    let t0 = Instant::now();
    let mut r = RedisServer::start_tls(&cert, &key, &ca);
    eprintln!("standalone (TLS) started in {:?}", t0.elapsed());
    drop(certs); // the server keeps copies
    assert_eq!(r.url(), format!("rediss://127.0.0.1:{}", r.port));
    assert_ne!(r.port, r.admin_port);
    // redis-cli over TLS, verifying the server against the CA.
    assert_eq!(r.cli(&["SET", "k", "over-tls"]), "OK");
    assert_eq!(r.cli(&["GET", "k"]), "over-tls");
    // Plain RESP on the TLS port gets no reply.
    assert!(redis_cmd(r.port, &["PING"]).is_err());
    // The fixture's own checks use the plaintext admin port.
    assert_eq!(r.keys("*"), ["k"]);
    r.restart();
    assert_eq!(r.cli(&["PING"]), "PONG");

    // Mutual TLS: redis-cli presents the (copied) certificate.
    let m = RedisServer::start_tls_generated();
    assert!(m.ca_file().unwrap().is_file());
    assert_eq!(m.cli(&["PING"]), "PONG");
    let certs = TempDir::new("redis-certs");
    let (ca, cert, key) = test_certs(&certs);
    let mtls = RedisServer::start(RedisOpts::default().tls(&cert, &key, &ca).tls_client_auth());
    assert_eq!(mtls.cli(&["PING"]), "PONG");
    let mut anon = std::process::Command::new(redis_cli_bin());
    anon.args(["-h", "127.0.0.1", "-p", &mtls.port.to_string(), "--tls"])
        .arg("--cacert")
        .arg(mtls.ca_file().unwrap())
        .arg("PING");
    let out = run_bounded(anon, Duration::from_secs(10));
    assert!(
        !out.stdout.contains("PONG"),
        "no client certificate, yet: {out:?}"
    );
}

#[test]
fn sentinel_failover_promotes_the_replica_with_the_data() {
    let t0 = Instant::now();
    let mut s = RedisSentinel::start();
    eprintln!("sentinel set started in {:?}", t0.elapsed());
    let ports = s.sentinel_ports();
    assert_eq!(
        s.sentinel_url(),
        format!(
            "redis+sentinel://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/mymaster",
            ports[0], ports[1], ports[2]
        )
    );
    assert_eq!(s.master_name(), "mymaster");
    let old = s.master_port();
    let replica = *s.data_ports().iter().find(|p| **p != old).unwrap();

    let mut c = s.conn(old);
    assert_eq!(c.cmd(&["SET", "sess:1", "alice"]).unwrap(), "OK");
    assert_eq!(c.cmd(&["WAIT", "1", "1000"]).unwrap(), "1");
    drop(c);
    let ro = s.cmd(replica, &["SET", "x", "y"]).unwrap_err();
    assert!(ro.starts_with("READONLY"), "{ro}");

    assert_eq!(s.kill_master(), old);
    let t0 = Instant::now();
    let new = s.wait_failover(Duration::from_secs(15));
    eprintln!("sentinel failover took {:?}", t0.elapsed());
    assert_eq!(new, replica);
    assert_eq!(s.master_port(), new);
    assert_eq!(s.cmd(new, &["GET", "sess:1"]).unwrap(), "alice");
    assert_eq!(s.cmd(new, &["SET", "sess:2", "bob"]).unwrap(), "OK");
    let addr = s.cli(
        ports[2],
        &["SENTINEL", "get-master-addr-by-name", "mymaster"],
    );
    assert_eq!(addr, format!("127.0.0.1\n{new}"));
}

#[test]
fn cluster_spreads_keys_over_three_masters() {
    let t0 = Instant::now();
    let c = RedisCluster::start();
    eprintln!("cluster (3 masters) started in {:?}", t0.elapsed());
    assert_eq!(c.urls().len(), 3);
    assert_eq!(c.urls()[0], format!("redis://127.0.0.1:{}", c.ports()[0]));
    let mut masters = c.master_ports();
    masters.sort_unstable();
    let mut ports = c.ports();
    ports.sort_unstable();
    assert_eq!(masters, ports);

    for i in 0..12 {
        let k = format!("sess:{i}");
        assert_eq!(c.cli(&["SET", &k, &format!("v{i}")]), "OK");
    }
    for i in 0..12 {
        assert_eq!(c.cli(&["GET", &format!("sess:{i}")]), format!("v{i}"));
    }
    let holding = c
        .ports()
        .iter()
        .filter(|p| c.cmd(**p, &["DBSIZE"]).unwrap() != "0")
        .count();
    assert!(holding >= 2, "12 keys on {holding} master(s)");
    assert_eq!(c.keys("sess:*").len(), 12);
    assert_eq!(c.dump_all().lines().count(), 12);
    // Without -c, a node answers MOVED for another's slot.
    let moved = c
        .ports()
        .iter()
        .filter_map(|p| c.cmd(*p, &["GET", "sess:0"]).err())
        .next()
        .expect("some node does not own sess:0");
    assert!(moved.starts_with("MOVED "), "{moved}");
}

#[test]
fn cluster_with_replicas_fails_over() {
    let t0 = Instant::now();
    let mut c = RedisCluster::start_with_replicas();
    eprintln!("cluster (3+3) started in {:?}", t0.elapsed());
    assert_eq!(c.master_ports().len(), 3);
    assert_eq!(c.replica_ports().len(), 3);

    // Write on the owning master and WAIT on that same connection: WAIT
    // only covers the writes of the client that calls it.
    let mut owner = None;
    for p in c.master_ports() {
        let mut conn = RedisConn::connect(p, None).unwrap();
        if conn
            .cmd(&["SET", "sess:1", "alice"])
            .is_ok_and(|r| r == "OK")
        {
            assert_eq!(conn.cmd(&["WAIT", "1", "5000"]).unwrap(), "1");
            owner = Some(p);
            break;
        }
    }
    let owner = owner.expect("no master owns the slot of sess:1");

    c.kill_node(owner);
    let t0 = Instant::now();
    c.wait_ok(Duration::from_secs(15));
    eprintln!("cluster failover took {:?}", t0.elapsed());
    assert!(!c.master_ports().contains(&owner));
    assert_eq!(c.master_ports().len(), 3);
    assert_eq!(c.cli(&["GET", "sess:1"]), "alice");
}
