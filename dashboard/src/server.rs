//! HTTP routes of the dashboard (axum): pages, fragments, export, images, live events, assets.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::{FromRef, Path, Query as AxQuery, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;

use crate::anim;
use crate::auth::Viewer;
use crate::data::{DashboardData, DataError};
use crate::export::{Format, TableError, TableRequest};
use crate::live::LiveHub;
/// What a visitor sees of a server-side failure (the pages define it; actions show it too).
pub use crate::pages::INTERNAL_ERROR_TEXT;
use crate::pages::{self, Nav, Query};
use crate::table;

const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/live.js");

/// How often the live-update stream polls the data source for changes.
pub const POLL: Duration = Duration::from_millis(1000);

type Data = Arc<dyn DashboardData>;

/// What the handlers share: the data source and the one live-update poller.
#[derive(Clone)]
struct AppState {
    data: Data,
    live: Arc<LiveHub>,
}

impl FromRef<AppState> for Data {
    fn from_ref(s: &AppState) -> Data {
        s.data.clone()
    }
}

impl FromRef<AppState> for Arc<LiveHub> {
    fn from_ref(s: &AppState) -> Arc<LiveHub> {
        s.live.clone()
    }
}

/// Builds the dashboard application.
pub fn router(data: Arc<dyn DashboardData>) -> Router {
    let state = AppState {
        live: LiveHub::new(data.clone(), POLL),
        data,
    };
    Router::new()
        .route("/", get(sweeps_page))
        .route("/sweeps/{name}", get(sweep_page))
        .route("/sweeps/{name}/latent", get(latent_page))
        .route("/sweeps/{name}/latent.gif", get(latent_grid_gif))
        .route("/sweeps/{name}/export", get(export_endpoint))
        .route("/sweeps/{name}/compare", get(compare_page))
        .route("/sweeps/{name}/actions", post(crate::act::sweep_action))
        .route("/runs/{job}/cancel", post(crate::act::cancel_run))
        .route("/runs/{job}", get(run_page))
        .route("/runs/{job}/latent.gif", get(run_gif))
        .route("/runs/{job}/images/{index}", get(image))
        .route("/workers", get(workers_page))
        .route("/events", get(events))
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/assets/live.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .with_state(state)
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Error responses of the handlers.
#[derive(Debug, thiserror::Error)]
enum WebError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    BadRequest(#[from] TableError),
    #[error("{0}")]
    Invalid(String),
    #[error("rendering failed: {0}")]
    Render(String),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (code, title) = match &self {
            WebError::Data(e) => {
                tracing::error!(error = %e, "dashboard data source failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Error")
            }
            WebError::Render(e) => {
                tracing::error!(error = %e, "dashboard rendering failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Error")
            }
            WebError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            WebError::BadRequest(_) | WebError::Invalid(_) => {
                (StatusCode::BAD_REQUEST, "Bad request")
            }
        };
        let main = match &self {
            WebError::NotFound(what) => pages::not_found_main(what),
            // The detail (SQL, paths) is for the operator's log, not for every visitor.
            WebError::Data(_) | WebError::Render(_) => format!(
                "<h1>{}</h1><p class=\"error\">{}</p>",
                pages::esc(title),
                pages::esc(INTERNAL_ERROR_TEXT)
            ),
            other => format!(
                "<h1>{}</h1><pre class=\"error\">{}</pre>",
                pages::esc(title),
                pages::esc(&other.to_string())
            ),
        };
        (code, Html(pages::layout(title, Nav::Sweeps, &main))).into_response()
    }
}

type Res = Result<Response, WebError>;

async fn sweep_or_404(data: &Data, name: &str) -> Result<Arc<crate::data::SweepDetail>, WebError> {
    data.sweep(name)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no sweep named “{name}”")))
}

/// The whole page, or only `<main>`'s content when the live script asks with `?fragment=1`.
fn page(q: &Query, title: &str, nav: Nav, main: String) -> Response {
    if q.get("fragment").is_some() {
        return Html(main).into_response();
    }
    Html(pages::layout(title, nav, &main)).into_response()
}

async fn sweeps_page(State(data): State<Data>, AxQuery(q): AxQuery<Vec<(String, String)>>) -> Res {
    let sweeps = data.sweeps().await?;
    Ok(page(
        &Query(q),
        "Sweeps",
        Nav::Sweeps,
        pages::sweeps::main_html(sweeps),
    ))
}

async fn sweep_page(
    State(data): State<Data>,
    Path(name): Path<String>,
    viewer: Option<Extension<Viewer>>,
    AxQuery(q): AxQuery<Vec<(String, String)>>,
) -> Res {
    let d = sweep_or_404(&data, &name).await?;
    let q = Query(q);
    let forms = viewer
        .map(|v| crate::act::sweep_forms(&d.summary, &v))
        .unwrap_or_default();
    Ok(page(
        &q,
        &name,
        Nav::Sweeps,
        pages::sweep::main_html(d, q.clone()) + &forms,
    ))
}

async fn compare_page(
    State(data): State<Data>,
    Path(name): Path<String>,
    AxQuery(q): AxQuery<Vec<(String, String)>>,
) -> Res {
    let d = sweep_or_404(&data, &name).await?;
    let q = Query(q);
    let main = pages::compare::main_html(d, q.clone()).map_err(WebError::Invalid)?;
    Ok(page(&q, &format!("{name} · compare"), Nav::Sweeps, main))
}

