//! Actions from the dashboard: the forms shown to a visitor allowed to act (a [`Viewer`]), and
//! the POST handlers behind them. Every form carries the session's CSRF token in a hidden
//! field; a request without a [`Viewer`] or with another token is refused (403) before
//! anything changes. Answers redirect back to the page (POST, then GET).

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use leptos::prelude::*;

use crate::auth::{Action, CSRF_FIELD, Viewer};
use crate::data::{DashboardData, SweepSummary};
use crate::pages::{self, Nav, enc};

type Data = Arc<dyn DashboardData>;

/// The sweep page's action forms.
pub fn sweep_forms(s: &SweepSummary, viewer: &Viewer) -> String {
    let action = format!("/sweeps/{}/actions", enc(&s.name));
    let csrf = viewer.csrf.clone();
    let paused = s.state == "paused";
    let priority = s.priority.to_string();
    pages::render(move || {
        view! {
            <section class="actions">
                <form method="post" action=action.clone()>
                    <input type="hidden" name=CSRF_FIELD value=csrf.clone()/>
                    {if paused {
                        view! { <button name="action" value="resume">"Resume"</button> }.into_any()
                    } else {
                        view! { <button name="action" value="pause">"Pause"</button> }.into_any()
                    }}
                    <button name="action" value="retry">"Retry failed"</button>
                    <button name="action" value="cancel">"Cancel unfinished"</button>
                </form>
                <form method="post" action=action>
                    <input type="hidden" name=CSRF_FIELD value=csrf/>
                    <input type="hidden" name="action" value="priority"/>
                    <label>"Priority "<input type="number" name="priority" value=priority/></label>
                    <button>"Set"</button>
                </form>
            </section>
        }
    })
}

/// The run page's action form.
pub fn run_form(job: i64, viewer: &Viewer) -> String {
    let action = format!("/runs/{job}/cancel");
    let csrf = viewer.csrf.clone();
    pages::render(move || {
        view! {
            <form class="actions" method="post" action=action>
                <input type="hidden" name=CSRF_FIELD value=csrf/>
                <button>"Cancel this run"</button>
            </form>
        }
    })
}

/// Why an action was not carried out.
fn refused(code: StatusCode, why: &str) -> Response {
    let main = format!(
        "<h1>Not allowed</h1><p class=\"error\">{}</p>",
        pages::esc(why)
    );
    (code, Html(pages::layout("Not allowed", Nav::Sweeps, &main))).into_response()
}

/// The answer refusing the request, unless the visitor may act and the form carries their
/// session's CSRF token.
fn refusal(viewer: Option<&Viewer>, form: &[(String, String)]) -> Option<Response> {
    let Some(viewer) = viewer else {
        return Some(refused(
            StatusCode::FORBIDDEN,
            "Actions need a login (a public dashboard is read-only).",
        ));
    };
    let submitted = field(form, CSRF_FIELD).unwrap_or_default();
    (!viewer.csrf_matches(submitted)).then(|| {
        refused(
            StatusCode::FORBIDDEN,
            "This form is stale or did not come from this dashboard: reload the page.",
        )
    })
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn run(data: &Data, action: Action, back: String) -> Response {
    match data.act(action).await {
        Ok(Some(done)) => {
            tracing::info!(%done, "dashboard action");
            (StatusCode::SEE_OTHER, [(header::LOCATION, back)]).into_response()
        }
        Ok(None) => refused(StatusCode::NOT_FOUND, "No such sweep or run."),
        Err(e) => {
            tracing::error!(error = %e, "dashboard action failed");
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::pages::INTERNAL_ERROR_TEXT,
            )
        }
    }
}

/// `POST /sweeps/{name}/actions`: `action` = pause | resume | retry | cancel | priority.
pub(crate) async fn sweep_action(
    State(data): State<Data>,
    Path(name): Path<String>,
    viewer: Option<axum::Extension<Viewer>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refusal(viewer.as_deref(), &form) {
        return r;
    }
    let action = match field(&form, "action") {
        Some("pause") => Action::PauseSweep(name.clone()),
        Some("resume") => Action::ResumeSweep(name.clone()),
        Some("retry") => Action::RetrySweep(name.clone()),
        Some("cancel") => Action::CancelSweep(name.clone()),
        Some("priority") => match field(&form, "priority").map(|p| p.trim().parse::<i64>()) {
            Some(Ok(p)) => Action::SetPriority(name.clone(), p),
            _ => return refused(StatusCode::BAD_REQUEST, "The priority must be an integer."),
        },
        other => {
            return refused(
                StatusCode::BAD_REQUEST,
                &format!("Unknown action {other:?}: pause, resume, retry, cancel or priority."),
            );
        }
    };
    run(&data, action, pages::sweep_url(&name)).await
}

/// `POST /runs/{job}/cancel`.
pub(crate) async fn cancel_run(
    State(data): State<Data>,
    Path(job): Path<i64>,
    viewer: Option<axum::Extension<Viewer>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refusal(viewer.as_deref(), &form) {
        return r;
    }
    run(&data, Action::CancelJob(job), pages::run_url(job)).await
}
