//! `[env]`: variables for every process the master starts (the workers and the agent), and
//! `[env.<name>]` blocks — `[env.production]`, `[env.staging]` — one of which `--env <name>`
//! selects, as PM2's `env_production` is selected by `--env production`.
//!
//! Each process's environment is, from the bottom: the master's own, `[env]`, its section's
//! `env` (`[worker] env`, `[agent] env`), then the selected block, which wins: the environment
//! named on the command line is the one the operator asked for.

use super::*;

/// The `[env]` table as the file may write it: variables (strings) and named blocks (tables of
/// strings), checked by [`read`].
pub type FileEnv = BTreeMap<String, Spanned<toml::Value>>;

/// `[env]`, read: its variables and its named blocks.
#[derive(Debug, Default)]
pub(super) struct Environments {
    base: BTreeMap<String, String>,
    named: BTreeMap<String, BTreeMap<String, String>>,
}

/// Reads `[env]`: every value a string (a variable) or a table of strings (a named block), each
/// name and value one a program can be given.
pub(super) fn read(c: &Checker<'_>, file: FileEnv) -> Result<Environments, ConfigError> {
    let mut envs = Environments::default();
    for (key, value) in file {
        let span = value.span();
        match value.into_inner() {
            toml::Value::String(s) => {
                check_var(c, &span, "env", &key, &s)?;
                envs.base.insert(key, s);
            }
            toml::Value::Table(table) => {
                let mut block = BTreeMap::new();
                for (var, value) in table {
                    let toml::Value::String(s) = value else {
                        let value = short(&value.to_string());
                        return Err(c.invalid(
                            span,
                            &format!("env.{}.{}", short(&key), short(&var)),
                            format!("{value} is not a string (write it quoted: \"{value}\")"),
                        ));
                    };
                    check_var(c, &span, &format!("env.{key}"), &var, &s)?;
                    block.insert(var, s);
                }
                envs.named.insert(key, block);
            }
            other => {
                let (key, other) = (short(&key), short(&other.to_string()));
                return Err(c.invalid(
                    span,
                    &format!("env.{key}"),
                    format!(
                        "{other} is neither a string (a variable: write it quoted) nor a table \
                         ([env.{key}]: an environment --env selects)"
                    ),
                ));
            }
        }
    }
    Ok(envs)
}

/// A variable `execve` can pass: a name neither empty nor with `=` or a NUL byte (the program
/// would see another variable), a value without a NUL byte.
fn check_var(
    c: &Checker<'_>,
    span: &Range<usize>,
    table: &str,
    name: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let why = if name.is_empty() || name.contains(['=', '\0']) {
        "is not a variable name (empty, or with `=` or a NUL byte)"
    } else if value.contains('\0') {
        "has a NUL byte in its value, which no program can be given"
    } else {
        return Ok(());
    };
    Err(c.at(
        span.clone(),
        format!(
            "key `{}`: {} {why}",
            short(table),
            crate::text::quoted(name)
        ),
    ))
}

/// A name or value from the file as an error shows it: cut, whatever the file holds.
fn short(text: &str) -> String {
    crate::text::cut(text, 60)
}

impl Environments {
    /// The block `--env` names, checked: `None` if none was asked; an error naming the file and
    /// the blocks it has if it has no such block.
    pub fn select(
        &self,
        c: &Checker<'_>,
        asked: Option<&str>,
    ) -> Result<Option<String>, ConfigError> {
        let Some(name) = asked else {
            return Ok(None);
        };
        if self.named.contains_key(name) {
            return Ok(Some(name.to_owned()));
        }
        let has = if self.named.is_empty() {
            "none".to_owned()
        } else {
            crate::text::cut(&self.names().join(", "), 200)
        };
        Err(ConfigError::Setting(format!(
            "--env {}: {} has no [env.{}] (its environments: {has})",
            crate::text::quoted(name),
            c.name,
            short(name),
        )))
    }

    /// The names of the blocks, in order.
    pub fn names(&self) -> Vec<String> {
        self.named.keys().cloned().collect()
    }

