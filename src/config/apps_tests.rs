//! Tests of files with `[[app]]` sections.

use super::apps::AppConfig;
use super::*;

/// Loads `text` as the file `apps.toml` (in a temporary directory) with `overrides`.
fn load_apps_str(text: &str, overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.toml");
    std::fs::write(&path, text).unwrap();
    load_any(Some(&path), overrides)
}

fn apps_of(text: &str) -> AppsConfig {
    match load_apps_str(text, &Overrides::default()) {
        Ok(Loaded::Apps(apps)) => *apps,
        other => panic!("not several apps: {other:?}"),
    }
}

fn error_of_apps(text: &str) -> String {
    let e = load_apps_str(text, &Overrides::default())
        .unwrap_err()
        .to_string();
    // The temporary directory's name varies: from the file's name on.
    e[e.find("apps.toml").unwrap_or(0)..].to_owned()
}

const TWO: &str = "\
workers = 3
[worker.env]
SHARED = \"top\"
KEPT = \"top\"

[[app]]
name = \"api\"
listen = \"127.0.0.1:0\"
[app.worker.env]
SHARED = \"api\"

[[app]]
name = \"jobs\"
workers = 1
[app.worker]
exec = \"sh\"
args = [\"-c\", \"sleep 1\"]
";

#[test]
fn top_level_keys_are_every_apps_defaults_and_an_apps_own_win() {
    let apps = apps_of(TWO);
    let names: Vec<&str> = apps.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["api", "jobs"]);
    let (api, jobs) = (&apps.apps[0].config, &apps.apps[1].config);
    assert_eq!((api.workers, jobs.workers), (3, 1));
    let env = |c: &Config, k: &str| {
        (c.worker.command.env.iter())
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(env(api, "SHARED").as_deref(), Some("api"), "the app's wins");
    assert_eq!(
        env(api, "KEPT").as_deref(),
        Some("top"),
        "tables merge key by key"
    );
    assert_eq!(env(jobs, "SHARED").as_deref(), Some("top"));
    // jobs listens nowhere: it is ready once it ran `ready_delay`.
    assert!(jobs.listen.is_empty());
    assert_eq!(jobs.worker.ready, Readiness::Delay);
    assert_eq!(api.worker.ready, Readiness::Message);
    // Each app's master: its control socket beside the master of all's, no metrics listener.
    assert_eq!(api.app.as_deref(), Some("api"));
    assert_eq!(api.control, app_control(&apps.control, "api"));
    let sockets = api.control.socket.display().to_string();
    assert!(sockets.ends_with(".sock.apps/api.sock"), "{sockets}");
    assert!(api.metrics.is_none());
}

#[test]
fn check_prints_every_app_and_its_output_loads_back_the_same() {
    let apps = apps_of(TWO);
    let printed = apps.to_toml();
    assert!(
        printed.contains("[[app]]") && printed.contains("name = \"jobs\""),
        "{printed}"
    );
    let again = apps_of(&printed);
    let prints =
        |a: &AppsConfig| -> Vec<String> { a.apps.iter().map(AppConfig::fingerprint).collect() };
    assert_eq!(prints(&again), prints(&apps));
}

#[test]
fn one_app_of_the_file_loads_alone_with_app_and_the_whole_file_not_as_one() {
    let overrides = Overrides {
        app: Some("jobs".into()),
        ..Overrides::default()
    };
    match load_apps_str(TWO, &overrides) {
        Ok(Loaded::One(config)) => assert_eq!(config.workers, 1),
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.toml");
    std::fs::write(&path, TWO).unwrap();
    let e = load(Some(&path), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("has [[app]] sections (\"api\", \"jobs\"): name one with --app"),
        "{e}"
    );
    let overrides = Overrides {
        app: Some("nope".into()),
        ..Overrides::default()
    };
    let e = load_apps_str(TWO, &overrides).unwrap_err().to_string();
    assert!(
        e.contains("--app \"nope\"") && e.contains("no [[app]] of that name"),
        "{e}"
    );
    let e = load_apps_str("workers = 2\n", &overrides)
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no [[app]] sections"), "{e}");
}

#[test]
fn the_files_layout_errors_name_line_key_and_app() {
    let e = error_of_apps("[[app]]\nname = \"a\"\n\n[[app]]\nname = \"a\"\n");
    assert_eq!(
        e,
        "apps.toml:5:8: key `app[1].name`: \"a\" names another app too (line 1)"
    );
    let e = error_of_apps("[[app]]\nlisten = \"127.0.0.1:0\"\n");
    assert!(
        e.starts_with("apps.toml:1:1: key `app[0].name`: is missing"),
        "{e}"
    );
    let e = error_of_apps("[[app]]\nname = \"no spaces\"\n");
    assert!(
        e.starts_with("apps.toml:2:8: key `app[0].name`: \"no spaces\" is not"),
        "{e}"
    );
    let e = error_of_apps("listen = \"127.0.0.1:0\"\n[[app]]\nname = \"a\"\n");
    assert!(
        e.starts_with("apps.toml:1:1: key `listen`") && e.contains("each [[app]]"),
        "{e}"
    );
    let e = error_of_apps("[[app]]\nname = \"a\"\n[app.control]\nsocket = \"x.sock\"\n");
    assert!(
        e.starts_with("apps.toml:3:6: key `app.control`: is the whole file's"),
        "{e}"
    );
    let e = error_of_apps("app = 3\n");
    assert!(e.contains("key `app`: is a list of apps"), "{e}");
    // A key of an app's own: its line, its key, and which app.
    let e = error_of_apps(
        "[[app]]\nname = \"a\"\n\n[[app]]\nname = \"b\"\n[app.worker]\nready_timeout = \"soon\"\n",
    );
    assert!(
        e.starts_with("apps.toml:7:17: [[app]] \"b\": key `worker.ready_timeout`"),
        "{e}"
    );
}

#[test]
fn an_address_is_one_apps_and_two_apps_sharing_one_are_named_both() {
    let e = error_of_apps(
        "[[app]]\nname = \"api\"\nlisten = \"127.0.0.1:4567\"\n\n[[app]]\nname = \"web\"\n\
         listen = [\"127.0.0.1:4568\", \"127.0.0.1:4567\"]\n",
    );
    assert_eq!(
        e,
        "apps.toml:7:10: [[app]] \"web\": key `listen`: 127.0.0.1:4567 is [[app]] \"api\"'s \
         too; an address is one app's"
    );
    // A wildcard takes the port on every address.
    let e = error_of_apps(
        "[[app]]\nname = \"api\"\nlisten = \"0.0.0.0:4567\"\n\n[[app]]\nname = \"web\"\n\
         listen = \"127.0.0.1:4567\"\n",
    );
    assert!(
        e.contains("127.0.0.1:4567 overlaps [[app]] \"api\"'s 0.0.0.0:4567"),
        "{e}"
    );
    apps_of(
        "[[app]]\nname = \"api\"\nlisten = \"0.0.0.0:4567\"\n\n[[app]]\nname = \"web\"\n\
         listen = \"127.0.0.1:4568\"\n",
    );
}

#[test]
fn a_top_level_typo_is_the_files_not_an_apps() {
    let e = error_of_apps("wrokers = 3\n\n[[app]]\nname = \"a\"\n");
    assert!(e.starts_with("apps.toml:1:1: key `wrokers`"), "{e}");
    assert!(!e.contains("[[app]]"), "{e}");
}

#[test]
fn an_environment_applies_to_the_apps_that_have_it_and_one_none_has_is_refused() {
    let text = "[[app]]\nname = \"api\"\n[app.env]\nMODE = \"dev\"\n[app.env.production]\n\
                MODE = \"prod\"\n\n[[app]]\nname = \"jobs\"\n";
    let overrides = Overrides {
        env: Some("production".into()),
        ..Overrides::default()
    };
    let Ok(Loaded::Apps(apps)) = load_apps_str(text, &overrides) else {
        panic!("loads");
    };
    let mode = (apps.apps[0].config.worker.command.env.iter()).find(|(k, _)| k == "MODE");
    assert_eq!(mode.map(|(_, v)| v.as_str()), Some("prod"));
    assert_eq!(
        apps.apps[0].config.environment.as_deref(),
        Some("production")
    );
    assert_eq!(
        apps.apps[1].config.environment, None,
        "jobs has no such block"
    );
    let overrides = Overrides {
        env: Some("staging".into()),
        ..Overrides::default()
    };
    let e = load_apps_str(text, &overrides).unwrap_err().to_string();
    assert!(e.contains("--env \"staging\": neither"), "{e}");
}

/// `check` says which environment the apps applied once when it is the same for all, and app
/// by app when it is not.
#[test]
fn check_names_the_environment_once_when_every_app_has_the_same() {
    let same = "[env.production]\nMODE = \"prod\"\n[[app]]\nname = \"api\"\n[[app]]\n\
                name = \"jobs\"\n";
    let mixed = "[[app]]\nname = \"api\"\n[app.env.production]\nMODE = \"prod\"\n[[app]]\n\
                 name = \"jobs\"\n";
    let production = Overrides {
        env: Some("production".into()),
        ..Overrides::default()
    };
    let printed = |text: &str| match load_apps_str(text, &production) {
        Ok(Loaded::Apps(apps)) => apps.to_toml(),
        _ => panic!("loads"),
    };
    let comments = |printed: &str| -> Vec<String> {
        (printed.lines())
            .filter(|l| l.starts_with('#'))
            .map(|l| l[..l.find(':').unwrap_or(l.len())].to_owned())
            .collect()
    };
    let once = printed(same);
    assert_eq!(comments(&once), ["# every [[app]]"], "{once}");
    assert!(
        once.contains("environment \"production\" (--env)"),
        "{once}"
    );
    let each = printed(mixed);
    assert_eq!(comments(&each), ["# [[app]] \"api\""], "{each}");
}
