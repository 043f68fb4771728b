//! Recipient sources through the operator's own code path (`net::ldap`, `net::http`):
//! a full sync of a real slapd holding many people, and a list on a real nginx fetched
//! again and again while unchanged.

use super::Figure;
use crate::ldap::{SERVICE_DN, SERVICE_PASSWORD, SUFFIX, Slapd};
use crate::nginx::{Nginx, TOKEN};
use mx_operator::api::domain::ListFormat;
use mx_operator::net::http::{Fetched, Https, ListQuery, ListServer};
use mx_operator::net::ldap::{Directory, DirectoryQuery, Ldap};
use std::path::Path;
use std::time::{Duration, Instant};

const SECTION: &str = "7. Recipient sources (operator code path; real slapd and nginx)";

/// This process's resident set and its peak since the last reset, in MiB.
fn memory() -> (f64, f64) {
    (
        super::memory_mib("self", "VmRSS:"),
        super::memory_mib("self", "VmHWM:"),
    )
}

/// Starts the peak over (Linux: `5` to `clear_refs` resets VmHWM to the current RSS),
/// after giving the memory freed so far back to the system: pages the allocator kept from
/// building the directory would otherwise hide what the sync itself needs.
fn reset_peak() {
    // SAFETY: malloc_trim only releases free memory of glibc's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub async fn run(dir: &Path, people: usize, refreshes: usize) -> Result<Vec<Figure>, String> {
    let mut figures = vec![];
    let error = |e: crate::HarnessError| e.to_string();

    let loading = Instant::now();
    let slapd = {
        let everyone = crate::ldap::numbered(people, "dir.example");
        Slapd::start(&dir.join("sources-slapd"), &everyone).map_err(error)?
    };
    eprintln!(
        "bench: slapd loaded with {people} people in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    let query = DirectoryQuery {
        url: slapd.url.clone(),
        start_tls: false,
        ca_pem: None,
        bind_dn: SERVICE_DN.into(),
        password: SERVICE_PASSWORD.into(),
        base_dn: format!("ou=people,{SUFFIX}"),
        filter: "(mail=*)".into(),
        attributes: vec!["mail".into()],
        page_size: 500,
        timeout: Duration::from_secs(60),
        domain: "dir.example".into(),
        limit: 1_000_000,
    };
    reset_peak();
    let (before, _) = memory();
    let started = Instant::now();
    let extracted = Ldap.search(&query).await.map_err(|e| e.to_string())?;
    let took = started.elapsed().as_secs_f64();
    let (_, peak) = memory();
    if extracted.addresses.len() != people {
        return Err(format!(
            "the sync found {} addresses of {people}",
            extracted.addresses.len()
        ));
    }
    let label = |what: &str| format!("{what} ({people} entries, pages of 500)");
    figures.push(Figure::new(SECTION, label("LDAP full sync"), took, "s"));
    figures.push(Figure::new(
        SECTION,
        label("LDAP sync: memory growth of the syncing process"),
        peak - before,
        "MiB",
    ));
    drop(extracted);
    drop(slapd);

    let nginx = Nginx::start(&dir.join("sources-nginx")).map_err(error)?;
    let list: String = (0..people).map(|i| format!("u{i}@web.example\n")).collect();
    nginx.serve("bearer/users.txt", &list).map_err(error)?;
    let query = ListQuery {
        url: format!("{}/bearer/users.txt", nginx.https_url),
        ca_pem: Some(nginx.ca_pem.clone()),
        authorization: Some(format!("Bearer {TOKEN}")),
        format: ListFormat::Lines,
        timeout: Duration::from_secs(300),
        domain: "web.example".into(),
        limit: 1_000_000,
        max_bytes: 512 << 20,
    };
    let started = Instant::now();
    let first = Https.fetch(&query, None).await.map_err(|e| e.to_string())?;
    let took = started.elapsed().as_secs_f64();
    let Fetched::List { etag, .. } = first else {
        return Err("the first fetch was not a list".into());
    };
    let etag = etag.ok_or("nginx gave no ETag")?;
    let served_before = nginx.requests().len();
    for _ in 0..refreshes {
        match Https.fetch(&query, Some(&etag)).await {
            Ok(Fetched::NotModified) => {}
            other => return Err(format!("an unchanged refresh gave {other:?}")),
        }
    }
    let logged = nginx.requests();
    let unchanged = &logged[served_before..];
    let label = |what: &str| format!("{what} ({people} lines, {refreshes} unchanged refreshes)");
    figures.push(Figure::new(SECTION, label("HTTP full fetch"), took, "s"));
    figures.push(Figure::new(
        SECTION,
        label("HTTP requests sent for the unchanged refreshes"),
        unchanged.len() as f64,
        "",
    ));
    figures.push(Figure::new(
        SECTION,
        label("HTTP body bytes of the unchanged refreshes"),
        unchanged.iter().map(|r| r.body_bytes).sum::<u64>() as f64,
        "B",
    ));
    Ok(figures)
}

