//! Shared caps through two kappe proxies on one Redis (and one Redis Cluster): exact across
//! instances, fail-closed while Redis is down, and recovery without a restart.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::support::redis::{RedisCluster, RedisServer, require};
use crate::support::*;

const RT: &str = "/ad?c=rt-shoes&rt=1";

async fn pair(up: &Upstream, store: &str, extra: &[&str]) -> (Kappe, Kappe) {
    let secret = "a-shared-secret-of-enough-length";
    let mut flags = vec![
        "--store",
        store,
        "--secret",
        secret,
        "--store-timeout",
        "200ms",
    ];
    flags.extend_from_slice(extra);
    (
        Kappe::start(&up.url(), &flags).await,
        Kappe::start(&up.url(), &flags).await,
    )
}

/// Two proxies receiving alternating and then concurrent requests for one visitor admit exactly
/// the cap between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_proxies_on_redis_admit_exactly_the_cap() {
    if !require("two_proxies_on_redis_admit_exactly_the_cap") {
        return;
    }
    let redis = RedisServer::start();
    let up = ad_server().await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (a, b) = pair(&up, &url, &["--cap", "3/1d"]).await;
    let mut served = 0;
    for i in 0..8 {
        let k = if i % 2 == 0 { &a } else { &b };
        served += usize::from(visit(k, RT, "alt", &[]).await.0 == StatusCode::OK);
    }
    assert_eq!(served, 3);

    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let k = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(
            async move { visit(&k, RT, "burst", &[]).await.0 },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap() == StatusCode::OK);
    }
    assert_eq!(ok, 3);
    // Either proxy shows the same report.
    let (_, _, json) = visit(&b, "/_kappe/me", "burst", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["campaigns"][0]["impressions"].as_array().unwrap().len(),
        3
    );
}

/// While Redis is down, capped responses are dropped (store_unavailable) and uncapped ones
/// served; /readyz says why; when Redis returns, kappe recovers by itself. With
/// `--store-failure open` capped responses are served uncounted instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_fails_closed_and_recovers() {
    if !require("redis_outage_fails_closed_and_recovers") {
        return;
    }
    let mut redis = RedisServer::start();
    let up = ad_server().await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let (closed, open) = pair(&up, &url, &["--cap", "5/1d"]).await;
    let open = {
        drop(open);
        let flags = [
            "--store",
            &url,
            "--store-timeout",
            "200ms",
            "--cap",
            "5/1d",
            "--store-failure",
            "open",
        ];
        Kappe::start(&up.url(), &flags).await
    };
    assert_eq!(visit(&closed, RT, "o", &[]).await.0, StatusCode::OK);
    assert_eq!(get(&closed.admin_url("/readyz")).await.0, StatusCode::OK);

    redis.kill();
    assert_eq!(visit(&closed, RT, "o", &[]).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        visit(&closed, "/page", "o", &[]).await.0,
        StatusCode::OK,
        "uncapped traffic flows"
    );
    assert_eq!(
        closed
            .metric("kappe_dropped_total{reason=\"store_unavailable\"}")
            .await,
        1.0
    );
    let errors = closed
        .metric("kappe_store_errors_total{kind=\"unavailable\"}")
        .await
        + closed
            .metric("kappe_store_errors_total{kind=\"timeout\"}")
            .await;
    assert!(errors >= 1.0);
    let (ready, why) = get(&closed.admin_url("/readyz")).await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert!(why.contains("store"), "{why}");
    assert_eq!(
        visit(&open, RT, "o", &[]).await.0,
        StatusCode::OK,
        "fail open serves uncounted"
    );

    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        if visit(&closed, RT, "o", &[]).await.0 == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "kappe recovered without a restart");
    assert_eq!(get(&closed.admin_url("/readyz")).await.0, StatusCode::OK);
}

/// Through two proxies on a three-master Redis Cluster, a visitor-wide cap holds across
/// campaigns whose counts live in one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_visitor_cap_holds_across_proxies() {
    if !require("cluster_visitor_cap_holds_across_proxies") {
        return;
    }
    let cluster = RedisCluster::start();
    let up = ad_server().await;
    let url = match cluster.url() {
        kappe::store::redis::StoreUrl::Cluster(nodes) => {
            let hosts: Vec<String> = nodes
                .iter()
                .map(|n| n.trim_start_matches("redis://").to_owned())
                .collect();
            format!("redis+cluster://{}", hosts.join(","))
        }
        other => panic!("not a cluster url: {other:?}"),
    };
    let (a, b) = pair(&up, &url, &["--cap", "10/1d", "--visitor-cap", "4/1d"]).await;
    for visitor in ["c1", "c2", "c3"] {
        let mut ok = 0;
        for (i, c) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
            let k = if i % 2 == 0 { &a } else { &b };
            ok += usize::from(
                visit(k, &format!("/ad?c=rt-{c}&rt=1"), visitor, &[])
                    .await
                    .0
                    == StatusCode::OK,
            );
        }
        assert_eq!(ok, 4, "{visitor}");
    }
}

/// A Redis that stalls (stopped, its connections open, no answer) costs a capped request no
/// more than about --store-timeout: the response is dropped as store_unavailable, the failure is
/// counted as a timeout, and kappe serves again as soon as Redis does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_redis_is_bounded_by_the_store_timeout() {
    if !require("a_stalled_redis_is_bounded_by_the_store_timeout") {
        return;
    }
    let redis = RedisServer::start();
    let up = ad_server().await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let k = Kappe::start(
        &up.url(),
        &["--store", &url, "--store-timeout", "200ms", "--cap", "5/1d"],
    )
    .await;
    assert_eq!(visit(&k, RT, "s", &[]).await.0, StatusCode::OK);

    redis.stall(true);
    let started = std::time::Instant::now();
    let status = visit(&k, RT, "s", &[]).await.0;
    let took = started.elapsed();
    redis.stall(false);
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        took < Duration::from_secs(2),
        "a stalled Redis held the request {took:?}"
    );
    assert!(k.metric("kappe_store_errors_total{kind=\"timeout\"}").await >= 1.0);
    assert_eq!(
        k.metric("kappe_dropped_total{reason=\"store_unavailable\"}")
            .await,
        1.0
    );

    let mut served = false;
    for _ in 0..50 {
        if visit(&k, RT, "s", &[]).await.0 == StatusCode::OK {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "kappe serves again once Redis answers");
}
