//! `[[app]]`: several apps in one file, one master for all of them (PM2's ecosystem file,
//! circus's watchers). Each `[[app]]` is what a one-app file is — `listen`, `workers`,
//! `[app.worker]`, `[app.restart]` … — over the file's top-level keys, which are every app's
//! defaults (`[worker] env`, `[restart]`, `[shutdown]`, `[env]` …). Tables merge key by key, an
//! app's value wins; `[control]` and `[metrics]` are the whole file's (master-wide), `listen` and
//! `[agent]` each app's own. An app without `listen` is a supervised process group that serves
//! no connection (PM2's fork mode: a queue consumer, a cron-like job).
//!
//! The merge keeps every value's place in the file (toml's spanned tables), so an error in an
//! app names the file, the line and the key as for a one-app file, and says which app.

use toml::de::{DeTable, DeValue};

use super::*;

/// The keys only the file as a whole has; an `[[app]]` may not set them.
const MASTER_WIDE: [&str; 3] = ["control", "metrics", "app"];
/// The keys each app has of its own; the top level of a file with apps may not set them.
const PER_APP: [&str; 2] = ["listen", "agent"];

/// A file with `[[app]]` sections, validated: each app's configuration as its own master runs
/// it, and what the master of them all has.
#[derive(Debug, Clone)]
pub struct AppsConfig {
    /// The file, absolute.
    pub source: PathBuf,
    /// In the file's order; names unique.
    pub apps: Vec<AppConfig>,
    /// `[control]`: where the master of all the apps is found.
    pub control: ControlConfig,
    /// `[metrics]`: `/metrics`, `/readyz`, the status page, for every app.
    pub metrics: Option<MetricsConfig>,
    /// `[log] master_log` and `format`: the master's own log, which every app's master shares.
    pub log: LogConfig,
    /// `--env`, if given (each app applied its block, where it has one).
    pub environment: Option<String>,
}

/// One `[[app]]`: its name and the configuration its master runs.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub config: Config,
}

impl AppConfig {
    /// What tells a changed app from an unchanged one on a reload of the file: its effective
    /// settings as `check` prints them.
    pub fn fingerprint(&self) -> String {
        self.config.to_toml()
    }
}

/// What a file holds: one app (every file without `[[app]]`, or one app of it picked with
/// `--app`), or several.
#[derive(Debug, Clone)]
pub enum Loaded {
    One(Box<Config>),
    Apps(Box<AppsConfig>),
}

/// Whether `text` has `[[app]]` sections (an unparsable text has none: its error comes from
/// the one-app reading).
pub(crate) fn has_apps(text: &str) -> bool {
    DeTable::parse(text).is_ok_and(|root| root.get_ref().get("app").is_some())
}

/// The app names allowed: 1–32 of `A-Z a-z 0-9 _ -`, not starting with `-` (they name
/// sockets, metrics labels and URLs).
pub fn valid_app_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where the master of app `name` is found: in a directory beside the control socket of the
/// master of all, `<socket>.apps/<name>.sock` (and `.pid`).
pub fn app_control(top: &ControlConfig, name: &str) -> ControlConfig {
    let mut dir = top.socket.clone().into_os_string();
    dir.push(".apps");
    let dir = PathBuf::from(dir);
    ControlConfig {
        pid_file: dir.join(format!("{name}.pid")),
        socket: dir.join(format!("{name}.sock")),
    }
}

