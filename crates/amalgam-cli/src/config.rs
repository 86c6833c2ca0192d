//! The operator's configuration file (`amalgam --config FILE`, default `./amalgam.toml` when
//! present) and the precedence of settings: flag > environment (`AMALGAM_<SECTION>_<KEY>`) >
//! file > default (`protocol-spec/operations.md` §1).
//!
//! The file is decoded strictly: an unknown section or key, or a value of the wrong type, is
//! refused naming it, so a misspelt `aggregater = …` cannot silently fall back to a default.
//! Secrets are never values: a key setting names a file, and a value that looks like key
//! material (hex, PEM, or a long base64 run) is refused wherever it comes from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Failure;

/// Largest configuration file read (it holds a handful of paths).
const MAX_FILE: u64 = 64 << 10;

/// Default file, read only when it exists in the working directory.
pub const DEFAULT_FILE: &str = "amalgam.toml";

/// Every section and the keys it may hold. A key naming a secret (`key`) must be a path.
pub const SCHEMA: &[(&str, &[&str])] = &[
    (
        "round",
        &[
            "manifest",
            "key",
            "aggregator",
            "insecure",
            "timeout",
            "interval",
            "format",
        ],
    ),
    (
        "audit",
        &[
            "manifest",
            "key",
            "aggregator",
            "ledger",
            "state",
            "anchors",
            "record_ledger",
            "format",
        ],
    ),
    (
        "report",
        &[
            "manifest",
            "key",
            "aggregator",
            "ledger",
            "state",
            "anchors",
            "format",
        ],
    ),
    (
        "doctor",
        &["manifest", "key", "state", "aggregator", "format"],
    ),
];

/// Keys whose values are secret files: only a path is accepted.
const SECRET_KEYS: &[&str] = &["key"];

/// The decoded file: section → key → value, every key checked against [`SCHEMA`].
#[derive(Debug, Default, Clone)]
pub struct Config {
    source: Option<PathBuf>,
    sections: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

/// Where a setting's value came from (shown by `--format json` outputs that echo settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Flag,
    /// `AMALGAM_<SECTION>_<KEY>`.
    Env,
    /// The configuration file.
    File,
}

impl Config {
    /// Loads `explicit`, or (when `auto`) `./amalgam.toml` if it exists, or nothing. The file
    /// in effect is named on stderr. The audit commands pass `auto = false`: a file left in the
    /// working directory must not choose what an auditor audits.
    pub fn load(explicit: Option<&Path>, auto: bool) -> Result<Self, Failure> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None if !auto => return Ok(Self::default()),
            None => {
                let p = PathBuf::from(DEFAULT_FILE);
                if !p.exists() {
                    return Ok(Self::default());
                }
                p
            }
        };
        let bytes = read_bounded(&path, MAX_FILE)
            .map_err(|e| Failure::usage(format!("config {}: {e}", path.display())))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Failure::usage(format!("config {}: not UTF-8", path.display())))?;
        eprintln!("amalgam: config {}", path.display());
        Self::parse(&text, Some(path))
    }

    /// Decodes `text` strictly against [`SCHEMA`].
    pub fn parse(text: &str, source: Option<PathBuf>) -> Result<Self, Failure> {
        let name = source.as_ref().map_or_else(
            || "config".to_string(),
            |p| format!("config {}", p.display()),
        );
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Failure::usage(format!("{name}: {}", e.message())))?;
        let mut sections = BTreeMap::new();
        for (section, value) in table {
            let Some((_, keys)) = SCHEMA.iter().find(|(s, _)| *s == section) else {
                return Err(Failure::usage(format!(
                    "{name}: unknown section [{section}] (known: {})",
                    SCHEMA
                        .iter()
                        .map(|(s, _)| *s)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            let toml::Value::Table(entries) = value else {
                return Err(Failure::usage(format!(
                    "{name}: `{section}` must be a section ([{section}])"
                )));
            };
            let mut out = BTreeMap::new();
            for (key, v) in entries {
                if !keys.contains(&key.as_str()) {
                    return Err(Failure::usage(format!(
                        "{name}: unknown key `{key}` in [{section}] (known: {})",
                        keys.join(", ")
                    )));
                }
                if SECRET_KEYS.contains(&key.as_str()) {
                    let toml::Value::String(s) = &v else {
                        return Err(Failure::usage(format!(
                            "{name}: [{section}] {key} must be a file path"
                        )));
                    };
                    refuse_inline_secret(&format!("{name}: [{section}] {key}"), s)?;
                }
                out.insert(key, v);
            }
            sections.insert(section, out);
        }
        Ok(Self { source, sections })
    }

    /// The settings of `section` for one command.
    pub fn section(&self, section: &'static str) -> Section<'_> {
        Section {
            config: self,
            section,
        }
    }
}

/// A secret setting that is not a path: 32+ hex digits, PEM armour, or a long run of base64.
pub fn refuse_inline_secret(what: &str, value: &str) -> Result<(), Failure> {
    let v = value.trim();
    // Hex, also as `0x…` or with `:`/`-`/space separators between bytes.
    let bare: String = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .unwrap_or(v)
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | ' '))
        .collect();
    let hex_run = bare.len() >= 32 && bare.chars().all(|c| c.is_ascii_hexdigit());
    let pem = v.contains("-----BEGIN") || v.contains('\n');
    // Standard and URL-safe base64. A path may hold `/` and `-` too, so a value starting like
    // a path (`/`, `./`, `~`) is taken for one; base64 rarely starts with `/` (1 in 64).
    let pathlike = v.starts_with('/') || v.starts_with("./") || v.starts_with('~');
    let b64_run = v.len() >= 40
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-'))
        && !v.contains('.')
        && !pathlike;
    if hex_run || pem || b64_run {
        return Err(Failure::usage(format!(
            "{what} looks like an inline key: secrets are given as file paths, never as values"
        )));
    }
    Ok(())
}

/// One command's view of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    config: &'a Config,
    section: &'static str,
}

