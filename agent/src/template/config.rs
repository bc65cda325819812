//! consul-template's configuration: `-template "SRC:DEST[:COMMAND]"`, `-wait MIN[:MAX]`, and
//! its config files (HCL or JSON, a file or a directory of them) for the keys Muster
//! implements: `consul { address, token }`, `wait`, `max_stale`, `log_level` and `template`
//! blocks. Any other key is reported once, by name, as a warning, never silently dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value as Json};

use super::engine::Options;

/// consul-template's default `command_timeout`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The quiescence window: render `min` after the last change, at most `max` after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wait {
    pub min: Duration,
    pub max: Duration,
}

impl Wait {
    /// `MIN[:MAX]`; a lone `MIN` gives `MAX` = 4 × `MIN`, as consul-template does.
    pub fn parse(s: &str) -> Result<Wait, String> {
        let (min, max) = match s.split_once(':') {
            Some((a, b)) => (dur(a)?, Some(dur(b)?)),
            None => (dur(s)?, None),
        };
        let max = max.unwrap_or(min * 4);
        if max < min {
            return Err(format!(
                "wait: max ({max:?}) must be larger than min ({min:?})"
            ));
        }
        Ok(Wait { min, max })
    }
}

fn dur(s: &str) -> Result<Duration, String> {
    muster_server::go_duration(s.trim()).ok_or_else(|| format!("invalid duration {s:?}"))
}

/// One template: where it comes from, where it goes, and what runs after.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TemplateConfig {
    pub source: Option<PathBuf>,
    /// The template text itself, instead of a `source` file.
    pub contents: Option<String>,
    pub destination: PathBuf,
    pub command: Option<String>,
    pub command_timeout: Option<Duration>,
    /// The file's mode; else the existing file's, else 0644.
    pub perms: Option<u32>,
    /// Keep the previous file as `DEST.bak`.
    pub backup: bool,
    pub wait: Option<Wait>,
    /// Validates the candidate before it replaces the file; `{{.candidate}}` is its path.
    pub check_command: Option<String>,
    pub options: Options,
}

impl TemplateConfig {
    /// `SRC:DEST[:COMMAND]`; the command keeps any further colons.
    pub fn from_flag(s: &str) -> Result<TemplateConfig, String> {
        let mut parts = s.splitn(3, ':');
        let src = parts.next().unwrap_or("");
        let dest = parts.next().unwrap_or("");
        if src.is_empty() || dest.is_empty() {
            return Err(format!(
                "-template {s:?}: expected SOURCE:DESTINATION[:COMMAND]"
            ));
        }
        Ok(TemplateConfig {
            source: Some(src.into()),
            destination: dest.into(),
            command: parts.next().filter(|c| !c.is_empty()).map(str::to_string),
            ..TemplateConfig::default()
        })
    }

    /// The name errors and checks use: the source file, else the destination.
    pub fn name(&self) -> String {
        self.source
            .as_ref()
            .unwrap_or(&self.destination)
            .display()
            .to_string()
    }
}

/// Everything the runner needs, from flags and config files.
#[derive(Debug, Clone, Default)]
pub struct RunnerConfig {
    /// `consul { address }`.
    pub address: Option<String>,
    /// `consul { token }`.
    pub token: Option<String>,
    pub wait: Option<Wait>,
    /// Reads may be served by any server this far behind the leader.
    pub max_stale: Option<Duration>,
    pub log_level: Option<String>,
    pub templates: Vec<TemplateConfig>,
    /// Keys read but not implemented, each named once.
    pub warnings: Vec<String>,
}

