//! The Redis store against real `redis-server` processes, standalone and as a three-master
//! Cluster: exact caps across instances, visitor-wide caps across campaigns, sliding windows
//! (on the server's clock, shifted through the test offset hook rather than slept through),
//! report/erase/burn, TTLs, script reloading, failure and recovery, and slot migration.

use std::time::Duration;

use futures_util::future::join_all;
use kappe::policy::{Cap, glob_match};
use kappe::store::redis::{RedisOptions, RedisStore, StoreUrl};
use kappe::store::{Admission, AdmitRequest, DenyReason, StoreError, VisitorKey};

use crate::support::redis::{RedisCluster, RedisServer, cli, require};

fn cap(limit: u32, window_secs: u32) -> Cap {
    Cap { limit, window_secs }
}

/// Options for tests about semantics: a generous timeout, because the point there is the rule,
/// not latency on a shared, loaded machine.
fn opts() -> RedisOptions {
    RedisOptions {
        timeout: Duration::from_secs(5),
        ..RedisOptions::default()
    }
}

async fn store(url: &StoreUrl) -> RedisStore {
    RedisStore::connect(url, opts()).await.expect("connect")
}

fn key(v: VisitorKey) -> String {
    format!("kappe:v:{}", v.to_hex())
}

fn admitted(results: &[Result<Admission, StoreError>]) -> usize {
    results
        .iter()
        .filter(|r| matches!(r, Ok(Admission::Admitted)))
        .count()
}

fn denied_reason(a: Admission) -> Option<DenyReason> {
    match a {
        Admission::Admitted => None,
        Admission::Denied(d) => Some(d.reason),
    }
}

/// Two instances alternating, then 200 concurrent admits from both, admit exactly the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_admit_exactly_the_cap() {
    if !require("two_instances_admit_exactly_the_cap") {
        return;
    }
    let server = RedisServer::start();
    let (a, b) = (store(&server.url()).await, store(&server.url()).await);
    let caps = [cap(3, 3600)];
    let req = AdmitRequest::campaign("rt-shoes", &caps);

    let v = VisitorKey(1);
    let mut alternating = Vec::new();
    for i in 0..10 {
        let s = if i % 2 == 0 { &a } else { &b };
        alternating.push(s.admit(v, &req).await);
    }
    assert_eq!(admitted(&alternating), 3);
    assert!(alternating[3..].iter().all(|r| matches!(
        r,
        Ok(Admission::Denied(d)) if d.reason == DenyReason::Cap && d.rule == Some(cap(3, 3600))
    )));

    let caps = [cap(5, 3600)];
    let req = AdmitRequest::campaign("rt-shoes", &caps);
    let v = VisitorKey(2);
    let results = join_all((0..200).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { s.admit(v, &req).await }
    }))
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(admitted(&results), 5);
}

/// In the Cluster, a visitor cap of 3 holds across ten campaigns admitted concurrently from two
/// instances, for visitors whose keys live on different masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_cap_holds_across_campaigns_in_the_cluster() {
    if !require("visitor_cap_holds_across_campaigns_in_the_cluster") {
        return;
    }
    let cluster = RedisCluster::start();
    let (a, b) = (store(&cluster.url()).await, store(&cluster.url()).await);
    let campaign_caps = [cap(10, 3600)];
    let visitor_caps = [cap(3, 86_400)];
    let names: Vec<String> = (0..10).map(|i| format!("rt-{i}")).collect();
    let mut owners = std::collections::BTreeSet::new();
    for v in (0..6).map(VisitorKey) {
        owners.insert(cluster.owner_of(cluster.slot_of(&key(v))));
        let results = join_all(names.iter().enumerate().map(|(i, name)| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let req = AdmitRequest {
                visitor_caps: &visitor_caps,
                ..AdmitRequest::campaign(name, &campaign_caps)
            };
            async move { s.admit(v, &req).await }
        }))
        .await;
        assert_eq!(admitted(&results), 3, "{v:?}: {results:?}");
        for r in results {
            let r = r.expect("admit");
            assert!(matches!(
                denied_reason(r),
                None | Some(DenyReason::VisitorCap)
            ));
        }
    }
    assert!(owners.len() > 1, "visitors should span masters: {owners:?}");
}