async fn latent_page(
    State(data): State<Data>,
    Path(name): Path<String>,
    AxQuery(q): AxQuery<Vec<(String, String)>>,
) -> Res {
    let d = sweep_or_404(&data, &name).await?;
    let q = Query(q);
    let plan = pages::latent::plan(&d, &q);
    let snaps = data.snapshots(&plan.job_ids()).await?;
    if q.get("fragment") == Some("grid") {
        return Ok(Html(pages::latent::grid_html(&plan, &snaps, &q)).into_response());
    }
    let title = format!("{name} · latent spaces");
    Ok(page(
        &q,
        &title,
        Nav::Sweeps,
        pages::latent::main_html(&d, &plan, &snaps, &q),
    ))
}

/// The latent grid as shown (same axes and filters) as an animated GIF over the epochs.
async fn latent_grid_gif(
    State(data): State<Data>,
    Path(name): Path<String>,
    AxQuery(q): AxQuery<Vec<(String, String)>>,
) -> Res {
    let d = sweep_or_404(&data, &name).await?;
    let plan = pages::latent::plan(&d, &Query(q));
    let snaps = data.snapshots(&plan.job_ids()).await?;
    let rows = plan
        .cells
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| {
                    cell.as_ref().map(|(r, _)| anim::Panel {
                        title: format!("#{}", r.job_id),
                        snapshots: snaps
                            .iter()
                            .filter(|s| s.job_id == r.job_id)
                            .cloned()
                            .collect(),
                    })
                })
                .collect()
        })
        .collect();
    gif_response(rows, &format!("{}-latent.gif", file_name(&name))).await
}

/// One run's snapshots as an animated GIF over its epochs.
async fn run_gif(State(data): State<Data>, Path(job): Path<i64>) -> Res {
    data.run(job)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no run #{job}")))?;
    let snapshots = data.snapshots(std::slice::from_ref(&job)).await?;
    let rows = vec![vec![Some(anim::Panel {
        title: format!("#{job}"),
        snapshots,
    })]];
    gif_response(rows, &format!("run-{job}-latent.gif")).await
}

/// Encodes off the async threads (a grid of long runs takes a moment) and serves the GIF as a
/// download.
async fn gif_response(rows: Vec<Vec<Option<anim::Panel>>>, file: &str) -> Res {
    let bytes = tokio::task::spawn_blocking(move || anim::latent_gif(&rows))
        .await
        .map_err(|e| WebError::Render(format!("GIF task: {e}")))?
        .map_err(|e| match e {
            anim::GifError::NoSnapshots(_) => WebError::NotFound(e.to_string()),
            other => WebError::Render(other.to_string()),
        })?;
    let disposition = format!("attachment; filename=\"{file}\"");
    Ok((
        [
            (header::CONTENT_TYPE, "image/gif".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// `name` with every character but ASCII letters, digits, `-` and `_` replaced, for a file name.
fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn run_page(
    State(data): State<Data>,
    Path(job): Path<i64>,
    viewer: Option<Extension<Viewer>>,
    AxQuery(q): AxQuery<Vec<(String, String)>>,
) -> Res {
    let d = data
        .run(job)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no run #{job}")))?;
    let (metrics, snaps) = futures::try_join!(
        data.metrics(job),
        data.snapshots(std::slice::from_ref(&job))
    )?;
    let latest = snaps.into_iter().max_by_key(|s| (s.epoch, s.attempt_id));
    let title = format!("run #{job} · {}", d.sweep_name);
    let form = viewer
        .map(|v| crate::act::run_form(job, &v))
        .unwrap_or_default();
    Ok(page(
        &Query(q),
        &title,
        Nav::Sweeps,
        pages::run::main_html(d, metrics, latest) + &form,
    ))
}

async fn image(State(data): State<Data>, Path((job, index)): Path<(i64, u32)>) -> Res {
    let d = data
        .run(job)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no run #{job}")))?;
    // The dataset comes from the run, never from the URL, so no path can be injected.
    let dataset = d
        .run
        .param("dataset")
        .map(table::value_text)
        .ok_or_else(|| WebError::NotFound("run has no dataset".into()))?;
    let png = data
        .test_image(&dataset, index)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no test image {index}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        png,
    )
        .into_response())
}

async fn workers_page(State(data): State<Data>, AxQuery(q): AxQuery<Vec<(String, String)>>) -> Res {
    let workers = data.workers().await?;
    let allocations = data.allocations().await?;
    Ok(page(
        &Query(q),
        "Workers",
        Nav::Workers,
        pages::workers::main_html(workers, allocations),
    ))
}

async fn export_endpoint(
    State(data): State<Data>,
    Path(name): Path<String>,
    AxQuery(q): AxQuery<Vec<(String, String)>>,
) -> Res {
    let d = sweep_or_404(&data, &name).await?;
    let format: Format = Query(q.clone()).get("format").unwrap_or("csv").parse()?;
    let body = TableRequest::from_query(&q)?.export(&d.runs, format)?;
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!("inline; filename=\"{file}.{}\"", format.extension());
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// Server-sent events: `hello` with the current change token, then `change` whenever it moves.
/// Every connection listens to the one shared poller.
async fn events(
    State(live): State<Arc<LiveHub>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = live.subscribe();
    let stream = futures::stream::unfold((rx, None::<String>), |(mut rx, last)| async move {
        loop {
            let current = rx.borrow_and_update().clone();
            if let Some(t) = current
                && last.as_ref() != Some(&t)
            {
                let kind = if last.is_none() { "hello" } else { "change" };
                return Some((
                    Ok(Event::default().event(kind).data(t.clone())),
                    (rx, Some(t)),
                ));
            }
            // An error here means the hub is gone: the server is shutting down.
            rx.changed().await.ok()?;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