impl RunnerConfig {
    /// Reads a config file, or every `.hcl` and `.json` file of a directory in name order,
    /// into this config (later files add templates and override settings).
    pub fn load(&mut self, path: &Path) -> Result<(), String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_dir() {
            return self.load_file(path);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("hcl" | "json")))
            .collect();
        files.sort();
        for f in files {
            self.load_file(&f)?;
        }
        Ok(())
    }

    fn load_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: Json = if path.extension().and_then(|e| e.to_str()) == Some("json") {
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            hcl::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        };
        self.apply(&json)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Applies one parsed file.
    pub fn apply(&mut self, json: &Json) -> Result<(), String> {
        let top = json
            .as_object()
            .ok_or("expected an object at the top level")?;
        for (k, v) in top {
            match k.as_str() {
                "consul" => {
                    for block in blocks(v) {
                        for (ck, cv) in block {
                            match ck.as_str() {
                                "address" => self.address = Some(text(ck, cv)?),
                                "token" => self.token = Some(text(ck, cv)?),
                                other => self.warn(&format!("consul.{other}")),
                            }
                        }
                    }
                }
                "wait" => self.wait = Some(wait(v)?),
                "max_stale" => self.max_stale = Some(dur(&text(k, v)?)?),
                "log_level" => self.log_level = Some(text(k, v)?),
                "template" => {
                    for block in blocks(v) {
                        let t = self.template(block)?;
                        self.templates.push(t);
                    }
                }
                other => self.warn(other),
            }
        }
        Ok(())
    }

    fn warn(&mut self, key: &str) {
        let w = format!("config key {key:?} is not supported by muster template and is ignored");
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    fn template(&mut self, block: &Map<String, Json>) -> Result<TemplateConfig, String> {
        let mut t = TemplateConfig::default();
        for (k, v) in block {
            match k.as_str() {
                "source" => t.source = Some(text(k, v)?.into()),
                "destination" => t.destination = text(k, v)?.into(),
                "contents" => t.contents = Some(text(k, v)?),
                "command" => t.command = Some(command(v)?),
                "command_timeout" => t.command_timeout = Some(dur(&text(k, v)?)?),
                "perms" => t.perms = Some(perms(v)?),
                "backup" => t.backup = boolean(k, v)?,
                "wait" => t.wait = Some(wait(v)?),
                "left_delimiter" => t.options.left_delimiter = Some(text(k, v)?),
                "right_delimiter" => t.options.right_delimiter = Some(text(k, v)?),
                "error_on_missing_key" => t.options.error_on_missing_key = boolean(k, v)?,
                "min_instances" => {
                    t.options.min_instances = v
                        .as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or("min_instances: expected a non-negative integer")?
                }
                "check_command" => t.check_command = Some(command(v)?),
                other => self.warn(&format!("template.{other}")),
            }
        }
        if t.destination.as_os_str().is_empty() {
            return Err("template: missing destination".into());
        }
        match (&t.source, &t.contents) {
            (None, None) => Err(format!(
                "template for {}: one of source or contents is required",
                t.destination.display()
            )),
            (Some(_), Some(_)) => Err(format!(
                "template for {}: source and contents are mutually exclusive",
                t.destination.display()
            )),
            _ => Ok(t),
        }
    }
}

/// The agent's own `template` key (one block or several): each parsed, its template read and
/// parsed now, so a broken one stops the agent's start naming the file, line and column.
/// Keys Muster does not implement are warnings, as in `muster template`.
pub fn agent_blocks(
    out: &mut Vec<TemplateConfig>,
    v: &Json,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let mut cfg = RunnerConfig::default();
    cfg.apply(&serde_json::json!({ "template": v }))?;
    for t in &cfg.templates {
        let brain = std::sync::Arc::new(std::sync::Mutex::new(super::brain::Brain::default()));
        super::engine::Engine::new(
            &t.name(),
            &super::runner::load_source(t)?,
            &t.options,
            brain,
        )?;
    }
    warnings.extend(cfg.warnings);
    out.extend(cfg.templates);
    Ok(())
}

/// A block given once or several times (HCL repeats it, JSON gives an object or a list).
fn blocks(v: &Json) -> Vec<&Map<String, Json>> {
    match v {
        Json::Object(m) => vec![m],
        Json::Array(a) => a.iter().flat_map(blocks).collect(),
        _ => Vec::new(),
    }
}

fn text(k: &str, v: &Json) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{k}: expected a string"))
}

fn boolean(k: &str, v: &Json) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{k}: expected true or false"))
}

