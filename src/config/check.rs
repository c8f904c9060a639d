//! What every section's rules need: where the file is (its name, its directory, its text for
//! line numbers), how an error names a key, and the rules shared by all durations and paths.

use super::*;

/// The file being validated.
pub(super) struct Checker<'a> {
    /// Its text, for the line and column of a key.
    pub text: &'a str,
    /// Its name, as errors give it.
    pub name: &'a str,
    /// Its directory, which relative paths are taken from (none for the embedded default).
    pub dir: Option<&'a Path>,
}

impl Checker<'_> {
    /// An error about `key`, at `span` in the file (an empty span at 0: a key that took its
    /// default, named with the file alone).
    pub fn invalid(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        self.at(span, format!("key `{key}`: {message}"))
    }

    /// An error whose `message` names its key itself, at `span` in the file (as
    /// [`Checker::invalid`]).
    pub fn at(&self, span: Range<usize>, message: String) -> ConfigError {
        let (line, column) = if span.is_empty() && span.start == 0 {
            (0, 0)
        } else {
            line_and_column(self.text, span)
        };
        ConfigError::Invalid {
            file: self.name.to_owned(),
            line,
            column,
            message,
        }
    }

    /// An error about `key` that has no span to point at.
    pub fn setting(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Setting(format!("{}: key `{key}`: {message}", self.name))
    }

    /// A duration, checked against the bound every duration has (so that no deadline computed
    /// from one can overflow).
    pub fn duration(&self, d: Spanned<HumanDuration>, key: &str) -> Result<Duration, ConfigError> {
        let span = d.span();
        let value = d.into_inner().0;
        if value > MAX_DURATION {
            let written = self.as_written(&span, value);
            return Err(self.invalid(
                span,
                key,
                format!(
                    "{written} is too long (at most {})",
                    humantime::format_duration(MAX_DURATION)
                ),
            ));
        }
        Ok(value)
    }

    /// A duration that must also be at least `min`, for the reason `why`.
    pub fn at_least(
        &self,
        d: Spanned<HumanDuration>,
        key: &str,
        min: Duration,
        why: &str,
    ) -> Result<Duration, ConfigError> {
        let span = d.span();
        let value = self.duration(d, key)?;
        if value < min {
            let written = self.as_written(&span, value);
            return Err(self.invalid(
                span,
                key,
                format!(
                    "{written} is too short (at least {}: {why})",
                    humantime::format_duration(min)
                ),
            ));
        }
        Ok(value)
    }

    /// A duration as the file wrote it (`"2 days"`), where its span points; without one (a
    /// value from a flag), `value` as humantime prints it.
    fn as_written(&self, span: &std::ops::Range<usize>, value: Duration) -> String {
        match self.text.get(span.clone()).map(str::trim) {
            Some(text) if !text.is_empty() => crate::text::cut(text, 80),
            _ => humantime::format_duration(value).to_string(),
        }
    }

    /// A path from the file: a relative one is taken from the file's directory (`join` keeps
    /// an absolute one as it is).
    pub fn relative(&self, p: Spanned<PathBuf>) -> PathBuf {
        match self.dir {
            Some(dir) => dir.join(p.into_inner()),
            None => p.into_inner(),
        }
    }
}

/// How an error about a path that took its default begins (the key is not in the file).
pub(super) fn its_default(span: &Option<Range<usize>>) -> &'static str {
    if span.is_some() { "" } else { "its default, " }
}
