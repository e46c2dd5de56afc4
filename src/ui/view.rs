//! The console's page frame and the small pieces every page prints.

use axum::response::Html;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::Session;

/// Which top-level section a page belongs to (highlighted in the menu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Jobs,
    Reports,
    Data,
    Dashboards,
    None,
}

/// The pages of the Data section.
const DATA_PAGES: [(&str, &str); 5] = [
    ("/ui/rollups", "Rollups"),
    ("/ui/capacity", "Capacity"),
    ("/ui/retention", "Retention"),
    ("/ui/dead-letters", "Dead letters"),
    ("/ui/audit", "Audit log"),
];

/// A whole page: menu, title, body.
pub fn page(title: &str, section: Section, session: &Session, body: Markup) -> Html<String> {
    page_refreshed(title, section, session, None, body)
}

/// A page that reloads itself every `refresh` seconds (something on it is
/// running), unless it follows a log.
pub fn page_refreshed(
    title: &str,
    section: Section,
    session: &Session,
    refresh: Option<u32>,
    body: Markup,
) -> Html<String> {
    let menu = [
        (Section::Overview, "/ui/", "Overview"),
        (Section::Jobs, "/ui/jobs", "Jobs"),
        (Section::Reports, "/ui/reports", "Reports"),
        (Section::Data, "/ui/rollups", "Data"),
        (Section::Dashboards, "/ui/dashboards/business", "Dashboards"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hxjobs" }
                link rel="stylesheet" href="/ui/static/app.css";
                script src="/ui/static/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui/" { "hxjobs" }
                    nav {
                        @for (s, href, label) in menu {
                            a.current[s == section] href=(href) { (label) }
                        }
                    }
                    div.who {
                        @match &session.actor {
                            Some(actor) if session.logged_in || session.may_write => span title={ "role: " (actor.role) } { (actor.name) },
                            _ => span.muted { "read only" },
                        }
                        @if session.logged_in {
                            form.inline method="post" action="/ui/logout" {
                                (csrf_field(session))
                                button.link type="submit" { "Log out" }
                            }
                        } @else if !session.may_write {
                            " " a href="/ui/login" { "Log in" }
                        }
                    }
                }
                main data-refresh=[refresh] {
                    @if section == Section::Data {
                        nav.sub {
                            @for (href, label) in DATA_PAGES {
                                // The audit log is the admins'.
                                @if href != "/ui/audit" || session.actor.as_ref().is_some_and(|a| a.may(crate::ops::Need::Admin, None)) {
                                    a.current[label == title] href=(href) { (label) }
                                }
                            }
                        }
                    }
                    @if section == Section::Dashboards {
                        nav.sub {
                            @for (href, label) in super::dashboards::PAGES {
                                a.current[label == title] href=(href) { (label) }
                            }
                        }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string())
}

/// A page for an error, without the menu (the session may be unknown).
pub fn error_page(title: &str, message: &str) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · hxjobs" }
                link rel="stylesheet" href="/ui/static/app.css";
            }
            body {
                header.top { a.brand href="/ui/" { "hxjobs" } }
                main {
                    h1 { (title) }
                    p.error { (message) }
                    p { a href="/ui/" { "Back to the overview" } }
                }
            }
        }
    };
    Html(markup.into_string())
}

/// The hidden field every mutating form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A time as `2026-11-23 14:00:05 UTC`; on hover the viewer's local time
/// (app.js), or the full instant without scripts.
pub fn time(t: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) {
            (t.format("%Y-%m-%d %H:%M:%S")) " UTC"
        }
    }
}

/// An optional time; "n/a" when there is none.
pub fn time_or_na(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => na(),
    }
}

/// What is printed where a value is missing: never a made-up number.
pub fn na() -> Markup {
    html! { span.na { "n/a" } }
}

/// Seconds as `850 ms`, `12.4 s`, `3 min 05 s`, `2 h 10 min`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "n/a".into();
    }
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        let s = secs.round() as u64;
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        let m = (secs / 60.0).round() as u64;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

/// A state as a coloured label (class `s-<state>`).
pub fn state_badge(state: &str) -> Markup {
    html! { span class={ "badge s-" (state) } { (state) } }
}

/// An interval as `start → end`.
pub fn interval(start: DateTime<Utc>, end: DateTime<Utc>) -> Markup {
    html! { (time(start)) " → " (time(end)) }
}

/// Percent-encodes `text` for a URL's path segment or query value.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path segment (a job or task name) for a link.
pub fn segment(text: &str) -> String {
    url_encode(text).replace('/', "%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(0.25), "250 ms");
        assert_eq!(duration(12.44), "12.4 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(7800.0), "2 h 10 min");
        assert_eq!(duration(f64::NAN), "n/a");
    }

    #[test]
    fn names_are_encoded_for_links() {
        assert_eq!(segment("a b/<c>"), "a%20b%2F%3Cc%3E");
        assert_eq!(url_encode("/ui/jobs/x?y"), "/ui/jobs/x%3Fy");
    }

    #[test]
    fn untrusted_text_is_escaped() {
        let text = "<script>alert(1)</script>";
        let m = html! { p { (text) } };
        assert_eq!(
            m.into_string(),
            "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
        );
    }
}
