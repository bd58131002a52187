//! Unit tests of the policy: every numeric host form, every range, the trust levels, the
//! allow list, plain http, and the resolver (with a table lookup, never the network).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

#[test]
fn every_numeric_ipv4_form_is_normalised_and_refused_as_a_disguise_naming_the_plain_address() {
    for url in [
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://0X7F.1/",
        "http://0x7f000001/",
        "http://017700000001/",
        "http://127.1/",
        "http://127.0.1/",
        "http://127.0.0.1./",
        "http://%31%32%37.0.0.1/",
        "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::127.0.0.1]/",
        "http://user@2130706433/",
        "http:\\\\2130706433/",
    ] {
        let got = Policy::default().check_url(url, Trust::Admin, true);
        assert!(
            matches!(&got, Err(UrlRefused::Disguised { canonical, .. }) if *canonical == ip("127.0.0.1")),
            "{url}: {got:?}"
        );
    }
    let msg = Policy::default().check_url("http://2130706433:8000/v1", Trust::Admin, true).err().map(|e| e.to_string());
    assert_eq!(msg.as_deref(), Some("\"2130706433\" is the address 127.0.0.1 in disguise; write it as 127.0.0.1"));
    let plain = |url: &str| Policy::default().check_url(url, Trust::Admin, false).map(|t| t.host);
    assert_eq!(plain("http://127.0.0.1:11434/v1"), Ok(Host::Ip(ip("127.0.0.1"))));
    assert_eq!(plain("http://[::1]:11434/v1"), Ok(Host::Ip(ip("::1"))));
    assert_eq!(plain("http://[0:0:0:0:0:0:0:1]/"), Ok(Host::Ip(ip("::1"))));
    assert_eq!(plain("https://API.OpenAI.com./v1"), Ok(Host::Name("api.openai.com".into())));
}

#[test]
fn metadata_link_local_unspecified_multicast_broadcast_and_reserved_are_refused_for_everyone() {
    let cases = [
        ("http://169.254.169.254/latest/meta-data/", Forbidden::Metadata),
        ("http://2852039166/", Forbidden::Metadata),
        ("http://0xa9.0xfe.0xa9.0xfe/", Forbidden::Metadata),
        ("http://0251.0376.0251.0376/", Forbidden::Metadata),
        ("http://169.254.43518/", Forbidden::Metadata),
        ("http://[::ffff:169.254.169.254]/", Forbidden::Metadata),
        ("http://[::ffff:a9fe:a9fe]/", Forbidden::Metadata),
        ("http://[::169.254.169.254]/", Forbidden::Metadata),
        ("http://[64:ff9b::a9fe:a9fe]/", Forbidden::Metadata),
        ("http://[fd00:ec2::254]/", Forbidden::Metadata),
        ("http://100.100.100.200/", Forbidden::Metadata),
        ("http://168.63.129.16/", Forbidden::Metadata),
        ("http://169.254.1.1/", Forbidden::LinkLocal),
        ("http://[fe80::1]/", Forbidden::LinkLocal),
        ("http://[febf::1]/", Forbidden::LinkLocal),
        ("http://0.0.0.0/", Forbidden::Unspecified),
        ("http://0/", Forbidden::Unspecified),
        ("http://0.1.2.3/", Forbidden::Unspecified),
        ("http://[::]/", Forbidden::Unspecified),
        ("http://[::ffff:0.0.0.0]/", Forbidden::Unspecified),
        ("http://224.0.0.1/", Forbidden::Multicast),
        ("http://239.255.255.250/", Forbidden::Multicast),
        ("http://[ff02::1]/", Forbidden::Multicast),
        ("http://255.255.255.255/", Forbidden::Broadcast),
        ("http://4294967295/", Forbidden::Broadcast),
        ("http://240.0.0.1/", Forbidden::Reserved),
        ("http://192.0.0.192/", Forbidden::Reserved),
        ("http://192.0.2.1/", Forbidden::Reserved),
        ("http://198.51.100.7/", Forbidden::Reserved),
        ("http://203.0.113.9/", Forbidden::Reserved),
        ("http://[2001:db8::1]/", Forbidden::Reserved),
        ("http://[100::1]/", Forbidden::Reserved),
        ("http://[2001:0:4136:e378::1]/", Forbidden::Reserved),
        ("http://[2002:7f00:1::]/", Forbidden::Reserved),
    ];
    let policy = Policy::new(Policy::parse_networks(["0.0.0.0/0", "::/0"]).unwrap_or_default());
    for (url, why) in cases {
        for trust in [Trust::Admin, Trust::Tenant, Trust::Alert] {
            let got = policy.check_url(url, trust, true);
            assert!(
                matches!(got, Err(UrlRefused::Address(Refused::Forbidden { why: w, .. })) if w == why),
                "{url} with {trust:?}: {got:?}"
            );
        }
    }
}

