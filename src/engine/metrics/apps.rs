//! The metrics of several apps as one exposition: every app's master renders its own; the
//! master of all of them gives each sample an `app` label and writes each family once (its
//! `# HELP` and `# TYPE`, then its samples from every app), as the text format requires. Then
//! its own families: each app's state.

use std::fmt::Write;

use crate::engine::apps::{AppView, Phase};

/// One family: its comment lines and its samples, in the order first met.
struct Family {
    name: String,
    comments: Vec<String>,
    samples: Vec<String>,
}

/// `texts`: each app's name and its master's exposition (`None`: it did not answer, or runs
/// none); `apps`: where each app stands. The families of the master of all come last.
pub fn merge(texts: &[(&str, Option<&str>)], apps: &[AppView]) -> String {
    let mut families: Vec<Family> = Vec::new();
    for (app, text) in texts {
        let Some(text) = text else { continue };
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut words = rest.splitn(3, ' ');
                let (Some(kind @ ("HELP" | "TYPE")), Some(name)) = (words.next(), words.next())
                else {
                    continue;
                };
                let index = family(&mut families, name);
                let family = &mut families[index];
                if !family
                    .comments
                    .iter()
                    .any(|c| c.starts_with(&format!("# {kind} ")))
                {
                    family.comments.push(line.to_owned());
                }
                current = Some(index);
                continue;
            }
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            // A sample belongs to the family last declared if it is one of its series
            // (`x_bucket`, `x_sum`, `x_count` of histogram `x`), else to one of its own name.
            let index = match current {
                Some(i) if name.starts_with(families[i].name.as_str()) => i,
                _ => family(&mut families, name),
            };
            families[index].samples.push(labelled(line, name_end, app));
        }
    }
    let mut out = String::new();
    for family in &families {
        for comment in &family.comments {
            let _ = writeln!(out, "{comment}");
        }
        for sample in &family.samples {
            let _ = writeln!(out, "{sample}");
        }
    }
    own_families(&mut out, apps);
    out
}

fn family(families: &mut Vec<Family>, name: &str) -> usize {
    match families.iter().position(|f| f.name == name) {
        Some(i) => i,
        None => {
            families.push(Family {
                name: name.to_owned(),
                comments: Vec::new(),
                samples: Vec::new(),
            });
            families.len() - 1
        }
    }
}

/// `line` with `app="…"` as its first label (`name_end`: where its name ends).
fn labelled(line: &str, name_end: usize, app: &str) -> String {
    let (name, rest) = line.split_at(name_end);
    let label = format!("app=\"{}\"", escape(app));
    match rest.strip_prefix('{') {
        Some(labels) if labels.starts_with('}') => format!("{name}{{{label}{labels}"),
        Some(labels) => format!("{name}{{{label},{labels}"),
        None => format!("{name}{{{label}}}{rest}"),
    }
}

/// A label value as the text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The master of all's own: whether each app's master runs, its restarts, its state.
fn own_families(out: &mut String, apps: &[AppView]) {
    let _ = writeln!(
        out,
        "# HELP rrbalancer_app_up Whether the app's master runs (1) or not (0).\n\
         # TYPE rrbalancer_app_up gauge"
    );
    for app in apps {
        let up = matches!(app.phase, Phase::Running { .. }) as u8;
        let _ = writeln!(
            out,
            "rrbalancer_app_up{{app=\"{}\"}} {up}",
            escape(&app.name)
        );
    }
    let _ = writeln!(
        out,
        "# HELP rrbalancer_app_restarts_total Times the app's master was started again after \
         exiting unasked.\n# TYPE rrbalancer_app_restarts_total counter"
    );
    for app in apps {
        let _ = writeln!(
            out,
            "rrbalancer_app_restarts_total{{app=\"{}\"}} {}",
            escape(&app.name),
            app.restarts
        );
    }
    let _ = writeln!(
        out,
        "# HELP rrbalancer_app_state The app's state: 1 for the one it is in.\n\
         # TYPE rrbalancer_app_state gauge"
    );
    for app in apps {
        for state in [
            "starting",
            "running",
            "restarting",
            "stopping",
            "stopped",
            "given up",
        ] {
            let _ = writeln!(
                out,
                "rrbalancer_app_state{{app=\"{}\",state=\"{}\"}} {}",
                escape(&app.name),
                state.replace(' ', "_"),
                (app.phase.word() == state) as u8
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_once_with_every_apps_samples_labelled() {
        let api = "# HELP rrb_handed_total Handed.\n# TYPE rrb_handed_total counter\n\
                   rrb_handed_total{slot=\"0\"} 5\nrrb_handed_total{slot=\"1\"} 7\n\
                   # HELP rrb_lat Latency.\n# TYPE rrb_lat histogram\n\
                   rrb_lat_bucket{le=\"+Inf\"} 3\nrrb_lat_sum 0.5\nrrb_lat_count 3\nrrb_up 1\n";
        let web = "# HELP rrb_handed_total Handed.\n# TYPE rrb_handed_total counter\n\
                   rrb_handed_total{} 2\n";
        let text = merge(
            &[("api", Some(api)), ("web", Some(web)), ("jobs", None)],
            &[],
        );
        assert_eq!(text.matches("# TYPE rrb_handed_total").count(), 1);
        let handed: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("rrb_handed"))
            .collect();
        assert_eq!(
            handed,
            [
                "rrb_handed_total{app=\"api\",slot=\"0\"} 5",
                "rrb_handed_total{app=\"api\",slot=\"1\"} 7",
                "rrb_handed_total{app=\"web\"} 2",
            ]
        );
        assert!(text.contains("rrb_lat_bucket{app=\"api\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("rrb_lat_sum{app=\"api\"} 0.5\n"));
        assert!(text.contains("rrb_up{app=\"api\"} 1\n"));
        // The histogram's series stay under its TYPE line, before the next family.
        let at = |s: &str| text.find(s).unwrap();
        assert!(at("# TYPE rrb_lat") < at("rrb_lat_count") && at("rrb_lat_count") < at("rrb_up"));
    }
}