/// A window slides on the server's clock: denied until the oldest counted impression leaves
/// the window, admitted from then on, as seen by both instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_slides_on_the_server_clock() {
    if !require("window_slides_on_the_server_clock") {
        return;
    }
    let server = RedisServer::start();
    let (a, b) = (store(&server.url()).await, store(&server.url()).await);
    let caps = [cap(2, 60)];
    let req = AdmitRequest::campaign("rt-shoes", &caps);
    let v = VisitorKey(3);
    assert_eq!(a.admit(v, &req).await.unwrap(), Admission::Admitted);
    let first = a.report(v).await.unwrap().campaigns[0].impressions[0];
    assert_eq!(b.admit(v, &req).await.unwrap(), Admission::Admitted);
    let second = a.report(v).await.unwrap().campaigns[0].impressions[1];
    let Admission::Denied(d) = a.admit(v, &req).await.unwrap() else {
        panic!("third admit within 60 s must be denied");
    };
    assert_eq!(d.reason, DenyReason::Cap);
    assert_eq!(d.retry_at, Some(first + 60));

    // Shift both instances' view of the server clock to just before retry_at. Aim two seconds
    // early so that the server's clock ticking meanwhile still leaves us inside the window.
    let server_now: i64 = cli(server.port, &["TIME"])
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for s in [&a, &b] {
        s.set_time_offset(first as i64 + 58 - server_now);
    }
    let still = b.admit(v, &req).await.unwrap();
    assert_eq!(
        denied_reason(still),
        Some(DenyReason::Cap),
        "before retry_at"
    );
    // ...and at retry_at exactly: the first impression has left the window, so one more fits
    // (two when the second impression was in the same second as the first).
    for s in [&a, &b] {
        s.set_time_offset(first as i64 + 60 - server_now);
    }
    assert_eq!(b.admit(v, &req).await.unwrap(), Admission::Admitted);
    if second == first {
        assert_eq!(a.admit(v, &req).await.unwrap(), Admission::Admitted);
    }
    assert_eq!(
        denied_reason(a.admit(v, &req).await.unwrap()),
        Some(DenyReason::Cap)
    );
}

/// Max age denies once a campaign's first impression is old enough, whatever the caps say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_stops_a_campaign_after_its_first_impression() {
    if !require("max_age_stops_a_campaign_after_its_first_impression") {
        return;
    }
    let server = RedisServer::start();
    let s = store(&server.url()).await;
    let caps = [cap(100, 3600)];
    let req = AdmitRequest {
        max_age_secs: Some(600),
        ..AdmitRequest::campaign("rt-shoes", &caps)
    };
    let v = VisitorKey(4);
    assert_eq!(s.admit(v, &req).await.unwrap(), Admission::Admitted);
    // 590, not 599: the server's clock may tick between the two admits.
    s.set_time_offset(590);
    assert_eq!(s.admit(v, &req).await.unwrap(), Admission::Admitted);
    s.set_time_offset(601);
    let denied = s.admit(v, &req).await.unwrap();
    assert_eq!(denied_reason(denied), Some(DenyReason::MaxAge));
    let Admission::Denied(d) = denied else {
        unreachable!()
    };
    assert_eq!(d.retry_at, None);
}