/// At most `limit` bytes of `path` (a FIFO or a device is not trusted to report its size):
/// more is an error.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("more than the {limit} bytes it may hold"));
    }
    Ok(bytes)
}

/// The environment variable of a setting: `AMALGAM_<SECTION>_<KEY>` upper-cased.
pub fn env_name(section: &str, key: &str) -> String {
    format!("AMALGAM_{}_{}", section, key).to_uppercase()
}

impl Section<'_> {
    fn file_value(&self, key: &str) -> Option<&toml::Value> {
        self.config
            .sections
            .get(self.section)
            .and_then(|s| s.get(key))
    }

    fn where_(&self, key: &str, origin: Origin) -> String {
        match origin {
            Origin::Flag => format!("--{}", key.replace('_', "-")),
            Origin::Env => env_name(self.section, key),
            Origin::File => format!(
                "[{}] {key} in {}",
                self.section,
                self.config
                    .source
                    .as_ref()
                    .map_or_else(|| "config".into(), |p| p.display().to_string())
            ),
        }
    }

    /// A text setting: flag > environment > file.
    pub fn string(&self, key: &str, flag: Option<&str>) -> Result<Option<String>, Failure> {
        Ok(self.lookup(key, flag)?.map(|(v, _)| v))
    }

    /// A text setting and where it came from.
    fn lookup(&self, key: &str, flag: Option<&str>) -> Result<Option<(String, Origin)>, Failure> {
        debug_assert!(
            SCHEMA
                .iter()
                .any(|(s, keys)| *s == self.section && keys.contains(&key)),
            "{key} is not in the schema of [{}]",
            self.section
        );
        let (value, origin) = if let Some(f) = flag {
            (f.to_string(), Origin::Flag)
        } else if let Some(e) = std::env::var_os(env_name(self.section, key)) {
            let e = e.into_string().map_err(|_| {
                Failure::usage(format!("{} is not UTF-8", env_name(self.section, key)))
            })?;
            (e, Origin::Env)
        } else {
            match self.file_value(key) {
                None => return Ok(None),
                Some(toml::Value::String(s)) => (s.clone(), Origin::File),
                Some(_) => {
                    return Err(Failure::usage(format!(
                        "{} must be a string",
                        self.where_(key, Origin::File)
                    )));
                }
            }
        };
        if SECRET_KEYS.contains(&key) {
            refuse_inline_secret(&self.where_(key, origin), &value)?;
        }
        Ok(Some((value, origin)))
    }

    /// A path setting.
    pub fn path(&self, key: &str, flag: Option<&Path>) -> Result<Option<PathBuf>, Failure> {
        let flag = match flag {
            Some(p) => Some(
                p.to_str()
                    .ok_or_else(|| Failure::usage(format!("--{key}: path is not UTF-8")))?,
            ),
            None => None,
        };
        // A relative path in the file means relative to the file, not to wherever the command
        // happens to run.
        Ok(self.lookup(key, flag)?.map(|(v, origin)| {
            let p = PathBuf::from(v);
            match (origin, &self.config.source) {
                (Origin::File, Some(src)) if p.is_relative() => {
                    src.parent().map_or_else(|| p.clone(), |dir| dir.join(&p))
                }
                _ => p,
            }
        }))
    }

    /// A required path setting, naming every way to give it when absent.
    pub fn require_path(&self, key: &str, flag: Option<&Path>) -> Result<PathBuf, Failure> {
        self.path(key, flag)?.ok_or_else(|| self.missing(key))
    }

    /// A required text setting.
    pub fn require_string(&self, key: &str, flag: Option<&str>) -> Result<String, Failure> {
        self.string(key, flag)?.ok_or_else(|| self.missing(key))
    }

    fn missing(&self, key: &str) -> Failure {
        Failure::usage(format!(
            "--{} is required (or {}, or `{key}` in [{}] of the config file)",
            key.replace('_', "-"),
            env_name(self.section, key),
            self.section
        ))
    }

    /// A non-negative integer setting.
    pub fn u64(&self, key: &str, flag: Option<u64>) -> Result<Option<u64>, Failure> {
        if let Some(f) = flag {
            return Ok(Some(f));
        }
        if let Some(e) = std::env::var_os(env_name(self.section, key)) {
            let text = e.to_string_lossy();
            return text.trim().parse().map(Some).map_err(|_| {
                Failure::usage(format!(
                    "{} must be a non-negative integer, got {text:?}",
                    env_name(self.section, key)
                ))
            });
        }
        match self.file_value(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(_) => Err(Failure::usage(format!(
                "{} must be a non-negative integer",
                self.where_(key, Origin::File)
            ))),
        }
    }

    /// A switch: the flag when set, else environment (`1`/`true`/`0`/`false`), else file.
    pub fn bool(&self, key: &str, flag: bool) -> Result<bool, Failure> {
        if flag {
            return Ok(true);
        }
        if let Some(e) = std::env::var_os(env_name(self.section, key)) {
            return match e.to_string_lossy().trim() {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                other => Err(Failure::usage(format!(
                    "{} must be true/false/1/0, got {other:?}",
                    env_name(self.section, key)
                ))),
            };
        }
        match self.file_value(key) {
            None => Ok(false),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(_) => Err(Failure::usage(format!(
                "{} must be true or false",
                self.where_(key, Origin::File)
            ))),
        }
    }

    /// The output format: `--format`, else environment, else file, else text.
    pub fn format(&self, flag: Option<Format>) -> Result<Format, Failure> {
        if let Some(f) = flag {
            return Ok(f);
        }
        match self.string("format", None)? {
            None => Ok(Format::Text),
            Some(s) => match s.as_str() {
                "text" => Ok(Format::Text),
                "json" => Ok(Format::Json),
                other => Err(Failure::usage(format!(
                    "format must be text or json, got {other:?}"
                ))),
            },
        }
    }
}

