//! One configuration file for `zs serve`: every option of `zs serve` as a TOML key (its
//! long name with `_` for `-`), `ZS_<KEY>` environment variables over the file, flags over
//! both. The options' own definitions (clap) are the only schema: a file's and an
//! environment's values are checked by the same parsers as flags, and `zs config example`
//! is written from their help and defaults, so neither can drift from `zs serve --help`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, Args, Command, CommandFactory, Subcommand};

/// `zs config`.
#[derive(Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCmd,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Check a file for `zs serve --config`: every unknown key and bad value, with its line.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print a complete file for `zs serve --config`: every setting, its help and default.
    Example,
}

/// Runs `zs config`.
pub fn run(args: ConfigArgs) -> Result<(), String> {
    match args.command {
        ConfigCmd::Check { file } => {
            let text = read(&file)?;
            match check(&text) {
                Ok(n) => {
                    println!("{}: {n} settings, all valid", file.display());
                    Ok(())
                }
                Err(problems) => Err(format!(
                    "{} has {} problem{}:\n{}",
                    file.display(),
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" },
                    problems.join("\n")
                )),
            }
        }
        ConfigCmd::Example => {
            print!("{}", example());
            Ok(())
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `zs serve` command as clap sees it.
fn serve_command() -> Command {
    crate::Cli::command().find_subcommand("serve").cloned().expect("zs has a serve command")
}

/// The options a file or the environment may set: `zs serve`'s visible long options but
/// `--config` itself.
fn settable(serve: &Command) -> impl Iterator<Item = &clap::Arg> {
    serve.get_arguments().filter(|a| {
        let meta = matches!(
            a.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        );
        !meta && !a.is_hide_set() && a.get_long().is_some() && a.get_id() != "config"
    })
}

/// The option a file's key (checked by [`parse`]) sets.
fn arg_of<'a>(serve: &'a Command, key: &str) -> &'a clap::Arg {
    settable(serve).find(|a| key_of(a) == key).expect("parse knows the keys")
}

/// The key of an option in a file (`max_connections` for `--max-connections`).
fn key_of(arg: &clap::Arg) -> String {
    arg.get_long().unwrap_or_default().replace('-', "_")
}

/// The environment variable of an option (`ZS_MAX_CONNECTIONS`).
fn env_of(arg: &clap::Arg) -> String {
    format!("ZS_{}", key_of(arg).to_uppercase())
}

/// Whether an option is a switch (present or absent) rather than taking a value.
fn is_switch(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue)
}

/// Whether an option may be given several times.
fn is_list(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some()
}

/// The command line `zs serve` runs with: `argv` as given, plus each setting of the
/// environment and of the config file (`--config FILE`, or `ZS_CONFIG`) that no flag
/// gave, the environment's first. Not `zs serve`: `argv` unchanged.
pub fn serve_argv(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    if argv.get(1).and_then(|a| a.to_str()) != Some("serve") {
        return Ok(argv);
    }
    // Parsed once as given, to learn what the command line set; a bad command line is
    // left for the real parse to report.
    let Ok(matches) = crate::Cli::command().try_get_matches_from(&argv) else { return Ok(argv) };
    let Some(("serve", given)) = matches.subcommand() else { return Ok(argv) };
    let from_flags = |id: &str| given.value_source(id) == Some(ValueSource::CommandLine);
    let serve = serve_command();
    let mut extra: Vec<OsString> = Vec::new();
    let mut set = Vec::new();
    for arg in settable(&serve) {
        let id = arg.get_id().as_str();
        if from_flags(id) {
            continue;
        }
        if let Ok(value) = std::env::var(env_of(arg)) {
            extra.extend(env_args(arg, &value).map_err(|e| format!("{}: {e}", env_of(arg)))?);
            set.push(id.to_owned());
        }
    }
    let file = given
        .get_one::<PathBuf>("config")
        .cloned()
        .or_else(|| std::env::var_os("ZS_CONFIG").map(PathBuf::from));
    if let Some(path) = file {
        let text = read(&path)?;
        let settings = checked(&text).map_err(|p| format!("{}:\n{}", path.display(), p.join("\n")))?;
        for Setting { key, value, .. } in &settings {
            let arg = arg_of(&serve, key);
            let id = arg.get_id().as_str();
            if from_flags(id) || set.iter().any(|s| s == id) {
                continue;
            }
            extra.extend(value_args(arg, value).map_err(|e| format!("{}: {key}: {e}", path.display()))?);
        }
    }
    let mut out = argv;
    out.extend(extra);
    Ok(out)
}