#[test]
fn private_and_loopback_hosts_are_allowed_for_admins_and_refused_for_tenants_and_alerts() {
    let cases = [
        ("http://10.0.0.1/", Reach::Private),
        ("http://172.16.0.1/", Reach::Private),
        ("http://172.31.255.255/", Reach::Private),
        ("http://192.168.1.10/", Reach::Private),
        ("http://100.64.0.1/", Reach::Private),
        ("http://100.127.255.254/", Reach::Private),
        ("http://198.18.0.1/", Reach::Private),
        ("http://[fc00::1]/", Reach::Private),
        ("http://[fd12:3456::1]/", Reach::Private),
        ("http://127.0.0.1:5432/", Reach::Loopback),
        ("http://127.255.255.254/", Reach::Loopback),
        ("http://[::1]/", Reach::Loopback),
    ];
    let policy = Policy::default();
    for (url, reach) in cases {
        let admin = policy.check_url(url, Trust::Admin, false);
        assert_eq!(admin.as_ref().ok().and_then(|t| t.reach), Some(reach), "{url}: {admin:?}");
        assert!(admin.is_ok_and(|t| t.is_internal()), "{url}");
        for trust in [Trust::Tenant, Trust::Alert] {
            let got = policy.check_url(url, trust, false);
            assert!(
                matches!(got, Err(UrlRefused::Address(Refused::NotAllowed { reach: r, .. })) if r == reach),
                "{url} with {trust:?}: {got:?}"
            );
        }
    }
    for url in ["http://172.15.255.255/", "http://172.32.0.1/", "http://100.63.255.255/", "http://100.128.0.1/"] {
        let got = policy.check_url(url, Trust::Tenant, true).map(|t| t.reach);
        assert_eq!(got, Ok(Some(Reach::Public)), "{url} is just outside a private range");
    }
}

#[test]
fn the_allow_list_opens_private_networks_to_tenants_but_never_forbidden_addresses() {
    let nets = Policy::parse_networks("10.20.0.0/16, 127.0.0.1 ,fd00::/8,".split(','));
    assert_eq!(nets.as_ref().map(Vec::len), Ok(3), "{nets:?}");
    let policy = Policy::new(nets.unwrap_or_default());
    assert_eq!(policy.check_ip(ip("10.20.3.4"), Trust::Tenant), Ok(Reach::Private));
    assert_eq!(policy.check_ip(ip("::ffff:10.20.3.4"), Trust::Alert), Ok(Reach::Private));
    assert_eq!(policy.check_ip(ip("127.0.0.1"), Trust::Tenant), Ok(Reach::Loopback));
    assert_eq!(policy.check_ip(ip("fd00::5"), Trust::Tenant), Ok(Reach::Private));
    assert!(matches!(policy.check_ip(ip("10.21.0.1"), Trust::Tenant), Err(Refused::NotAllowed { .. })));
    assert!(matches!(policy.check_ip(ip("127.0.0.2"), Trust::Alert), Err(Refused::NotAllowed { .. })));
    let everything = Policy::new(Policy::parse_networks(["0.0.0.0/0", "::/0"]).unwrap_or_default());
    assert!(matches!(everything.check_ip(ip("169.254.169.254"), Trust::Tenant), Err(Refused::Forbidden { .. })));
    assert!(matches!(everything.check_ip(ip("fd00:ec2::254"), Trust::Tenant), Err(Refused::Forbidden { .. })));
}

