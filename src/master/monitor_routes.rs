//! What each path of the monitoring listener answers: the Prometheus text, the health probes,
//! the status page and the JSON it reads.

use std::time::{Duration, Instant};

use super::{Master, Phase};

/// `GET /`: one self-contained page (no external assets) that reads `/status.json` every second.
pub(super) const STATUS_PAGE: &str = include_str!("status_page.html");

/// How long one `/status.json` serves every client that asks (less than the page's second
/// between readings, so that one page gets a new one each time): making it reads `/proc` for every
/// worker (about 25 µs each), so however many pages are open, it is made once a second at most.
/// The page takes its rates on the master's clock (the workers' uptimes in the same answer), so
/// an answer that is a moment old gives true rates still.
const STATUS_REUSE: Duration = Duration::from_millis(900);

impl Master {
    /// What a request for `target` is answered: status line, content type, body.
    pub(super) fn route(&mut self, target: &str) -> (&'static str, &'static str, String) {
        match target {
            "/" => ("200 OK", "text/html; charset=utf-8", STATUS_PAGE.to_owned()),
            "/status.json" => (
                "200 OK",
                "application/json",
                self.status_json(Instant::now()),
            ),
            "/metrics" => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics_text(),
            ),
            "/healthz" => {
                if self.health().healthy {
                    ("200 OK", "text/plain", "ok\n".to_owned())
                } else {
                    (
                        "503 Service Unavailable",
                        "text/plain",
                        "no worker is ready\n".into(),
                    )
                }
            }
            "/readyz" => {
                let stopping = self.core.phase() != Phase::Running;
                let draining = self.ops.drain.active();
                let why = match (self.health().ready, stopping, draining) {
                    (true, ..) => return ("200 OK", "text/plain", "ready\n".to_owned()),
                    (false, true, _) => "stopping\n",
                    (false, false, true) => "draining\n",
                    (false, false, false) => "not ready\n",
                };
                ("503 Service Unavailable", "text/plain", why.into())
            }
            _ => (
                "404 Not Found",
                "text/plain",
                "not found: /metrics, /healthz, /readyz, / (the status page), /status.json\n"
                    .into(),
            ),
        }
    }

    /// `/status.json`: the projection `status --json` prints, made at most once per
    /// [`STATUS_REUSE`].
    fn status_json(&mut self, now: Instant) -> String {
        let cached = self
            .ops
            .monitor
            .as_ref()
            .and_then(|m| m.status_json.as_ref());
        if let Some((at, json)) = cached {
            if now.saturating_duration_since(*at) < STATUS_REUSE {
                return json.clone();
            }
        }
        let json = serde_json::to_string(&self.status())
            .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
        if let Some(monitor) = self.ops.monitor.as_mut() {
            monitor.status_json = Some((now, json.clone()));
        }
        json
    }
}