const HANGING: &str = "9. Sources that never answer (operator binary, gateway replica)";

/// A new ordinary domain's apply → Ready and → 250 at SMTP, before and after `count`
/// MailDomains (half HTTP, half LDAP) whose source accepts the connection and never
/// answers: the syncs run apart from the reconciles, so the second figures stay near the
/// first.
pub async fn hanging(dir: &Path, count: usize) -> Result<Vec<Figure>, String> {
    use super::cluster::{domain, fail, is_ready, poll, rcpt_code, start_operator};
    use crate::control_plane::{ControlPlane, Lifetime};
    use crate::fixtures;
    use crate::gateway::Gateway;
    use mx_operator::api::{MailDomain, MailGateway};
    use serde_json::json;

    let silent = crate::smtp::Silent::start().await.map_err(fail)?;
    let silent_at = silent.address;
    let plane = ControlPlane::start(&dir.join("plane-hanging"), Lifetime::TiedToThisProcess)
        .await
        .map_err(fail)?;
    plane.install_crds().await.map_err(fail)?;
    let _operator = start_operator(&plane, &dir.join("operator-hanging.log"))?;
    let ns = plane.namespace("hanging").await.map_err(fail)?;
    let primary: std::net::SocketAddr =
        ([127, 0, 0, 1], crate::process::free_port().map_err(fail)?).into();
    fixtures::apply::<MailGateway>(&ns, fixtures::gateway("edge", json!({}))).await;
    fixtures::apply_dynamic(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "ldap", "labels": {"mx-operator.io/recipient-source": "true"}},
               "stringData": {"password": "x"}}),
    )
    .await;
    let gateway = Gateway::start(
        &dir.join("gateway-hanging"),
        &plane.operator_kubeconfig,
        &ns.name,
        "edge",
        Lifetime::TiedToThisProcess,
    )
    .await
    .map_err(fail)?;
    let domains = ns.api::<MailDomain>();
    let onboard = |name: &'static str| {
        let (domains, ns) = (domains.clone(), &ns);
        async move {
            let mail_domain = format!("{name}.hanging.test");
            let address = format!("alice@{mail_domain}");
            let started = Instant::now();
            fixtures::apply_dynamic(
                ns,
                domain(name, &mail_domain, "edge", vec![address.clone()], primary),
            )
            .await;
            poll(&format!("{name} Ready"), || async {
                domains.get(name).await.ok().filter(is_ready)
            })
            .await?;
            let ready = started.elapsed();
            rcpt_code(gateway.smtp, &address, 250).await?;
            Ok::<_, String>((ready, started.elapsed()))
        }
    };
    let (before_ready, before_accepted) = onboard("before").await?;
    for i in 0..count {
        let mut hanging = domain(
            &format!("hang{i}"),
            &format!("hang{i}.hanging.test"),
            "edge",
            vec![],
            primary,
        );
        hanging["spec"]["recipients"] = if i % 2 == 0 {
            json!({"http": {"url": format!("http://{silent_at}/list.txt")}})
        } else {
            json!({"ldap": {"url": format!("ldap://{silent_at}"), "insecure": true,
                            "bindDN": "cn=x", "baseDN": "dc=x",
                            "passwordSecretRef": {"name": "ldap", "key": "password"}}})
        };
        fixtures::apply_dynamic(&ns, hanging).await;
    }
    let (after_ready, after_accepted) = onboard("after").await?;
    drop(silent);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(vec![
        Figure::new(HANGING, "sources that never answer", count as f64, ""),
        Figure::new(
            HANGING,
            "new domain apply → Ready, none hanging",
            ms(before_ready),
            "ms",
        ),
        Figure::new(
            HANGING,
            "new domain apply → 250, none hanging",
            ms(before_accepted),
            "ms",
        ),
        Figure::new(
            HANGING,
            "new domain apply → Ready, sources hanging",
            ms(after_ready),
            "ms",
        ),
        Figure::new(
            HANGING,
            "new domain apply → 250, sources hanging",
            ms(after_accepted),
            "ms",
        )
        .at_most(3000.0),
    ])
}