/// Each setting's values as `zs serve` would run with this process's command line, the
/// environment and the config file as they are now (what a reload compares), and the
/// options they make.
pub fn settings_now(
) -> Result<(std::collections::BTreeMap<String, Vec<String>>, crate::serve::ServeArgs), String> {
    let argv = serve_argv(std::env::args_os().collect())?;
    let matches = crate::Cli::command().try_get_matches_from(argv).map_err(|e| e.to_string())?;
    let Some(("serve", serve_matches)) = matches.subcommand() else { return Err("not zs serve".into()) };
    let serve = serve_command();
    let values = settable(&serve)
        .map(|arg| {
            let values = serve_matches
                .get_raw(arg.get_id().as_str())
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            (key_of(arg), values)
        })
        .collect();
    let args = clap::FromArgMatches::from_arg_matches(serve_matches).map_err(|e| e.to_string())?;
    Ok((values, args))
}

/// A setting's value from the file: the flags it stands for.
fn value_args(arg: &clap::Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let flag = format!("--{}", arg.get_long().unwrap_or_default());
    let one = |v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(format!("takes a value, not {}", other.type_str())),
        }
    };
    match value {
        toml::Value::Boolean(b) if is_switch(arg) => Ok(if *b { vec![flag.into()] } else { Vec::new() }),
        _ if is_switch(arg) => Err("takes true or false".into()),
        toml::Value::Array(items) if is_list(arg) => {
            items.iter().map(|v| one(v).map(|s| format!("{flag}={s}").into())).collect()
        }
        toml::Value::Array(_) => Err("takes one value, not a list".into()),
        v => Ok(vec![format!("{flag}={}", one(v)?).into()]),
    }
}

/// A setting's value from the environment: the flags it stands for (a list's items
/// separated by commas).
fn env_args(arg: &clap::Arg, value: &str) -> Result<Vec<OsString>, String> {
    let flag = format!("--{}", arg.get_long().unwrap_or_default());
    if is_switch(arg) {
        return match value {
            "1" | "true" | "yes" => Ok(vec![flag.into()]),
            "" | "0" | "false" | "no" => Ok(Vec::new()),
            _ => Err(format!("`{value}`: give true or false")),
        };
    }
    if is_list(arg) {
        return Ok(value.split(',').map(|v| format!("{flag}={}", v.trim()).into()).collect());
    }
    Ok(vec![format!("{flag}={value}").into()])
}

/// A setting of a file.
struct Setting {
    key: String,
    value: toml::Value,
    /// Where it is set.
    line: usize,
}

/// The settings of a file, each with its line; or every problem found, one line each
/// (`line N: ...`): bad TOML, unknown keys, tables where values go.
fn parse(text: &str) -> Result<Vec<Setting>, Vec<String>> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let table: toml::Spanned<toml::Table> = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| format!("line {}: ", line_of(s.start))).unwrap_or_default();
        vec![format!("{at}{}", e.message())]
    })?;
    let serve = serve_command();
    let keys: Vec<String> = settable(&serve).map(key_of).collect();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in table.into_inner() {
        // toml's table loses spans: find the key's line in the text.
        let line = find_key_line(text, &key);
        if !keys.contains(&key) {
            let near = keys.iter().find(|k| strsim_close(k, &key));
            let hint = near.map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
            problems.push(format!("line {line}: unknown key `{key}`{hint}"));
            continue;
        }
        out.push(Setting { key, value, line });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The line where `key` is set (1 if it cannot be found).
fn find_key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let bare = l.strip_prefix(key).or_else(|| l.strip_prefix(&format!("\"{key}\"")));
            let table = l.strip_prefix('[').and_then(|t| t.strip_prefix(key));
            bare.is_some_and(|rest| rest.trim_start().starts_with('='))
                || table.is_some_and(|rest| rest.trim_start().starts_with(']'))
        })
        .map_or(1, |i| i + 1)
}

/// Whether two keys differ by little (a typo): one edit, or the same words reordered.
fn strsim_close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Levenshtein distance at most 2, by the standard dynamic programme.
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}

/// Checks a file: the number of settings, or every problem with its line.
pub fn check(text: &str) -> Result<usize, Vec<String>> {
    checked(text).map(|settings| settings.len())
}

