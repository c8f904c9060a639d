//! Reading a file: load, parse, and errors that name the file, line, column and key.

use super::*;

/// The settings that may override the file, gathered by the CLI.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub sched_policy: Option<SchedPolicy>,
    pub rrb_env_policy: Option<String>,
    pub node_env_policy: Option<String>,
    pub workers: Option<WorkerCount>,
    /// `--listen`, as given (`IP:PORT`, `HOST:PORT`, `unix:PATH`), resolved with the file.
    pub listen: Vec<String>,
    /// The worker program and its arguments named on the command line (after `--`).
    pub program: Vec<String>,
    /// `--protocol`; `None`: auto (picked from `program`).
    pub protocol: Option<Protocol>,
    /// `--watch`: reload on changes (the `[watch]` paths, else the worker's directory).
    pub watch: bool,
    /// `--env NAME`: the `[env.NAME]` block to apply.
    pub env: Option<String>,
    /// `--app NAME`: of a file with `[[app]]` sections, that app alone.
    pub app: Option<String>,
}

/// A configuration that cannot be used. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {message}", location(file, *line, *column))]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Setting(String),
}

pub(super) fn location(file: &str, line: usize, column: usize) -> String {
    if line == 0 {
        file.to_owned()
    } else {
        format!("{file}:{line}:{column}")
    }
}

/// Reads and validates a one-app config file (or one app of a file with `[[app]]` sections,
/// `--app`); `None` gives the embedded default.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    match load_any(path, overrides)? {
        Loaded::One(config) => Ok(*config),
        Loaded::Apps(apps) => {
            let names: Vec<String> = apps.apps.iter().map(|a| quoted(&a.name)).collect();
            Err(ConfigError::Setting(format!(
                "{} has [[app]] sections ({}): name one with --app",
                apps.source.display(),
                names.join(", ")
            )))
        }
    }
}

/// Reads and validates a config file, with one app or several; `None` gives the embedded
/// default.
pub fn load_any(path: Option<&Path>, overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let (text, name, dir) = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.to_owned(),
                error,
            })?;
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (text, path.display().to_string(), Some(dir))
        }
        None => (String::new(), "<embedded default config>".to_owned(), None),
    };
    // Absolute, as `status` shows it: usable from any directory.
    let source = path.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    if let Some(path) = path.filter(|_| apps::has_apps(&text)) {
        let mut loaded = apps::load_apps(&text, &name, path, overrides)?;
        match &mut loaded {
            Loaded::One(config) => config.source = source,
            Loaded::Apps(apps) => {
                (apps.apps.iter_mut()).for_each(|a| a.config.source = source.clone())
            }
        }
        return Ok(loaded);
    }
    if let Some(app) = &overrides.app {
        return Err(ConfigError::Setting(format!(
            "--app {}: {name} has no [[app]] sections",
            quoted(app)
        )));
    }
    let file = parse(&text, &name)?;
    let mut config = validate(file, &text, &name, dir.as_deref(), overrides)?;
    config.source = source;
    Ok(Loaded::One(Box::new(config)))
}

/// Where the master started with the config file at `path` is found, and how long its stop may
/// take (`kill_timeout`, after `[shutdown] drain`):
/// what `status`, `reload`, `scale` and `stop` need, read without the rest of the checks (a
/// control command run from a shell whose PATH lacks the worker's program must still reach the
/// master that found it).
pub fn load_control(path: &Path) -> Result<(ControlConfig, Duration), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    let name = path.display().to_string();
    let file = parse(&text, &name)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let kill_timeout = file.shutdown.kill_timeout.into_inner().0.min(MAX_DURATION);
    let drain = file.shutdown.drain.into_inner().0.min(MAX_DURATION);
    let c = Checker {
        text: &text,
        name: &name,
        dir: Some(&dir),
    };
    let owner = (file.master.user.as_ref()).and_then(|u| probe::uid_of(u.get_ref()));
    Ok((
        control_config(&c, file.control, owner),
        kill_timeout + drain,
    ))
}

/// `[control]`: its paths, relative ones taken from the config file's directory, or the
/// defaults named after the file.
/// `owner`: the uid the master drops to (`[master] user`), whose directory the defaults are in.
pub(super) fn control_config(
    c: &Checker<'_>,
    control: FileControl,
    owner: Option<u32>,
) -> ControlConfig {
    let (pid_file, socket) = default_control_paths(c.dir.is_some().then_some(c.name));
    let (pid_file, socket) = match owner {
        Some(uid) => (
            host::for_owner(&pid_file, uid),
            host::for_owner(&socket, uid),
        ),
        None => (pid_file, socket),
    };
    ControlConfig {
        pid_file: control.pid_file.map(|p| c.relative(p)).unwrap_or(pid_file),
        socket: control.socket.map(|p| c.relative(p)).unwrap_or(socket),
    }
}

/// Step one: TOML text to [`FileConfig`], with the key path in every error.
pub fn parse(text: &str, name: &str) -> Result<FileConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| {
        let mut error = toml_error(e, text, name, "");
        if let ConfigError::Invalid { message, .. } = &mut error {
            *message = format!("invalid TOML: {message}");
        }
        error
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        // toml's Spanned<T> shows up in the path as a private segment; users never wrote it.
        let path = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        toml_error(e.into_inner(), text, name, &path)
    })
}

pub(super) fn toml_error(
    error: toml::de::Error,
    text: &str,
    name: &str,
    path: &str,
) -> ConfigError {
    let (line, column) = error
        .span()
        .map_or((0, 0), |span| line_and_column(text, span));
    // Both may hold what the file holds (an unknown key of a megabyte): cut each.
    const SHOWN: usize = 300;
    let mut message = crate::text::cut(&error.message().trim().replace('\n', " "), SHOWN);
    if !path.is_empty() && path != "." {
        let said = wording::for_people(path, &message);
        message = format!("key `{}`: {said}", crate::text::cut(path, SHOWN));
    }
    ConfigError::Invalid {
        file: name.to_owned(),
        line,
        column,
        message,
    }
}

pub(super) fn line_and_column(text: &str, span: Range<usize>) -> (usize, usize) {
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}