/// Report shows campaign, advertiser and visitor-wide records; a burn denies matching campaigns
/// until it ends; erase forgets everything and drops cached denials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_burn_and_erase_work_against_redis() {
    if !require("report_burn_and_erase_work_against_redis") {
        return;
    }
    let server = RedisServer::start();
    let s = store(&server.url()).await;
    let v = VisitorKey(5);
    let caps = [cap(1, 3600)];
    let adv_caps = [cap(5, 86_400)];
    let vis_caps = [cap(10, 86_400)];
    let req = AdmitRequest {
        advertiser: Some("acme"),
        advertiser_caps: &adv_caps,
        visitor_caps: &vis_caps,
        ..AdmitRequest::campaign("rt-shoes", &caps)
    };
    assert!(s.report(v).await.unwrap().is_empty());
    assert_eq!(s.admit(v, &req).await.unwrap(), Admission::Admitted);
    let report = s.report(v).await.unwrap();
    assert_eq!(report.campaigns.len(), 1);
    let c = &report.campaigns[0];
    assert_eq!(c.campaign, "rt-shoes");
    assert_eq!(c.impressions, vec![c.first_seen]);
    // TTL covers the widest window (Redis rounds the remaining TTL to whole seconds).
    assert!(
        (c.first_seen + 86_399..=c.first_seen + 86_400).contains(&c.forget_at),
        "{c:?}"
    );
    assert_eq!(report.advertisers[0].campaign, "acme");
    assert_eq!(report.visitor_impressions, vec![c.first_seen]);

    // Capped now; the denial is cached locally.
    assert_eq!(
        denied_reason(s.admit(v, &req).await.unwrap()),
        Some(DenyReason::Cap)
    );
    let sent = s.stats().admits_sent;
    assert_eq!(
        denied_reason(s.admit(v, &req).await.unwrap()),
        Some(DenyReason::Cap)
    );
    assert_eq!(s.stats().admits_sent, sent, "answered from the cache");
    assert_eq!(s.stats().cache_hits, 1);

    s.burn(v, "rt-*", 7200).await.unwrap();
    let other = AdmitRequest {
        campaign: "rt-socks",
        ..req
    };
    let Admission::Denied(d) = s.admit(v, &other).await.unwrap() else {
        panic!("burned campaign admitted");
    };
    assert_eq!(d.reason, DenyReason::Burned);
    let report = s.report(v).await.unwrap();
    assert_eq!(report.burns.len(), 1);
    assert_eq!(report.burns[0].pattern, "rt-*");
    assert_eq!(d.retry_at, Some(report.burns[0].until));
    let brand = AdmitRequest {
        campaign: "brand-x",
        ..req
    };
    assert_eq!(s.admit(v, &brand).await.unwrap(), Admission::Admitted);

    assert!(s.erase(v).await.unwrap());
    assert!(s.report(v).await.unwrap().is_empty());
    assert!(!s.erase(v).await.unwrap());
    assert_eq!(s.stats().cache_entries, 0);
    assert_eq!(s.admit(v, &req).await.unwrap(), Admission::Admitted);
}

/// Burn patterns match inside Lua exactly as `glob_match` does, including ids with characters
/// that are special in Lua patterns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burn_globs_in_lua_mirror_glob_match() {
    if !require("burn_globs_in_lua_mirror_glob_match") {
        return;
    }
    let server = RedisServer::start();
    let s = store(&server.url()).await;
    let patterns = [
        "*", "rt-*", "rt-?hoes", "*shoes*", "a*b*c", "shoes", "%d.*", "[x]?", "**",
    ];
    let ids = [
        "rt-shoes",
        "brand-shoes",
        "rt-shoes-2",
        "a-b-b-c",
        "a-b-b-",
        "shoes",
        "%d.1",
        "[x]y",
        "",
        "x*",
    ];
    let caps = [cap(100, 3600)];
    let mut n = 0u64;
    for p in patterns {
        for id in ids {
            n += 1;
            let v = VisitorKey(1000 + n);
            s.burn(v, p, 3600).await.unwrap();
            let got = s
                .admit(v, &AdmitRequest::campaign(id, &caps))
                .await
                .unwrap();
            let burned = denied_reason(got) == Some(DenyReason::Burned);
            assert_eq!(
                burned,
                glob_match(p.as_bytes(), id.as_bytes()),
                "{p:?} vs {id:?}"
            );
        }
    }
}