/// The apps of the file whose text is `text`: each one's merged table, name and the span of
/// its `[[app]]` entry; or why the file's layout is wrong.
fn app_tables<'i>(
    c: &Checker<'_>,
    root: &DeTable<'i>,
) -> Result<Vec<(String, Range<usize>, DeTable<'i>)>, ConfigError> {
    for key in PER_APP {
        if let Some((k, _)) = root.get_key_value(key) {
            let why = match key {
                "listen" => "belongs in each [[app]] (two apps may not share a listener)",
                _ => "belongs in the [[app]] whose workers it talks to",
            };
            return Err(c.invalid(
                k.span(),
                key,
                format!("a file with [[app]] sections: {why}"),
            ));
        }
    }
    let Some(apps) = root.get("app") else {
        return Ok(Vec::new());
    };
    let span = apps.span();
    let DeValue::Array(entries) = apps.get_ref() else {
        let why = "is a list of apps: write each as an [[app]] section".into();
        return Err(c.invalid(span, "app", why));
    };
    if entries.is_empty() {
        return Err(c.invalid(span, "app", "names no app".into()));
    }
    let mut tables: Vec<(String, Range<usize>, DeTable<'i>)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("app[{i}]");
        let DeValue::Table(table) = entry.get_ref() else {
            let why = "is not a table: write it as an [[app]] section".into();
            return Err(c.invalid(entry.span(), &key, why));
        };
        let name = match table.get("name").map(|n| (n.span(), n.get_ref())) {
            Some((span, DeValue::String(name))) => {
                if !valid_app_name(name) {
                    let why = format!(
                        "{} is not an app name: 1-32 of A-Z a-z 0-9 _ -, not starting with -",
                        quoted(name)
                    );
                    return Err(c.invalid(span, &format!("{key}.name"), why));
                }
                if let Some((_, first, _)) = tables.iter().find(|(n, ..)| n == name.as_ref()) {
                    let (line, _) = line_and_column(c.text, first.clone());
                    let why = format!("{} names another app too (line {line})", quoted(name));
                    return Err(c.invalid(span, &format!("{key}.name"), why));
                }
                name.to_string()
            }
            Some((span, _)) => {
                return Err(c.invalid(span, &format!("{key}.name"), "is not a string".into()));
            }
            None => {
                let why = "is missing: every [[app]] has a name (name = \"api\")".into();
                return Err(c.invalid(entry.span(), &format!("{key}.name"), why));
            }
        };
        for wide in MASTER_WIDE {
            if let Some((k, _)) = table.get_key_value(wide) {
                let why = format!(
                    "is the whole file's: write [{wide}] once, at the top level, outside every \
                     [[app]]"
                );
                return Err(c.invalid(k.span(), &format!("app.{wide}"), why));
            }
        }
        let mut merged = DeTable::new();
        for (k, v) in root.iter() {
            if !MASTER_WIDE.contains(&k.get_ref().as_ref()) {
                merged.insert(k.clone(), v.clone());
            }
        }
        let mut own = table.clone();
        own.remove("name");
        merge(&mut merged, own);
        tables.push((name, entry.span(), merged));
    }
    Ok(tables)
}

/// `from` over `into`: tables merge key by key, anything else is replaced.
fn merge<'i>(into: &mut DeTable<'i>, from: DeTable<'i>) {
    for (key, value) in from {
        let span = value.span();
        match (into.get_mut(&key), value.into_inner()) {
            (Some(old), DeValue::Table(new)) if matches!(old.get_ref(), DeValue::Table(_)) => {
                if let DeValue::Table(old) = old.get_mut() {
                    merge(old, new);
                }
            }
            (_, new) => {
                into.insert(key, Spanned::new(span, new));
            }
        }
    }
}