/// A file's settings once they all check, or every problem with its line.
fn checked(text: &str) -> Result<Vec<Setting>, Vec<String>> {
    let settings = parse(text)?;
    let serve = serve_command();
    let mut problems = Vec::new();
    for Setting { key, value, line } in &settings {
        let arg = arg_of(&serve, key);
        let args = match value_args(arg, value) {
            Ok(args) => args,
            Err(e) => {
                problems.push(format!("line {line}: `{key}` {e}"));
                continue;
            }
        };
        // The same parser as the flag's: `zs serve --key=value` alone.
        let mut argv: Vec<OsString> = vec!["zs".into(), "serve".into()];
        argv.extend(args);
        if let Err(e) = crate::Cli::command().try_get_matches_from(argv) {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            problems.push(format!("line {line}: `{key}`: {first}"));
        }
    }
    // Settings that cannot go together (--plaintext with --tls, say).
    if problems.is_empty() {
        let mut argv: Vec<OsString> = vec!["zs".into(), "serve".into()];
        for Setting { key, value, .. } in &settings {
            let arg = arg_of(&serve, key);
            argv.extend(value_args(arg, value).unwrap_or_default());
        }
        if let Err(e) = crate::Cli::command().try_get_matches_from(argv) {
            let text = e.to_string();
            problems.push(text.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned());
        }
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

/// A complete file: every setting with its help as a comment and its default as value
/// (commented out where there is none).
pub fn example() -> String {
    let serve = serve_command();
    let mut out = String::from(
        "# zs serve --config zserver.toml\n\
         # Every setting of `zs serve`; ZS_<KEY> environment variables override this file,\n\
         # and flags override both. `zs config check FILE` checks a file.\n",
    );
    for arg in settable(&serve) {
        out.push('\n');
        let help = arg.get_long_help().or(arg.get_help()).map(ToString::to_string).unwrap_or_default();
        for line in wrap(&help, 88) {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&format!("# (environment: {})\n", env_of(arg)));
        let key = key_of(arg);
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        if is_switch(arg) {
            out.push_str(&format!("{key} = false\n"));
        } else if defaults.is_empty() {
            out.push_str(&format!("# {key} = {}\n", if is_list(arg) { "[]" } else { "\"\"" }));
        } else if is_list(arg) {
            let items: Vec<String> = defaults.iter().map(|d| toml_value(d)).collect();
            out.push_str(&format!("{key} = [{}]\n", items.join(", ")));
        } else {
            out.push_str(&format!("{key} = {}\n", toml_value(&defaults[0])));
        }
    }
    out
}

/// A default as TOML: a number bare, anything else quoted.
fn toml_value(text: &str) -> String {
    if text.parse::<i64>().is_ok() || (text.parse::<f64>().is_ok_and(f64::is_finite) && text.contains('.')) {
        text.to_owned()
    } else {
        toml::Value::String(text.to_owned()).to_string()
    }
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_checks_clean_and_every_error_kind_has_its_line() {
        let example = example();
        assert!(example.contains("max_connections = 100000"), "{example}");
        assert!(example.contains("listen = [\"127.0.0.1:9818\"]"), "{example}");
        let n = check(&example).unwrap_or_else(|p| panic!("the example has problems: {p:?}"));
        assert!(n >= 12, "{n} settings");
        // Bad TOML.
        let e = check("max_connections = 5\nlisten = [\n").unwrap_err();
        assert!(e[0].starts_with("line 3") || e[0].starts_with("line 2"), "{e:?}");
        // An unknown key, with a suggestion.
        let e = check("max_connections = 5\nmax_conections = 6\n").unwrap_err();
        assert_eq!(
            e,
            vec!["line 2: unknown key `max_conections` (did you mean `max_connections`?)".to_owned()]
        );
        // A value of the wrong kind, and one its parser refuses.
        let e = check("\n\nmax_connections = \"many\"\nplaintext = 3\nlisten = [[1]]\nidle_timeout = -1\n")
            .unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e.iter().any(|p| p.starts_with("line 3: `max_connections`: invalid value 'many'")), "{e:?}");
        assert!(e.iter().any(|p| p.starts_with("line 4: `plaintext` takes true or false")), "{e:?}");
        assert!(e.iter().any(|p| p.starts_with("line 5: `listen` takes a value, not array")), "{e:?}");
        assert!(e.iter().any(|p| p.starts_with("line 6: `idle_timeout`") && p.contains("seconds")), "{e:?}");
        // A table where a value goes.
        let e = check("[listen]\na = 1\n").unwrap_err();
        assert!(e[0].starts_with("line 1: `listen` takes a value, not table"), "{e:?}");
        // A name the option does not know.
        let e = check("services = [\"accounts\", \"acounts\"]\n").unwrap_err();
        assert!(e[0].starts_with("line 1: `services`: invalid value 'acounts'"), "{e:?}");
        // Settings that cannot go together.
        let e = check("plaintext = true\ntls = true\n").unwrap_err();
        assert!(e[0].contains("cannot be used with"), "{e:?}");
    }
}
