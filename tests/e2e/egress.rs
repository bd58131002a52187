//! The outbound address policy through the real CLI: `channels add` and `channels update` refuse
//! base URLs that reach cloud metadata, link-local or unspecified addresses, or that write an
//! address in disguise, and plain http to a public host without `--insecure-http`; a loopback
//! channel is kept, with a warning naming it. Nothing here connects anywhere: every refusal
//! happens before a connection, and the accepted URLs are never called.

use crate::helpers::{Backend, Env};

fn add_args<'a>(name: &'a str, url: &'a str) -> Vec<&'a str> {
    vec!["channels", "add", "--name", name, "--base-url", url, "--api-key", "sk-egress-secret", "--models", "m"]
}

#[tokio::test]
async fn channels_add_refuses_metadata_link_local_unspecified_and_disguised_hosts() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    for (url, why) in [
        ("http://169.254.169.254/v1", "cloud metadata"),
        ("http://2130706433/", "write it as 127.0.0.1"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://0xa9fea9fe/latest", "cloud metadata"),
        ("http://0251.0376.0251.0376/", "cloud metadata"),
        ("http://127.1:11434/v1", "write it as 127.0.0.1"),
        ("http://169.254.10.1:8080/v1", "link-local"),
        ("https://[fd00:ec2::254]/", "cloud metadata"),
        ("http://[fe80::1]/v1", "link-local"),
        ("http://user:pw@169.254.169.254/", "credentials"),
    ] {
        let err = env.cli_fails(&add_args("bad", url))?;
        assert!(err.contains("--base-url") || err.contains("base URL"), "{url}: {err}");
        assert!(err.contains(why), "{url}: {err}");
        assert!(!err.contains("sk-egress-secret"), "{err}");
    }
    let list = env.cli(&["channels", "list"])?;
    assert!(list.trim().is_empty(), "nothing was stored:\n{list}");
    Ok(())
}

#[tokio::test]
async fn plain_http_to_a_public_host_needs_insecure_http_and_a_loopback_channel_is_kept_with_a_warning()
-> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let err = env.cli_fails(&add_args("public", "http://8.8.8.8/v1"))?;
    assert!(err.contains("--insecure-http") && err.contains("--base-url"), "{err}");
    let mut insecure = add_args("public", "http://8.8.8.8/v1");
    insecure.push("--insecure-http");
    env.cli(&insecure)?;

    let out = env.command().args(add_args("local", "http://127.0.0.1:11434/v1")).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARN") && stderr.contains("local") && stderr.contains("127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("sk-egress-secret"), "{stderr}");

    let err = env.cli_fails(&["channels", "update", "local", "--base-url", "http://[::ffff:169.254.169.254]/v1"])?;
    assert!(err.contains("--base-url") && err.contains("cloud metadata"), "{err}");
    let err = env.cli_fails(&["channels", "update", "local", "--base-url", "http://8.8.4.4/v1"])?;
    assert!(err.contains("--insecure-http"), "{err}");
    let err = env.cli_fails(&["channels", "update", "local", "--insecure-http"])?;
    assert!(err.contains("--base-url"), "{err}");
    env.cli(&["channels", "update", "local", "--base-url", "http://8.8.4.4/v1", "--insecure-http"])?;
    let list = env.cli(&["channels", "list"])?;
    assert!(list.contains("http://8.8.8.8/v1") && list.contains("http://8.8.4.4/v1"), "{list}");
    Ok(())
}
