//! Entry point for the `config` fuzz target in `tests/fuzz`: a config file's text through
//! the agent's own start-up path. Not an API; hidden from the docs.

use std::path::PathBuf;
use std::sync::OnceLock;

/// Loads `text` as the agent does a `-config-file` (HCL when `hcl`, else JSON), with its
/// service and check definitions, as `muster agent` does before anything binds. The text is
/// written to a file in a temp dir kept for the life of the process, so the very code that
/// reads config files reads it. Returns the number of services and checks defined, or the
/// message the agent would exit with.
pub fn config(text: &[u8], hcl: bool) -> crate::Result<usize> {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("muster-fuzz-")
            .tempdir()
            .expect("create a temp dir for the fuzzed config file")
    });
    let file: PathBuf = dir.path().join(if hcl { "fuzz.hcl" } else { "fuzz.json" });
    std::fs::write(&file, text).expect("write the fuzzed config file");
    let args = [
        "-config-file".to_string(),
        file.display().to_string(),
        "-data-dir".to_string(),
        dir.path().display().to_string(),
    ];
    let parsed = crate::flags::parse(&args, crate::config::AGENT_FLAGS)
        .map_err(|e| crate::Error::Config(e.to_string()))?;
    let (cfg, _warnings) = crate::config::load(&parsed)?;
    Ok(cfg.services.len() + cfg.checks.len())
}