#[test]
fn a_malformed_allow_list_entry_is_named_in_the_error() {
    assert_eq!(Policy::parse_networks(["10.0.0.0/8", "10.0.0.0/33"]), Err(InvalidNetwork("10.0.0.0/33".into())));
    assert_eq!(Policy::parse_networks(["intranet"]), Err(InvalidNetwork("intranet".into())));
    assert_eq!(
        Policy::parse_networks(["10.1.2.3/8"]).map(|n| n.iter().map(ToString::to_string).collect::<Vec<_>>()),
        Ok(vec!["10.0.0.0/8".to_owned()])
    );
}

#[test]
fn plain_http_to_a_public_address_needs_the_insecure_flag_and_private_ones_do_not() {
    let policy = Policy::default();
    assert!(matches!(
        policy.check_url("http://8.8.8.8/v1", Trust::Admin, false),
        Err(UrlRefused::InsecureHttp { unresolved: false, .. })
    ));
    assert!(policy.check_url("http://8.8.8.8/v1", Trust::Admin, true).is_ok());
    assert!(policy.check_url("https://8.8.8.8/v1", Trust::Admin, false).is_ok());
    assert!(policy.check_url("http://10.0.0.7:8000/v1", Trust::Admin, false).is_ok());
    assert!(policy.check_url("http://127.0.0.1:11434/v1", Trust::Admin, false).is_ok());
}

#[test]
fn urls_without_http_scheme_or_host_or_with_credentials_are_refused() {
    let policy = Policy::default();
    let check = |u: &str| policy.check_url(u, Trust::Admin, true).err();
    assert_eq!(check("ftp://example.com/"), Some(UrlRefused::Scheme));
    assert_eq!(check("file:///etc/passwd"), Some(UrlRefused::Scheme));
    assert_eq!(check("https://user:pw@example.com/"), Some(UrlRefused::Credentials));
    assert_eq!(check("https://user@example.com/"), Some(UrlRefused::Credentials));
    assert!(matches!(check("example.com"), Some(UrlRefused::Invalid(_))));
    assert!(matches!(check("http://256.0.0.1/"), Some(UrlRefused::Invalid(_))));
    assert!(matches!(check("http://[::ffff:169.254.169.254/"), Some(UrlRefused::Invalid(_))));
    assert!(
        matches!(check("http://user:pw@169.254.169.254/"), Some(UrlRefused::Address(_))),
        "a refused address is reported before the credentials, so it cannot hide behind them"
    );
    let msg = check("http://user:sk-secret@169.254.169.254/").map(|e| e.to_string()).unwrap_or_default();
    assert!(!msg.contains("sk-secret"), "{msg}");
}

fn table(answers: &'static [(&'static str, &'static [&'static str])]) -> Dns {
    Dns::from_fn(move |host| {
        answers
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, a)| a.iter().map(|s| ip(s)).collect())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host"))
    })
}

