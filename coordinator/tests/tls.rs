//! TLS on real sockets with certificates made at test time: a `worker` process over TLS
//! finishes a job; a wrong CA, a URL whose scheme does not match the server, and a missing
//! client certificate under mutual TLS each fail with a clear, specific error; the dashboard
//! answers over HTTPS.

mod support;
use support::pki;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use coordinator::tls::ServerTls;
use pki::Pki;
use support::grpc::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use worker::agent::client;
use worker::agent::tls::{ClientTls, TlsFailure, failure_in};

const TOKEN: &str = "s3cret-token";

async fn tls_server(dir: &std::path::Path, pki: &Pki, mutual: bool) -> Server {
    let tls = ServerTls::load(&pki.server_files(mutual)).expect("TLS files load");
    let mut srv = start_on(&dir.join("ls.db"), None, |c| {
        c.tls = Some(tls);
        c.token = Some(TOKEN.into());
    })
    .await;
    srv.url = format!("https://127.0.0.1:{}", srv.addr.port());
    srv
}

/// What registering through `url` with `tls` fails with: the [`TlsFailure`] the agent would
/// stop on, or the status code.
async fn register_error(url: &str, tls: &ClientTls) -> Result<TlsFailure, tonic::Code> {
    let c = client::connect_with(url, Some(TOKEN), tls).unwrap();
    let err = c
        .clone()
        .register(register_req("probe"))
        .await
        .expect_err("must not register");
    failure_in(&err).ok_or(err.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_tls_finishes_a_job() {
    fashion_mnist_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &["localhost", "127.0.0.1"]);
    let srv = tls_server(dir.path(), &pki, false).await;
    let sweep = submit(&srv.store, &tiny_sweep("over-tls", 1, "")).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let log = dir.path().join("worker.log");
    let mut child = tokio::process::Command::new(worker_exe())
        .args(["--coordinator", &srv.url, "--cpu", "--name", "tls-worker"])
        .arg("--ca-cert")
        .arg(&pki.ca)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .env_remove("LATENTSWEEP_TOKEN")
        .env_remove("LATENTSWEEP_TOKEN_FILE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let states = wait_all_final(&srv.store, sweep, Duration::from_secs(600)).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    assert_eq!(
        states.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["done"],
        "worker log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_scheme_mismatch_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &["localhost", "127.0.0.1"]);
    let tls = tls_server(dir.path(), &pki, false).await;
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain = start(&plain_dir, Duration::from_secs(10)).await;
    let trusting = |ca: &std::path::Path| ClientTls {
        ca_cert: Some(ca.to_owned()),
        ..ClientTls::default()
    };

    // The right CA: registered.
    let ok = client::connect_with(&tls.url, Some(TOKEN), &trusting(&pki.ca)).unwrap();
    assert!(register(&ok, "trusting").await > 0);
    // A CA that did not sign the server's certificate.
    let e = register_error(&tls.url, &trusting(&pki.other_ca)).await;
    assert!(matches!(e, Ok(TlsFailure::Untrusted { .. })), "{e:?}");
    let text = e.unwrap().to_string();
    assert!(
        text.contains("not trusted") && text.contains("--ca-cert"),
        "{text}"
    );
    // http:// to the TLS server, https:// to the cleartext one: named, never cleartext.
    let http_url = tls.url.replacen("https://", "http://", 1);
    let e = register_error(&http_url, &ClientTls::default()).await;
    assert!(matches!(e, Ok(TlsFailure::ServerSpeaksTls { .. })), "{e:?}");
    let https_url = plain.url.replacen("http://", "https://", 1);
    let e = register_error(&https_url, &trusting(&pki.ca)).await;
    assert!(
        matches!(e, Ok(TlsFailure::ServerSpeaksCleartext { .. })),
        "{e:?}"
    );

    // The worker binary stops on it, with the message, instead of retrying forever.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(worker_exe())
            .args(["--coordinator", &tls.url, "--cpu"])
            .arg("--ca-cert")
            .arg(&pki.other_ca)
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .env("LATENTSWEEP_TOKEN", TOKEN)
            .env_remove("LATENTSWEEP_TOKEN_FILE")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the worker gives up on an untrusted certificate")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("certificate is not trusted") && stderr.contains("--ca-cert"),
        "{stderr}"
    );
    tls.stop().await;
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_worker_without_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &["localhost", "127.0.0.1"]);
    let srv = tls_server(dir.path(), &pki, true).await;
    let no_cert = ClientTls {
        ca_cert: Some(pki.ca.clone()),
        ..ClientTls::default()
    };
    let e = register_error(&srv.url, &no_cert).await;
    assert!(matches!(e, Ok(TlsFailure::ClientRefused { .. })), "{e:?}");
    assert!(e.unwrap().to_string().contains("--client-cert"));
    let with_cert = ClientTls {
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        ..no_cert
    };
    let ok = client::connect_with(&srv.url, Some(TOKEN), &with_cert).unwrap();
    assert!(register(&ok, "mutual").await > 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_answers_over_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &["localhost", "127.0.0.1"]);
    let store = coordinator::store::Store::open(&dir.path().join("ls.db"))
        .await
        .unwrap();
    let tls = ServerTls::load(&pki.server_files(false)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(coordinator::web::serve_tls(
        listener,
        coordinator::web::router(store, None),
        coordinator::conn::ConnLimits::default(),
        Some(tls),
    ));

    let mut roots = rustls::RootCertStore::empty();
    for c in proto::secret::certificates("ca", &pki.ca).unwrap() {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the dashboard");
    s.write_all(b"GET /assets/style.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // Cleartext HTTP to the HTTPS port gets no page.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
}
