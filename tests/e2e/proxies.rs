//! Egress proxies through the real binary: `proxies add|list|remove` and `channels update
//! --proxy-pool`, the `PROXY_POOL_URL` sync adding and removing proxies, calls carried by the
//! testkit's proxies, and the proxies' passwords in no output, log line or stored byte; in a
//! cluster, one process at a time syncs the pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use testkit::proxy::{Kind, TestProxy};

use crate::helpers::{Backend, Env};

const ADMIN_PASS: &str = "admin-proxy-pass-canary-41";
const SYNCED_PASS: &str = "synced-proxy-pass-canary-97";

/// Serves `list` (changeable) at `http://127.0.0.1:PORT/proxies.txt`.
async fn list_server(list: Arc<Mutex<String>>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/proxies.txt",
        axum::routing::get(move || {
            let list = list.clone();
            async move { list.lock().map(|l| l.clone()).unwrap_or_default() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/proxies.txt"))
}

async fn wait_for(what: &str, mut check: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check()? {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test]
async fn proxies_from_the_cli_and_the_pool_url_carry_calls_and_their_passwords_never_show_embedded()
-> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let admin_proxy = TestProxy::start(Kind::Socks5, Some(("router", ADMIN_PASS))).await?;
    let synced_proxy = TestProxy::start(Kind::Http, Some(("sync", SYNCED_PASS))).await?;
    let list = Arc::new(Mutex::new(format!("# test list\n{}\n", synced_proxy.url_with_login())));
    let list_url = list_server(list.clone()).await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    let serve = env
        .serve_with_env(&[
            ("RUST_LOG", "debug"),
            ("PROXY_POOL_ENABLED", "true"),
            ("PROXY_POOL_URL", list_url.as_str()),
            ("PROXY_POOL_NAME", "synced"),
            ("PROXY_POOL_INTERVAL", "1"),
            ("LLM_ROUTER_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8"),
        ])
        .await?;
    env.wait_for_model(&serve, &key, crate::helpers::MODEL).await?;

    let out = env.cli(&["proxies", "add", "--pool", "eu", "--url", &admin_proxy.url_with_login(), "--name", "eu-a"])?;
    ensure!(out.contains("eu-a") && !out.contains(ADMIN_PASS), "{out}");
    let masked = format!("socks5://***@{}", admin_proxy.addr());
    let listed = env.cli(&["proxies", "list"])?;
    ensure!(listed.contains(&masked) && !listed.contains(ADMIN_PASS), "{listed}");
    let refused =
        env.cli_fails(&["proxies", "add", "--pool", "eu", "--url", "socks5://u:hunter2@169.254.169.254:1080"])?;
    ensure!(refused.contains("169.254.169.254") && !refused.contains("hunter2"), "{refused}");

    env.cli(&["channels", "update", "fake", "--proxy-pool", "eu"])?;
    let (status, body) = env.chat(&serve, &key, false).await?;
    ensure!(status == 200, "{status} {body}\n{}", serve.log());
    ensure!(admin_proxy.count("POST /v1/chat/completions") == 1, "the admin's proxy did not carry the call");

    // The synced list's proxy joins pool `synced`; the channel moves there.
    wait_for("the synced proxy", || {
        let l = env.cli(&["proxies", "list"])?;
        Ok(l.lines().any(|line| line.contains("\tsynced\t") && line.ends_with("pool_url")))
    })
    .await?;
    let listed = env.cli(&["proxies", "list"])?;
    ensure!(
        listed.contains(&format!("http://***@{}", synced_proxy.addr())) && !listed.contains(SYNCED_PASS),
        "{listed}"
    );
    env.cli(&["channels", "update", "fake", "--proxy-pool", "synced"])?;
    let (status, body) = env.chat(&serve, &key, true).await?;
    ensure!(status == 200, "{status} {body}\n{}", serve.log());
    ensure!(synced_proxy.count("POST ") >= 1, "the synced proxy did not carry the call");

    // Off the list: removed by the next sync; the channel's calls then have no way out.
    *list.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = "# nothing today\n".to_owned();
    wait_for("the synced proxy's removal", || Ok(!env.cli(&["proxies", "list"])?.contains("\tsynced\t"))).await?;
    let before = env.fake.requests().len();
    let (status, _) = env.chat(&serve, &key, false).await?;
    ensure!(status == 502 && env.fake.requests().len() == before, "a channel without proxies went direct: {status}");
    env.cli(&["proxies", "remove", "eu-a"])?;
    ensure!(!env.cli(&["proxies", "list"])?.contains("eu-a"));

    let log = serve.log();
    for pass in [ADMIN_PASS, SYNCED_PASS] {
        ensure!(!log.contains(pass), "the serve log holds a proxy password");
        // The databases and their write-ahead logs, where recent pages may still be.
        for file in ["events.db", "events.db-wal", "read.db", "read.db-wal"] {
            let path = env.data.path().join(file);
            if !path.exists() && file.ends_with("-wal") {
                continue;
            }
            let bytes = std::fs::read(&path).with_context(|| file.to_owned())?;
            ensure!(!bytes.windows(pass.len()).any(|w| w == pass.as_bytes()), "{file} holds a proxy password");
        }
    }
    Ok(())
}

/// Serves `list` like [`list_server`] and counts the fetches.
async fn counted_list_server(list: Arc<Mutex<String>>) -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let app = axum::Router::new().route(
        "/proxies.txt",
        axum::routing::get(move || {
            let (list, counter) = (list.clone(), counter.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                list.lock().map(|l| l.clone()).unwrap_or_default()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/proxies.txt"), fetches))
}

/// Two `serve` processes of one cluster, both with the sync enabled: one holds the lease and
/// syncs (one fetch per interval, not two; each listed proxy added once), the other waits, and
/// takes over when the first stops.
#[tokio::test]
async fn only_one_process_of_a_cluster_syncs_the_pool_and_another_takes_over_when_it_stops() -> anyhow::Result<()> {
    let env = Env::new(Backend::Cluster).await?;
    let list = Arc::new(Mutex::new("socks5://127.0.0.1:9\nsocks5://127.0.0.1:10\n".to_owned()));
    let (list_url, fetches) = counted_list_server(list.clone()).await?;
    let vars = [
        ("PROXY_POOL_ENABLED", "true"),
        ("PROXY_POOL_URL", list_url.as_str()),
        ("PROXY_POOL_NAME", "synced"),
        ("PROXY_POOL_INTERVAL", "1"),
        ("LLM_ROUTER_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8"),
    ];
    let first = env.serve_with_env(&vars).await?;
    let synced = |n: usize| {
        let env = &env;
        move || Ok(env.cli(&["proxies", "list"])?.lines().filter(|l| l.contains("\tsynced\t")).count() == n)
    };
    wait_for("the first sync", synced(2)).await?;
    let master = std::fs::read_to_string(env.data.path().join("master.key"))?;
    let dir = tempfile::tempdir()?;
    let mut second_vars = vars.to_vec();
    second_vars.push(("LLM_ROUTER_MASTER_KEY", master.trim()));
    let second =
        env.http_service("serve", &second_vars, &["--data-dir", dir.path().to_str().unwrap_or_default()]).await?;

    // Both run for a while: fetches come at one per interval, from the lease holder alone.
    let before = fetches.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = fetches.load(Ordering::SeqCst) - before;
    ensure!((2..=6).contains(&during), "{during} fetches in 4 s by two processes with a 1 s interval");
    const TAKEN: &str = "this process syncs the pool";
    ensure!(first.log().contains(TAKEN) && !second.log().contains(TAKEN), "the first process holds the lease");
    *list.lock().map_err(|_| anyhow::anyhow!("poisoned"))? += "socks5://127.0.0.1:11\n";
    wait_for("the third proxy", synced(3)).await?;

    // The holder stops; the other takes the lease and follows the list.
    first.stop()?;
    *list.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = "socks5://127.0.0.1:12\n".to_owned();
    wait_for("the take-over", synced(1)).await?;
    ensure!(second.log().contains(TAKEN), "the second process never took the lease:\n{}", second.log());
    let listed = env.cli(&["proxies", "list"])?;
    ensure!(listed.matches("socks5://127.0.0.1:12").count() == 1, "{listed}");
    Ok(())
}
