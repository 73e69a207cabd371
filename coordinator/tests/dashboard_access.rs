//! Dashboard access with a token configured, through the real application (the router run
//! with `oneshot`, and once over a socket): pages redirect to the login without a session; the
//! login sets an HttpOnly, SameSite=Strict cookie; actions are POSTs that need the session, its
//! CSRF token and this dashboard's Origin; `--public-dashboard` reads but never acts; the
//! one-time link logs in once; a Bearer token reads.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use coordinator::store::Store;
use coordinator::web::session::{Access, SESSION_COOKIE};
use tower::ServiceExt;

const TOKEN: &str = "dash-token";
const SWEEP: &str = "name = \"acc\"\n[grid]\nnetwork = \"embedding-net\"\nloss = \"ce\"\n\
                     dataset = \"mnist\"\nmargin = 1.0\nlr = 1e-3\nseed = [0, 1]\n";

async fn app(public: bool) -> (axum::Router, Store, Arc<Access>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ls.db")).await.unwrap();
    let sweep = proto::sweep::parse_sweep(SWEEP, "acc.toml", 100).unwrap();
    store.submit(&sweep, SWEEP, None).await.unwrap();
    let access = Access::new(Some(TOKEN.into()), public, false);
    let app = coordinator::web::protected_router(
        coordinator::web::router(store.clone(), None),
        access.clone(),
    );
    (app, store, access, dir)
}

async fn send(app: &axum::Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.unwrap()
}

async fn body(r: Response<Body>) -> String {
    let b = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
    String::from_utf8(b.to_vec()).unwrap()
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path).header(header::HOST, "localhost");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post(path: &str, form: &str, cookie: Option<&str>, origin: Option<&str>) -> Request<Body> {
    let mut b = Request::post(path)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(form.to_owned())).unwrap()
}

fn location(r: &Response<Body>) -> &str {
    r.headers()[header::LOCATION].to_str().unwrap()
}