/// Every key gets a TTL from its longest need, never above max retention, and Redis forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_within_max_retention() {
    if !require("keys_expire_within_max_retention") {
        return;
    }
    let server = RedisServer::start();
    let s = store(&server.url()).await;
    let ttl = |v| cli(server.port, &["TTL", &key(v)]).parse::<i64>().unwrap();

    let (week, hour) = ([cap(20, 7 * 86_400)], [cap(3, 3600)]);
    s.admit(VisitorKey(1), &AdmitRequest::campaign("a", &hour))
        .await
        .unwrap();
    assert!(
        (3590..=3600).contains(&ttl(VisitorKey(1))),
        "{}",
        ttl(VisitorKey(1))
    );
    // A wider window on the same key extends it; a narrower one never shortens it.
    s.admit(VisitorKey(1), &AdmitRequest::campaign("b", &week))
        .await
        .unwrap();
    s.admit(VisitorKey(1), &AdmitRequest::campaign("a", &hour))
        .await
        .unwrap();
    assert!(ttl(VisitorKey(1)) > 7 * 86_400 - 10);
    // Max age needs first-seen kept longer than any window.
    let aged = AdmitRequest {
        max_age_secs: Some(14 * 86_400),
        ..AdmitRequest::campaign("a", &hour)
    };
    s.admit(VisitorKey(2), &aged).await.unwrap();
    assert!(ttl(VisitorKey(2)) > 14 * 86_400 - 10);
    // Capped by the retention default (30 d), for windows and burns alike.
    s.burn(VisitorKey(3), "*", 3650 * 86_400).await.unwrap();
    assert!((30 * 86_400 - 10..=30 * 86_400).contains(&ttl(VisitorKey(3))));

    let short = RedisStore::connect(
        &server.url(),
        RedisOptions {
            max_retention_secs: 1,
            ..opts()
        },
    )
    .await
    .unwrap();
    short
        .admit(VisitorKey(4), &AdmitRequest::campaign("a", &week))
        .await
        .unwrap();
    assert!((0..=1).contains(&ttl(VisitorKey(4))));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(short.report(VisitorKey(4)).await.unwrap().is_empty());
}

/// After SCRIPT FLUSH the next admit reloads the script (NOSCRIPT) and still decides correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_are_reloaded() {
    if !require("flushed_scripts_are_reloaded") {
        return;
    }
    let server = RedisServer::start();
    let s = store(&server.url()).await;
    let caps = [cap(1, 3600)];
    let v = VisitorKey(6);
    s.admit(v, &AdmitRequest::campaign("a", &caps))
        .await
        .unwrap();
    assert_eq!(cli(server.port, &["SCRIPT", "FLUSH"]), "OK");
    let Admission::Denied(d) = s
        .admit(v, &AdmitRequest::campaign("a", &caps))
        .await
        .unwrap()
    else {
        panic!("second admit must be capped");
    };
    assert_eq!(d.reason, DenyReason::Cap);
    assert_eq!(cli(server.port, &["SCRIPT", "FLUSH"]), "OK");
    s.burn(v, "b*", 60).await.unwrap();
    assert_eq!(cli(server.port, &["SCRIPT", "FLUSH"]), "OK");
    assert_eq!(s.report(v).await.unwrap().burns.len(), 1);
}

async fn until_ready(s: &RedisStore) {
    for _ in 0..200 {
        if s.ping().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("store never recovered");
}

fn is_outage(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_) | StoreError::Timeout)
}

/// Killing Redis makes operations fail with Unavailable/Timeout (bounded by the store timeout);
/// restarting Redis on the same port brings the same store back without recreating it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_fails_fast_and_the_same_store_recovers() {
    if !require("killed_redis_fails_fast_and_the_same_store_recovers") {
        return;
    }
    let mut server = RedisServer::start();
    let s = RedisStore::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let caps = [cap(5, 3600)];
    let v = VisitorKey(7);
    until_ready(&s).await;
    assert_eq!(
        s.admit(v, &AdmitRequest::campaign("a", &caps))
            .await
            .unwrap(),
        Admission::Admitted
    );

    server.kill();
    for _ in 0..3 {
        let e = s
            .admit(v, &AdmitRequest::campaign("a", &caps))
            .await
            .unwrap_err();
        assert!(is_outage(&e), "{e:?}");
        assert!(is_outage(&s.ping().await.unwrap_err()));
        assert!(is_outage(&s.report(v).await.unwrap_err()));
    }
    assert!(s.stats().errors >= 9);

    server.restart();
    until_ready(&s).await;
    assert_eq!(
        s.admit(v, &AdmitRequest::campaign("a", &caps))
            .await
            .unwrap(),
        Admission::Admitted
    );
}