/// Reads a file that may have `[[app]]` sections: with `overrides.app`, that app alone as a
/// one-app configuration (what its master runs); else every app.
pub(crate) fn load_apps(
    text: &str,
    name: &str,
    path: &Path,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    let root = DeTable::parse(text).map_err(|e| {
        let mut error = toml_error(e, text, name, "");
        if let ConfigError::Invalid { message, .. } = &mut error {
            *message = format!("invalid TOML: {message}");
        }
        error
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let c = Checker {
        text,
        name,
        dir: Some(&dir),
    };
    let root = root.into_inner();
    let tables = app_tables(&c, &root)?;
    let listen_spans: Vec<(String, Range<usize>)> = (tables.iter())
        .map(|(app, entry, table)| {
            let span = table.get("listen").map_or(entry.clone(), |l| l.span());
            (app.clone(), span)
        })
        .collect();
    if !overrides.listen.is_empty() {
        return Err(ConfigError::Setting(format!(
            "--listen: {name} has [[app]] sections, each with its own `listen`: set it there"
        )));
    }
    let wide = master_wide(&c, &root)?;
    // The top level's own keys and values (a typo there is no app's).
    let mut top = root.clone();
    top.remove("app");
    let _: FileConfig = deserialize_table(&c, top)?;
    // An environment some app has is applied to those that have it; one none has is an error.
    let mut found_env = overrides.env.is_none();
    let mut apps = Vec::new();
    for (app, _, table) in tables {
        if overrides.app.as_ref().is_some_and(|a| *a != app) {
            continue;
        }
        let has_env = overrides
            .env
            .as_deref()
            .is_some_and(|e| has_env_block(&table, e));
        found_env |= has_env;
        let mut own = overrides.clone();
        own.app = Some(app.clone());
        if !has_env {
            own.env = None;
        }
        let config = app_config(&c, table, &app, &wide, &own)?;
        apps.push(AppConfig { name: app, config });
    }
    if let Some(asked) = &overrides.app {
        return match apps.pop() {
            Some(app) if found_env => Ok(Loaded::One(Box::new(app.config))),
            Some(_) => Err(no_such_environment(name, overrides)),
            None => Err(ConfigError::Setting(format!(
                "--app {}: {name} has no [[app]] of that name",
                quoted(asked)
            ))),
        };
    }
    if !found_env {
        return Err(no_such_environment(name, overrides));
    }
    check_listeners_apart(&c, &apps, &listen_spans)?;
    Ok(Loaded::Apps(Box::new(AppsConfig {
        source: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        apps,
        control: wide.control,
        metrics: wide.metrics,
        log: wide.log,
        environment: overrides.env.clone(),
    })))
}

fn no_such_environment(name: &str, overrides: &Overrides) -> ConfigError {
    ConfigError::Setting(format!(
        "--env {}: neither {name}'s [env] nor any [[app]] has an [env.{}] block",
        quoted(overrides.env.as_deref().unwrap_or_default()),
        overrides.env.as_deref().unwrap_or_default()
    ))
}

fn has_env_block(table: &DeTable<'_>, env: &str) -> bool {
    match table.get("env").map(|e| e.get_ref()) {
        Some(DeValue::Table(env_table)) => {
            matches!(
                env_table.get(env).map(|b| b.get_ref()),
                Some(DeValue::Table(_))
            )
        }
        _ => false,
    }
}

/// What the whole file has: `[control]`, `[metrics]`, `[log]`'s master log.
struct MasterWide {
    control: ControlConfig,
    metrics: Option<MetricsConfig>,
    log: LogConfig,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct FileMasterWide {
    control: FileControl,
    metrics: FileMetrics,
    log: FileLog,
    master: FileMaster,
}

fn master_wide(c: &Checker<'_>, root: &DeTable<'_>) -> Result<MasterWide, ConfigError> {
    let mut table = DeTable::new();
    for (k, v) in root.iter() {
        if ["control", "metrics", "log", "master"].contains(&k.get_ref().as_ref()) {
            table.insert(k.clone(), v.clone());
        }
    }
    let file: FileMasterWide = deserialize_table(c, table)?;
    let owner = (file.master.user.as_ref()).and_then(|u| probe::uid_of(u.get_ref()));
    let metrics = metrics_config(c, file.metrics)?;
    let (mut control, log) = paths_config(c, file.control, file.log, owner)?;
    // Absolute: the apps' masters are found from any directory, and a reload compares alike.
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    control.socket = absolute(&control.socket);
    control.pid_file = absolute(&control.pid_file);
    Ok(MasterWide {
        control,
        metrics,
        log,
    })
}

/// A table of the file into `T`, errors naming the key and its line.
pub(super) fn deserialize_table<T: serde::de::DeserializeOwned>(
    c: &Checker<'_>,
    table: DeTable<'_>,
) -> Result<T, ConfigError> {
    let span = 0..c.text.len();
    let deserializer = toml::Deserializer::from(Spanned::new(span, table));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        toml_error(e.into_inner(), c.text, c.name, &path)
    })
}

/// One app's configuration: its merged table validated as a one-app file, then made one of
/// several: its control socket beside the master's, no metrics listener of its own (the master
/// of all serves every app's), the master's log (`[log] master_log`) shared.
fn app_config(
    c: &Checker<'_>,
    mut table: DeTable<'_>,
    app: &str,
    wide: &MasterWide,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let in_app = |e: ConfigError| match e {
        ConfigError::Invalid {
            file,
            line,
            column,
            message,
        } => ConfigError::Invalid {
            file,
            line,
            column,
            message: format!("[[app]] {}: {message}", quoted(app)),
        },
        ConfigError::Setting(message) => {
            ConfigError::Setting(format!("[[app]] {}: {message}", quoted(app)))
        }
        other => other,
    };
    // No `listen`: a process group serving no connection.
    let listens = table.get("listen").is_some();
    if !listens {
        let key = Spanned::new(0..0, toml::de::DeString::Borrowed("listen"));
        table.insert(key, Spanned::new(0..0, DeValue::Array(Default::default())));
    }
    let mut file: FileConfig = deserialize_table(c, table).map_err(in_app)?;
    if !listens && file.worker.ready.is_none() && file.worker.protocol == Protocol::Native {
        // A native worker says it is ready when it serves; one that serves nothing, once it has
        // run `ready_delay` (a Node one is at start anyway).
        file.worker.ready = Some(Spanned::new(0..0, Readiness::Delay));
    }
    let mut config = validate(file, c.text, c.name, c.dir, overrides).map_err(in_app)?;
    config.app = Some(app.to_owned());
    config.control = app_control(&wide.control, app);
    config.metrics = None;
    // The master of all's log, which this app's master writes to as well (and reopens).
    config.log.master_log = wide.log.master_log.clone();
    config.log.format = wide.log.format;
    Ok(config)
}

/// No address is two apps' (each app's master binds its own): the same address, or the same
/// port where one is a wildcard (`0.0.0.0:80` takes `127.0.0.1:80` too).
fn check_listeners_apart(
    c: &Checker<'_>,
    apps: &[AppConfig],
    spans: &[(String, Range<usize>)],
) -> Result<(), ConfigError> {
    for (i, app) in apps.iter().enumerate() {
        for other in &apps[..i] {
            let clash = (app.config.listen.iter()).find_map(|a| {
                other
                    .config
                    .listen
                    .iter()
                    .find(|b| overlap(a, b))
                    .map(|b| (a, b))
            });
            if let Some((mine, theirs)) = clash {
                let span =
                    (spans.iter().find(|(n, _)| *n == app.name)).map_or(0..0, |(_, s)| s.clone());
                let same = if mine == theirs {
                    format!("{mine} is [[app]] {}'s too", quoted(&other.name))
                } else {
                    format!("{mine} overlaps [[app]] {}'s {theirs}", quoted(&other.name))
                };
                return Err(c.at(
                    span,
                    format!(
                        "[[app]] {}: key `listen`: {same}; an address is one app's",
                        quoted(&app.name)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether binding `a` and `b` would clash.
fn overlap(a: &ListenAddr, b: &ListenAddr) -> bool {
    match (a, b) {
        (ListenAddr::Tcp(x), ListenAddr::Tcp(y)) => {
            x.port() == y.port()
                && (x.ip() == y.ip()
                    || (x.ip().is_unspecified() || y.ip().is_unspecified())
                        && x.is_ipv4() == y.is_ipv4())
        }
        _ => a == b,
    }
}