/// A command as a string, or a list of arguments joined (consul-template runs both in a
/// shell when a string).
fn command(v: &Json) -> Result<String, String> {
    match v {
        Json::String(s) => Ok(s.clone()),
        Json::Array(a) => Ok(a
            .iter()
            .map(|x| x.as_str().map(sh_quote).ok_or("command: expected strings"))
            .collect::<Result<Vec<_>, _>>()?
            .join(" ")),
        _ => Err("command: expected a string or a list of strings".into()),
    }
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `wait = "5s:10s"` or `wait { min = "5s" max = "10s" }`.
fn wait(v: &Json) -> Result<Wait, String> {
    if let Some(s) = v.as_str() {
        return Wait::parse(s);
    }
    let b = blocks(v);
    let b = b.first().ok_or("wait: expected \"MIN:MAX\" or a block")?;
    let min = b.get("min").map(|m| text("min", m)).transpose()?;
    let max = b.get("max").map(|m| text("max", m)).transpose()?;
    match (min, max) {
        (Some(min), Some(max)) => Wait::parse(&format!("{min}:{max}")),
        (Some(min), None) => Wait::parse(&min),
        _ => Err("wait: min is required".into()),
    }
}

/// `perms = "0640"` (octal text), or a number whose digits are octal (`perms = 0640`, as
/// an operator writes it) or else its value.
fn perms(v: &Json) -> Result<u32, String> {
    let bad = || format!("perms: {v} is not a file mode");
    let mode = match v {
        Json::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| bad())?,
        Json::Number(n) => {
            let n = n.as_u64().ok_or_else(bad)?;
            let digits = n.to_string();
            if digits.chars().all(|c| c < '8') {
                u32::from_str_radix(&digits, 8).map_err(|_| bad())?
            } else {
                u32::try_from(n).map_err(|_| bad())?
            }
        }
        _ => return Err(bad()),
    };
    if mode > 0o7777 {
        return Err(bad());
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_flag() {
        let t = TemplateConfig::from_flag("in.ctmpl:/etc/out:systemctl reload x:y").expect("ok");
        assert_eq!(t.source.as_deref(), Some(Path::new("in.ctmpl")));
        assert_eq!(t.destination, Path::new("/etc/out"));
        assert_eq!(t.command.as_deref(), Some("systemctl reload x:y"));
        assert!(TemplateConfig::from_flag("only").is_err());
    }

    #[test]
    fn wait_defaults_max_to_four_times_min() {
        let w = Wait::parse("2s").expect("ok");
        assert_eq!(
            (w.min, w.max),
            (Duration::from_secs(2), Duration::from_secs(8))
        );
        assert!(Wait::parse("5s:1s").is_err());
    }

    #[test]
    fn hcl_config_with_unknown_keys_warned() {
        let hcl = r#"
            consul {
              address = "127.0.0.1:8500"
              retry { enabled = true }
            }
            wait {
              min = "1s"
              max = "3s"
            }
            max_stale = "10m"
            vault { address = "x" }
            template {
              source      = "a.ctmpl"
              destination = "/tmp/a"
              perms       = 0640
              backup      = true
              min_instances = 2
              command     = ["nginx", "-s", "reload"]
            }
            template {
              contents    = "{{ key \"x\" }}"
              destination = "/tmp/b"
              left_delimiter = "[["
              sandbox_path = "/x"
            }
        "#;
        let json: Json = hcl::from_str(hcl).expect("hcl");
        let mut c = RunnerConfig::default();
        c.apply(&json).expect("apply");
        assert_eq!(c.address.as_deref(), Some("127.0.0.1:8500"));
        assert_eq!(c.wait.map(|w| w.max), Some(Duration::from_secs(3)));
        assert_eq!(c.templates.len(), 2);
        assert_eq!(c.templates[0].perms, Some(0o640));
        assert_eq!(c.templates[0].options.min_instances, 2);
        assert_eq!(c.templates[0].command.as_deref(), Some("nginx -s reload"));
        assert_eq!(c.templates[1].options.left_delimiter.as_deref(), Some("[["));
        let w = c.warnings.join("\n");
        assert!(
            w.contains("\"consul.retry\"") && w.contains("\"vault\""),
            "{w}"
        );
        assert!(w.contains("\"template.sandbox_path\""), "{w}");
    }
}