/// A store connected while nothing listens starts anyway, is not ready, and becomes ready when
/// Redis appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_started_before_redis_connects_later() {
    if !require("store_started_before_redis_connects_later") {
        return;
    }
    let mut server = RedisServer::start();
    server.kill();
    let s = RedisStore::connect(&server.url(), RedisOptions::default())
        .await
        .expect("connect must not fail while Redis is down");
    assert!(is_outage(&s.ping().await.unwrap_err()));
    server.restart();
    until_ready(&s).await;
    let caps = [cap(1, 60)];
    assert_eq!(
        s.admit(VisitorKey(8), &AdmitRequest::campaign("a", &caps))
            .await
            .unwrap(),
        Admission::Admitted
    );
}

/// Moving a visitor's slot to another master is followed (MOVED): admit and report keep
/// working and see the data that moved with the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_slot_is_followed_in_the_cluster() {
    if !require("moved_slot_is_followed_in_the_cluster") {
        return;
    }
    let cluster = RedisCluster::start();
    let s = store(&cluster.url()).await;
    let caps = [cap(3, 3600)];
    let v = VisitorKey(9);
    assert_eq!(
        s.admit(v, &AdmitRequest::campaign("a", &caps))
            .await
            .unwrap(),
        Admission::Admitted
    );

    let slot = cluster.slot_of(&key(v));
    let from = cluster.owner_of(slot);
    let to = cluster
        .nodes
        .iter()
        .map(|n| n.port)
        .find(|p| *p != from)
        .unwrap();
    cluster.migrate_slot(slot, to);
    assert_eq!(cluster.owner_of(slot), to);

    assert_eq!(
        s.admit(v, &AdmitRequest::campaign("a", &caps))
            .await
            .unwrap(),
        Admission::Admitted
    );
    assert_eq!(s.report(v).await.unwrap().campaigns[0].impressions.len(), 2);
    assert_eq!(
        s.admit(v, &AdmitRequest::campaign("a", &caps))
            .await
            .unwrap(),
        Admission::Admitted
    );
    assert_eq!(
        denied_reason(
            s.admit(v, &AdmitRequest::campaign("a", &caps))
                .await
                .unwrap()
        ),
        Some(DenyReason::Cap)
    );
    assert!(s.erase(v).await.unwrap());
    assert_eq!(cli(to, &["EXISTS", &key(v)]), "0");
}

/// When every Cluster node dies, operations fail with Unavailable/Timeout; a store connected
/// during the outage still starts; both recover when the Cluster comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_outage_fails_fast_and_stores_recover() {
    if !require("cluster_outage_fails_fast_and_stores_recover") {
        return;
    }
    let mut cluster = RedisCluster::start();
    let a = RedisStore::connect(&cluster.url(), RedisOptions::default())
        .await
        .unwrap();
    let caps = [cap(5, 3600)];
    let v = VisitorKey(10);
    until_ready(&a).await;
    assert_eq!(
        a.admit(v, &AdmitRequest::campaign("a", &caps))
            .await
            .unwrap(),
        Admission::Admitted
    );

    cluster.kill_all();
    let e = a
        .admit(v, &AdmitRequest::campaign("a", &caps))
        .await
        .unwrap_err();
    assert!(is_outage(&e), "{e:?}");
    assert!(is_outage(&a.ping().await.unwrap_err()));
    let b = RedisStore::connect(&cluster.url(), RedisOptions::default())
        .await
        .expect("connect must not fail while the Cluster is down");
    assert!(is_outage(&b.ping().await.unwrap_err()));

    cluster.restart_all();
    until_ready(&a).await;
    until_ready(&b).await;
    for s in [&a, &b] {
        assert_eq!(
            s.admit(v, &AdmitRequest::campaign("a", &caps))
                .await
                .unwrap(),
            Admission::Admitted
        );
    }
    assert_eq!(b.report(v).await.unwrap().campaigns[0].impressions.len(), 2);
}