    /// A process's environment: `[env]`, then its own `env` over it, then the `selected` block
    /// over both.
    pub fn apply(
        &self,
        own: BTreeMap<String, String>,
        selected: Option<&str>,
    ) -> BTreeMap<String, String> {
        let mut env = self.base.clone();
        env.extend(own);
        if let Some(block) = selected.and_then(|name| self.named.get(name)) {
            env.extend(block.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load_str;
    use super::*;

    fn with_env(text: &str, env: Option<&str>) -> Result<Config, ConfigError> {
        let file = parse(text, "cluster.toml")?;
        let overrides = Overrides {
            env: env.map(str::to_owned),
            ..Overrides::default()
        };
        validate(file, text, "cluster.toml", None, &overrides)
    }

    const FILE: &str = "[worker]\nenv = { NODE_ENV = \"development\", OWN = \"worker\" }\n\
        [agent]\nexec = \"sh\"\nready = \"delay\"\n\
        [env]\nPORT = \"3000\"\nNODE_ENV = \"base\"\nOWN = \"base\"\n\
        [env.production]\nNODE_ENV = \"production\"\nAPI = \"https://api\"\n\
        [env.staging]\nNODE_ENV = \"staging\"\n";

    fn vars(env: &[(String, String)]) -> Vec<String> {
        env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn env_lies_under_a_process_s_own_and_the_selected_block_over_both() {
        let plain = with_env(FILE, None).unwrap();
        assert_eq!(
            vars(&plain.worker.command.env),
            ["NODE_ENV=development", "OWN=worker", "PORT=3000"]
        );
        let agent = plain.agent.as_ref().unwrap();
        assert_eq!(
            vars(&agent.command.env),
            ["NODE_ENV=base", "OWN=base", "PORT=3000"]
        );
        assert_eq!(plain.environment, None);
        assert_eq!(plain.environments, ["production", "staging"]);

        let production = with_env(FILE, Some("production")).unwrap();
        assert_eq!(
            vars(&production.worker.command.env),
            [
                "API=https://api",
                "NODE_ENV=production",
                "OWN=worker",
                "PORT=3000"
            ]
        );
        let agent = production.agent.as_ref().unwrap();
        assert_eq!(
            vars(&agent.command.env),
            [
                "API=https://api",
                "NODE_ENV=production",
                "OWN=base",
                "PORT=3000"
            ]
        );
        assert_eq!(production.environment.as_deref(), Some("production"));
        // `check` says which, and its output loads back to the same environment.
        let printed = production.to_toml();
        assert!(
            printed.starts_with("# environment \"production\" (--env)"),
            "{printed}"
        );
        let again = load_str(&printed).unwrap();
        assert_eq!(again.worker.command.env, production.worker.command.env);
    }

    #[test]
    fn an_unknown_environment_or_a_value_that_is_no_string_is_named() {
        let e = with_env(FILE, Some("prod")).unwrap_err().to_string();
        assert!(
            e.contains("--env \"prod\": cluster.toml has no [env.prod]")
                && e.contains("its environments: production, staging"),
            "{e}"
        );
        let e = with_env("", Some("production")).unwrap_err().to_string();
        assert!(e.contains("its environments: none"), "{e}");
        let e = with_env("[env]\nPORT = 3000\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cluster.toml:2:") && e.contains("key `env.PORT`: 3000 is neither"),
            "{e}"
        );
        let e = with_env("[env.production]\nPORT = 3000\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `env.production.PORT`: 3000 is not a string"),
            "{e}"
        );
        let e = with_env("[env]\n\"A=B\" = \"x\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cluster.toml:2:") && e.contains("is not a variable name"),
            "{e}"
        );
        let e = with_env("[env.x]\n\"A=B\" = \"x\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cluster.toml:1:") && e.contains("key `env.x`: \"A=B\" is not a"),
            "{e}"
        );
        // Whatever the file or the flag holds, a message stays one readable line.
        let big = "z".repeat(100_000);
        for (text, asked) in [
            (format!("[env]\n{big} = 1\n"), None),
            (
                format!("[env.{big}]\nA = [{}]\n", "1,".repeat(50_000)),
                None,
            ),
            (format!("[env]\nA = \"{big}\\u0000\"\n"), None),
            (format!("[env.{big}]\nA = \"x\"\n"), Some("nope")),
            (String::new(), Some(big.as_str())),
        ] {
            let e = with_env(&text, asked).unwrap_err().to_string();
            assert!(e.len() < 1_000, "{} bytes: {}", e.len(), &e[..300]);
        }
        let e = with_env("[env]\nA = \"x\\u0000y\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `env`: \"A\" has a NUL byte"), "{e}");
    }
}
