//! Page rendering: the shared layout and helpers; one module per page.
//!
//! Pages are rendered from plain data in one synchronous pass (`to_html`), so escaping is
//! Leptos' job everywhere; the only hand-written HTML is the layout shell, escaped with `esc`.

pub mod compare;
pub mod latent;
pub mod run;
pub mod sweep;
pub mod sweeps;
pub mod workers;

use std::time::{SystemTime, UNIX_EPOCH};

use leptos::prelude::*;

/// Renders a view to HTML inside a fresh reactive owner.
pub fn render<V: IntoView + 'static>(f: impl FnOnce() -> V) -> String {
    Owner::new().with(|| f().into_view().to_html())
}

/// What a visitor sees of a server-side failure; the detail goes to the log.
pub const INTERNAL_ERROR_TEXT: &str =
    "Something went wrong on the server. The details are in the coordinator log.";

/// Escapes text for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Percent-encodes a path segment or query component (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Which navigation tab is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Sweeps,
    Workers,
}

/// Wraps the HTML of a page's `<main>` into the full document.
pub fn layout(title: &str, nav: Nav, main_html: &str) -> String {
    let cur = |n: Nav| if n == nav { " class=\"current\"" } else { "" };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · latentsweep</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
<script src=\"/assets/live.js\" defer></script></head>\
<body data-live=\"1\"><header class=\"top\"><a class=\"brand\" href=\"/\">latentsweep</a>\
<nav><a href=\"/\"{s}>Sweeps</a><a href=\"/workers\"{w}>Workers</a></nav>\
<span id=\"live\" class=\"live\" title=\"live updates\"></span></header>\
<main>{main_html}</main></body></html>",
        title = esc(title),
        s = cur(Nav::Sweeps),
        w = cur(Nav::Workers),
    )
}

/// Query-string pairs in request order, with helpers to build links that change one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// The first non-empty value of a key.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(a, v)| a == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true" | "on"))
    }
    /// A copy with every `k` replaced by one `k=v` (or removed when `v` is `None`).
    pub fn with(&self, k: &str, v: Option<&str>) -> Query {
        let mut q: Vec<(String, String)> = self.0.iter().filter(|(a, _)| a != k).cloned().collect();
        if let Some(v) = v {
            q.push((k.to_owned(), v.to_owned()));
        }
        Query(q)
    }
    /// A copy without the transport-only keys.
    pub fn clean(&self) -> Query {
        Query(
            self.0
                .iter()
                .filter(|(k, v)| k != "fragment" && !v.is_empty())
                .cloned()
                .collect(),
        )
    }
    /// `?a=b&c=d` (empty string when there are no pairs).
    pub(crate) fn to_qs(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        format!("?{}", parts.join("&"))
    }
}

pub fn sweep_url(name: &str) -> String {
    format!("/sweeps/{}", enc(name))
}

pub(crate) fn run_url(job: i64) -> String {
    format!("/runs/{job}")
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `12 s`, `4 min`, `3.5 h`, `2.1 d`.
pub fn fmt_duration_ms(ms: f64) -> String {
    let s = ms / 1000.0;
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86400.0)
    }
}

/// `5 s ago` relative to now.
pub(crate) fn fmt_ago(ms: i64) -> String {
    format!("{} ago", fmt_duration_ms((now_ms() - ms).max(0) as f64))
}

/// UTC `YYYY-MM-DD HH:MM:SS` without a date library (civil-from-days, Howard Hinnant).
pub(crate) fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A small coloured state label.
#[component]
pub(crate) fn StateBadge(state: String) -> impl IntoView {
    let class = format!(
        "badge state-{}",
        state
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
    );
    view! { <span class=class>{state}</span> }
}

/// A not-found page body.
pub(crate) fn not_found_main(what: &str) -> String {
    let what = what.to_owned();
    render(
        move || view! { <h1>"Not found"</h1><p>{what}</p><p><a href="/">"Back to the sweeps"</a></p> },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_and_encoding() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00");
        assert_eq!(fmt_time(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(enc("a b/<c>"), "a%20b%2F%3Cc%3E");
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