#[tokio::test]
async fn a_name_is_judged_on_save_by_every_address_it_resolves_to() {
    let dns = table(&[
        ("public.test", &["93.184.215.14"]),
        ("mixed.test", &["93.184.215.14", "169.254.169.254"]),
        ("internal.test", &["10.0.0.1"]),
        ("local.test", &["127.0.0.1", "::1"]),
    ]);
    let p = Policy::default();
    let ok = p.check_url_resolving("https://public.test/v1", Trust::Tenant, false, &dns).await;
    assert_eq!(ok.map(|t| t.reach), Ok(Some(Reach::Public)));
    let mixed = p.check_url_resolving("https://mixed.test/v1", Trust::Admin, false, &dns).await;
    assert!(matches!(&mixed, Err(UrlRefused::Resolved { refused: Refused::Forbidden { .. }, .. })), "{mixed:?}");
    assert!(mixed.err().is_some_and(|e| e.to_string().contains("mixed.test resolves to 169.254.169.254")));
    let internal = p.check_url_resolving("https://internal.test/v1", Trust::Tenant, false, &dns).await;
    assert!(matches!(internal, Err(UrlRefused::Resolved { refused: Refused::NotAllowed { .. }, .. })));
    let admin = p.check_url_resolving("http://internal.test:8000/v1", Trust::Admin, false, &dns).await;
    assert!(admin.is_ok_and(|t| t.is_internal()), "plain http to a private name is fine");
    let local = p.check_url_resolving("http://local.test:11434/v1", Trust::Admin, false, &dns).await;
    assert!(local.is_ok_and(|t| t.reach == Some(Reach::Private) || t.reach == Some(Reach::Loopback)));
    let public_http = p.check_url_resolving("http://public.test/v1", Trust::Admin, false, &dns).await;
    assert!(matches!(public_http, Err(UrlRefused::InsecureHttp { unresolved: false, .. })));
    let unknown_http = p.check_url_resolving("http://nowhere.test/v1", Trust::Admin, false, &dns).await;
    assert!(matches!(unknown_http, Err(UrlRefused::InsecureHttp { unresolved: true, .. })));
    let unknown_https = p.check_url_resolving("https://nowhere.test/v1", Trust::Admin, false, &dns).await;
    assert!(unknown_https.is_ok_and(|t| t.reach.is_none()), "the connect-time check judges it later");
}

#[tokio::test]
async fn the_resolver_refuses_a_name_that_rebinds_to_a_private_address_after_it_was_saved() {
    // First answer public (the save), second 10.0.0.1 (the connection): DNS rebinding.
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let dns = Dns::from_fn(move |_| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        Ok(vec![if n == 0 { ip("93.184.215.14") } else { ip("10.0.0.1") }])
    });
    let policy = Policy::default();
    let saved = policy.check_url_resolving("https://rebind.test/v1", Trust::Tenant, false, &dns).await;
    assert!(saved.is_ok(), "{saved:?}");
    let resolver = CheckingResolver::new(policy, Trust::Tenant, dns);
    let err = resolver.resolve_checked("rebind.test").await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("rebind.test resolves to 10.0.0.1"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_resolver_hands_out_allowed_addresses_and_refuses_forbidden_ones_through_reqwest() -> anyhow::Result<()> {
    use reqwest::dns::Resolve as _;
    let answers: Mutex<Vec<Vec<IpAddr>>> =
        Mutex::new(vec![vec![ip("::ffff:169.254.169.254")], vec![ip("127.0.0.1"), ip("10.1.1.1")]]);
    let dns = Dns::from_fn(move |_| Ok(answers.lock().map(|mut a| a.pop().unwrap_or_default()).unwrap_or_default()));
    let resolver = CheckingResolver::new(Policy::default(), Trust::Admin, dns);
    let name = |s: &str| s.parse::<reqwest::dns::Name>();
    let first = resolver.resolve(name("ollama.test")?).await.map_err(|e| anyhow::anyhow!(e))?;
    let got: Vec<std::net::SocketAddr> = first.collect();
    assert_eq!(got, vec![std::net::SocketAddr::new(ip("127.0.0.1"), 0), std::net::SocketAddr::new(ip("10.1.1.1"), 0)]);
    let second = resolver.resolve(name("ollama.test")?).await;
    assert!(second.err().is_some_and(|e| e.to_string().contains("cloud metadata")));
    Ok(())
}