/// Logs in with the token; returns the `Cookie` header value of the session.
async fn login(app: &axum::Router) -> String {
    let r = send(
        app,
        post(
            "/login",
            &format!("token={TOKEN}&next=%2F"),
            None,
            Some("http://localhost"),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{attr} missing: {set}");
    }
    set.split(';').next().unwrap().to_owned()
}

/// The CSRF token in the sweep page's action form.
async fn csrf_of(app: &axum::Router, cookie: &str) -> String {
    let page = body(send(app, get("/sweeps/acc", Some(cookie))).await).await;
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("an action form with a CSRF field");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn sweep_state(store: &Store) -> (String, i64) {
    let all = store.status().await.unwrap();
    let s = all.iter().find(|s| s.name == "acc").unwrap();
    (s.state.clone(), s.priority)
}

#[tokio::test]
async fn without_a_session_pages_redirect_to_the_login() {
    let (app, _store, _a, _d) = app(false).await;
    for path in ["/", "/sweeps/acc", "/workers", "/runs/1", "/events"] {
        let r = send(&app, get(path, None)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&r).starts_with("/login?next=%2F"), "{path}");
    }
    // Open to all: the login page, static assets, health probes (not redirected).
    assert_eq!(
        send(&app, get("/login", None)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get("/assets/style.css", None)).await.status(),
        StatusCode::OK
    );
    for probe in ["/healthz", "/readyz"] {
        assert_ne!(
            send(&app, get(probe, None)).await.status(),
            StatusCode::SEE_OTHER
        );
    }
    // A session id nobody issued is no session.
    let r = send(&app, get("/", Some(&format!("{SESSION_COOKIE}=forged")))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_login_exchanges_the_token_for_a_session() {
    let (app, _store, _a, _d) = app(false).await;
    let r = send(
        &app,
        post(
            "/login",
            "token=wrong&next=%2F",
            None,
            Some("http://localhost"),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!r.headers().contains_key(header::SET_COOKIE));
    let cookie = login(&app).await;
    let r = send(&app, get("/", Some(&cookie))).await;
    assert_eq!(r.status(), StatusCode::OK);
    // After login, only paths of this site are followed.
    let r = send(
        &app,
        post(
            "/login",
            &format!("token={TOKEN}&next=https%3A%2F%2Fevil.example%2F"),
            None,
            Some("http://localhost"),
        ),
    )
    .await;
    assert_eq!(location(&r), "/");
    // Logging out ends the session.
    let r = send(
        &app,
        post("/logout", "", Some(&cookie), Some("http://localhost")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = send(&app, get("/", Some(&cookie))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn actions_need_the_session_its_csrf_token_and_this_origin() {
    let (app, store, _a, _d) = app(false).await;
    let cookie = login(&app).await;
    let csrf = csrf_of(&app, &cookie).await;
    let origin = Some("http://localhost");
    let pause = format!("csrf={csrf}&action=pause");
    // Refused, and nothing changed: no session; no or a wrong CSRF token; another or no Origin.
    for (form, cookie, origin) in [
        (pause.as_str(), None, origin),
        ("action=pause", Some(cookie.as_str()), origin),
        ("csrf=0000&action=pause", Some(cookie.as_str()), origin),
        (
            pause.as_str(),
            Some(cookie.as_str()),
            Some("http://evil.example"),
        ),
        (pause.as_str(), Some(cookie.as_str()), None),
    ] {
        let r = send(&app, post("/sweeps/acc/actions", form, cookie, origin)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form} {origin:?}");
    }
    assert_eq!(sweep_state(&store).await, ("active".into(), 0));

    let r = send(
        &app,
        post("/sweeps/acc/actions", &pause, Some(&cookie), origin),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/sweeps/acc");
    assert_eq!(sweep_state(&store).await.0, "paused");
    let prio = format!("csrf={csrf}&action=priority&priority=7");
    let r = send(
        &app,
        post("/sweeps/acc/actions", &prio, Some(&cookie), origin),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(sweep_state(&store).await, ("paused".into(), 7));
    let resume = format!("csrf={csrf}&action=resume");
    send(
        &app,
        post("/sweeps/acc/actions", &resume, Some(&cookie), origin),
    )
    .await;
    assert_eq!(sweep_state(&store).await.0, "active");
    // Cancelling a run, and an unknown one.
    let cancel = format!("csrf={csrf}");
    let r = send(&app, post("/runs/1/cancel", &cancel, Some(&cookie), origin)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = 1")
        .fetch_one(store.reader())
        .await
        .unwrap();
    assert_eq!(state, "cancelled");
    let r = send(
        &app,
        post("/runs/999/cancel", &cancel, Some(&cookie), origin),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A GET never acts.
    let r = send(&app, get("/sweeps/acc/actions", Some(&cookie))).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_public_dashboard_reads_but_never_acts() {
    let (app, store, _a, _d) = app(true).await;
    let r = send(&app, get("/sweeps/acc", None)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = body(r).await;
    assert!(page.contains("acc") && !page.contains("name=\"csrf\""));
    let r = send(
        &app,
        post(
            "/sweeps/acc/actions",
            "action=pause",
            None,
            Some("http://localhost"),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(sweep_state(&store).await.0, "active");
    // Logged in, the same dashboard acts.
    let cookie = login(&app).await;
    assert!(!csrf_of(&app, &cookie).await.is_empty());
}

#[tokio::test]
async fn the_one_time_link_logs_in_once_and_a_bearer_token_reads() {
    let (app, _store, access, _d) = app(false).await;
    let code = access.one_time_code();
    let r = send(&app, get(&format!("/login?once={code}"), None)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(
        send(&app, get("/", Some(&cookie))).await.status(),
        StatusCode::OK
    );
    let r = send(&app, get(&format!("/login?once={code}"), None)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "used twice");

    let bearer = |t: &str| {
        Request::get("/")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(&app, bearer(TOKEN)).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, bearer("nope")).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn login_and_a_page_over_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (app, _store, _a, _d) = app(false).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(coordinator::web::serve_with(
        listener,
        app,
        coordinator::conn::ConnLimits::default(),
    ));
    let exchange = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let form = format!("token={TOKEN}&next=%2Fworkers");
    let resp = exchange(format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{form}",
        form.len()
    ))
    .await;
    assert!(resp.starts_with("HTTP/1.1 303"), "{resp}");
    let cookie = resp
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = exchange(format!(
        "GET /workers HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let anonymous = exchange(format!(
        "GET /workers HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(anonymous.starts_with("HTTP/1.1 303"), "{anonymous}");
}
