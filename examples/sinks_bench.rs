//! Benchmark of the sinks: alerts per second through the file sink and through a webhook sink to
//! a local receiver (a minimal HTTP/1.1 server in this process), and the outbox's cost per alert
//! (durable spool + removal, with and without fsync). Run: `bench/sinks.sh` or
//! `cargo run --release --example sinks_bench -- [ALERTS]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use armorwatch::alert::AlertType;
use armorwatch::sinks::config::{SecretContext, parse_sinks};
use armorwatch::sinks::outbox::Outbox;
use armorwatch::sinks::sample::sample_alert;
use armorwatch::sinks::{SinkSet, SinkSetOptions, now_ms};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Answer every request with 200 (keep-alive), counting nothing: the bench measures the sender.
async fn receiver() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn specs(text: &str) -> Vec<armorwatch::sinks::SinkSpec> {
    let t: toml::Table = toml::from_str(text).unwrap();
    parse_sinks(t["sinks"].as_table().unwrap(), &SecretContext::default()).unwrap()
}

fn alerts(n: usize) -> Vec<armorwatch::alert::Alert> {
    (0..n)
        .map(|i| {
            let mut a = sample_alert("bench", now_ms());
            a.id = format!("inc-{}", i % 50);
            a.seq = (i / 50 + 1) as u64;
            a.alert_type = if a.seq == 1 {
                AlertType::IncidentOpened
            } else {
                AlertType::IncidentUpdate
            };
            a
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let list = alerts(n);

    // File sink.
    let path = dir.path().join("alerts.jsonl");
    let s = specs(&format!(
        "[sinks.f]\ntype = \"file\"\npath = \"{}\"\n",
        path.display()
    ));
    let mut o = SinkSetOptions::new(dir.path().join("s1"), "bench");
    o.queue_capacity = n + 1;
    let set = SinkSet::start(&s, o).unwrap();
    let t = Instant::now();
    for a in &list {
        set.deliver_alert(a);
    }
    set.flush_local().await;
    let secs = t.elapsed().as_secs_f64();
    set.shutdown(Duration::from_secs(5)).await;
    println!(
        "file sink:            {n} alerts in {secs:.3} s = {:.0} alerts/s",
        n as f64 / secs
    );

    // Webhook sink through the outbox, fsync on and off.
    let port = receiver().await;
    for fsync in [true, false] {
        let m = n.min(5_000);
        let s = specs(&format!(
            "[sinks.w]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/in\"\noutbox_max_entries = {}\n",
            m + 1
        ));
        let mut o = SinkSetOptions::new(dir.path().join(format!("s-{fsync}")), "bench");
        o.outbox_fsync = fsync;
        let set = SinkSet::start(&s, o).unwrap();
        let t = Instant::now();
        for a in &list[..m] {
            set.deliver_alert(a);
        }
        let spooled = t.elapsed().as_secs_f64();
        while set.pending("w") != Some(0) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(set.stats()[0].delivered as usize, m);
        set.shutdown(Duration::from_secs(5)).await;
        println!(
            "webhook sink (fsync={fsync}): {m} alerts delivered in {secs:.3} s = {:.0} alerts/s (spooling alone {:.0} alerts/s)",
            m as f64 / secs,
            m as f64 / spooled
        );
    }

    // Outbox alone: push + remove per alert.
    let json: Vec<String> = list
        .iter()
        .take(2_000)
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    for fsync in [true, false] {
        let (mut ob, _) =
            Outbox::open(&dir.path().join(format!("ob-{fsync}")), fsync, usize::MAX).unwrap();
        let t = Instant::now();
        let seqs: Vec<u64> = json
            .iter()
            .map(|j| ob.push(j, now_ms()).unwrap().seq)
            .collect();
        let push = t.elapsed().as_secs_f64() / json.len() as f64;
        let t = Instant::now();
        for seq in seqs {
            ob.remove(seq).unwrap();
        }
        let remove = t.elapsed().as_secs_f64() / json.len() as f64;
        println!(
            "outbox (fsync={fsync}): spool {:.1} µs per alert, removal {:.1} µs per alert",
            push * 1e6,
            remove * 1e6
        );
    }
}