/// How a read command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::failed(e.to_string()))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_keys_and_sections_are_refused_by_name() {
        let e = Config::parse("[round]\naggregater = \"x\"\n", None).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message.contains("unknown key `aggregater` in [round]"),
            "{}",
            e.message
        );
        let e = Config::parse("[rounds]\n", None).unwrap_err();
        assert!(
            e.message.contains("unknown section [rounds]"),
            "{}",
            e.message
        );
        let e = Config::parse("manifest = \"m\"\n", None).unwrap_err();
        assert!(
            e.message.contains("unknown section [manifest]"),
            "{}",
            e.message
        );
        let e = Config::parse("[round]\ntimeout = \"ten\"\n", None).unwrap();
        let err = e.section("round").u64("timeout", None).unwrap_err();
        assert!(
            err.message.contains("non-negative integer"),
            "{}",
            err.message
        );
    }

    #[test]
    fn inline_keys_are_refused_paths_accepted() {
        let hex = "ab".repeat(32);
        let e = Config::parse(&format!("[round]\nkey = \"{hex}\"\n"), None).unwrap_err();
        assert!(
            e.message.contains("looks like an inline key"),
            "{}",
            e.message
        );
        let pem = "[doctor]\nkey = \"\"\"-----BEGIN PRIVATE KEY-----\nMC4CAQ\n\"\"\"\n";
        assert!(Config::parse(pem, None).is_err());
        let b64 = "[doctor]\nkey = \"MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\"\n";
        assert!(Config::parse(b64, None).is_err());
        // '/' inside standard base64, URL-safe '-'/'_', 0x-hex and colon-separated hex.
        for v in [
            "MC4CAQAwBQYDK2VwBCIEIJ/DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF",
            "MC4CAQAwBQYDK2VwBCIEIJ-DYvh6SEqVTm50DFtMDoQikTmiCq_rVv9mWG9qfSnF",
            &format!("0x{hex}"),
            &["ab"; 32].join(":"),
        ] {
            let text = format!("[doctor]\nkey = \"{v}\"\n");
            assert!(Config::parse(&text, None).is_err(), "{v}");
        }
        // Paths with '/' and '-' but no '.' are still paths.
        assert!(
            Config::parse(
                "[doctor]\nkey = \"/srv/amalgam/site-a/keys/identity_key_file\"\n",
                None
            )
            .is_ok()
        );
        let ok = Config::parse(
            "[round]\nkey = \"/etc/amalgam/site-a/identity.key\"\n",
            None,
        )
        .unwrap();
        assert_eq!(
            ok.section("round").string("key", None).unwrap().as_deref(),
            Some("/etc/amalgam/site-a/identity.key")
        );
        // A flag is held to the same rule.
        assert!(ok.section("round").string("key", Some(&hex)).is_err());
    }

    #[test]
    fn flag_beats_file_and_absent_is_none() {
        let c = Config::parse("[report]\nmanifest = \"file.manifest\"\n", None).unwrap();
        let s = c.section("report");
        assert_eq!(
            s.path("manifest", Some(Path::new("flag.manifest")))
                .unwrap(),
            Some(PathBuf::from("flag.manifest"))
        );
        assert_eq!(
            s.path("manifest", None).unwrap(),
            Some(PathBuf::from("file.manifest"))
        );
        assert_eq!(s.path("ledger", None).unwrap(), None);
        let e = s.require_path("ledger", None).unwrap_err();
        assert!(e.message.contains("AMALGAM_REPORT_LEDGER"), "{}", e.message);
    }
}
