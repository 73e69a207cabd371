//! Dashboard access when a token is configured. `/login` exchanges the token (or a one-time
//! code from the link printed at start-up) for a session: a random id in an HttpOnly,
//! SameSite=Strict cookie, kept server-side with an expiry and a CSRF token of its own. Without
//! a session every page redirects to the login, except `/healthz`, `/readyz` and the static
//! assets; `Authorization: Bearer <token>` reads too (scripts, Prometheus on `/metrics`).
//! `--public-dashboard` lets anonymous visitors read. Only a session may act, with a POST whose
//! `Origin` is this dashboard and whose form carries the session's CSRF token (checked by
//! [`dashboard::act`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use dashboard::Viewer;
use dashboard::pages::{Nav, esc, layout};
use rand::RngCore;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "latentsweep_session";
/// How long a session lasts after login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long the one-time login code of the printed link stays usable.
const ONE_TIME_TTL: Duration = Duration::from_secs(24 * 3600);
/// Paths anyone may fetch: health probes and static assets.
const OPEN_PREFIXES: &[&str] = &["/healthz", "/readyz", "/assets/", "/login"];

struct Session {
    csrf: String,
    expires: Instant,
}

/// Who may see and do what on the dashboard, and the live sessions.
pub struct Access {
    token: Option<String>,
    public: bool,
    /// Served over HTTPS: cookies get `Secure`, and `Origin` must be `https://…`.
    https: bool,
    sessions: Mutex<HashMap<String, Session>>,
    one_time: Mutex<HashMap<String, Instant>>,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Equality without an early exit, so timing does not reveal a matching prefix.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Access {
    /// `token`: `None` leaves the dashboard open for reading, with no actions at all.
    pub fn new(token: Option<String>, public: bool, https: bool) -> Arc<Access> {
        Arc::new(Access {
            token: token.filter(|t| !t.is_empty()),
            public,
            https,
            sessions: Mutex::default(),
            one_time: Mutex::default(),
        })
    }

    /// A code that logs in once, for the link printed at start-up (`/login?once=CODE`).
    pub fn one_time_code(&self) -> String {
        let code = random_hex();
        let mut m = self.one_time.lock().expect("lock");
        let now = Instant::now();
        m.retain(|_, exp| *exp > now);
        m.insert(code.clone(), now + ONE_TIME_TTL);
        code
    }

    fn new_session(&self) -> String {
        let id = random_hex();
        let mut m = self.sessions.lock().expect("lock");
        let now = Instant::now();
        m.retain(|_, s| s.expires > now);
        m.insert(
            id.clone(),
            Session {
                csrf: random_hex(),
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    /// The CSRF token of the request's live session, if it has one.
    fn session_csrf(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let m = self.sessions.lock().expect("lock");
        m.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        let (Some(token), Some(v)) = (&self.token, headers.get(header::AUTHORIZATION)) else {
            return false;
        };
        v.to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| same(t.trim(), token))
    }

    fn set_cookie(&self, id: &str) -> String {
        let secure = if self.https { "; Secure" } else { "" };
        format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        )
    }

    /// A state-changing request must come from a page of this dashboard: its `Origin` is
    /// this server (browsers send it with every POST).
    fn same_origin(&self, req_headers: &HeaderMap, authority: Option<&str>) -> bool {
        let Some(origin) = req_headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
        else {
            return false;
        };
        let host =
            authority.or_else(|| req_headers.get(header::HOST).and_then(|h| h.to_str().ok()));
        let scheme = if self.https { "https" } else { "http" };
        host.is_some_and(|h| origin == format!("{scheme}://{h}"))
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `app` behind the login: adds `/login` and `/logout`, and checks every request.
pub fn protect(app: Router, access: Arc<Access>) -> Router {
    let login = Router::new()
        .route("/login", get(login_page).post(login_submit))
        .route("/logout", post(logout))
        .with_state(access.clone());
    app.merge(login)
        .layer(middleware::from_fn_with_state(access, guard))
}

fn forbidden(why: &str) -> Response {
    let main = format!("<h1>Not allowed</h1><p class=\"error\">{}</p>", esc(why));
    (
        StatusCode::FORBIDDEN,
        Html(layout("Not allowed", Nav::Sweeps, &main)),
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

async fn guard(State(access): State<Arc<Access>>, mut req: Request, next: Next) -> Response {
    if access.token.is_none() {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    if OPEN_PREFIXES
        .iter()
        .any(|p| path == p.trim_end_matches('/') || path.starts_with(p))
    {
        return next.run(req).await;
    }
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    if let Some(csrf) = access.session_csrf(req.headers()) {
        if !reading {
            let authority = req.uri().authority().map(|a| a.as_str().to_owned());
            if !access.same_origin(req.headers(), authority.as_deref()) {
                tracing::warn!(%path, "dashboard action refused: cross-origin or no Origin header");
                return forbidden("This request did not come from a page of this dashboard.");
            }
        }
        req.extensions_mut().insert(Viewer { csrf });
        return next.run(req).await;
    }
    if reading && (access.public || access.bearer_ok(req.headers())) {
        return next.run(req).await;
    }
    if !reading {
        return forbidden("Actions need a login.");
    }
    let target = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    see_other(&format!("/login?next={}", dashboard::pages::enc(&target)))
}

/// A path of this site to go to after login (never another site's URL).
fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn login_form(next: &str, error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!("<p class=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let main = format!(
        "<h1>Log in</h1>{error}<form class=\"login\" method=\"post\" action=\"/login\">\
         <label>Token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus></label>\
         <input type=\"hidden\" name=\"next\" value=\"{}\"><button>Log in</button></form>\
         <p>The token is the coordinator's <code>--token-file</code>, or the <code>token</code> \
         file next to its database.</p>",
        esc(next)
    );
    Html(layout("Log in", Nav::Sweeps, &main))
}

async fn login_page(
    State(access): State<Arc<Access>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let next = local_next(get("next"));
    if let Some(code) = get("once") {
        let valid = {
            let mut m = access.one_time.lock().expect("lock");
            m.remove(code).is_some_and(|exp| exp > Instant::now())
        };
        if valid {
            let id = access.new_session();
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, next),
                    (header::SET_COOKIE, access.set_cookie(&id)),
                ],
            )
                .into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            login_form(
                &next,
                Some("This login link was already used or has expired."),
            ),
        )
            .into_response();
    }
    login_form(&next, None).into_response()
}

async fn login_submit(
    State(access): State<Arc<Access>>,
    req_headers: HeaderMap,
    uri: axum::http::Uri,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let next = local_next(get("next"));
    if req_headers.contains_key(header::ORIGIN)
        && !access.same_origin(&req_headers, uri.authority().map(|a| a.as_str()))
    {
        return forbidden("This login did not come from this dashboard.");
    }
    let Some(token) = &access.token else {
        return see_other("/");
    };
    if !get("token").is_some_and(|t| same(t.trim(), token)) {
        tracing::warn!("dashboard login with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            login_form(&next, Some("Wrong token.")),
        )
            .into_response();
    }
    let id = access.new_session();
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, next),
            (header::SET_COOKIE, access.set_cookie(&id)),
        ],
    )
        .into_response()
}

async fn logout(State(access): State<Arc<Access>>, req_headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&req_headers, SESSION_COOKIE) {
        access.sessions.lock().expect("lock").remove(id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_owned()),
            (
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_next(Some("/sweeps/a?x=1")), "/sweeps/a?x=1");
        assert_eq!(local_next(Some("//evil.example/")), "/");
        assert_eq!(local_next(Some("https://evil.example/")), "/");
        assert_eq!(local_next(Some("/\\evil")), "/");
        assert_eq!(local_next(None), "/");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=1; {SESSION_COOKIE}=abc; b=2").parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
