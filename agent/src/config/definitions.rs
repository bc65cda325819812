//! The service and check definitions of the config files, parsed once, at load, into the
//! typed values the agent runs.

use serde_json::Value;

use super::Config;
use crate::defs::{parse_check, parse_service, script_refusal, CheckDef, Ctx, ServiceDef};
use crate::{Error, Result};

/// Definitions as the files give them: (file, definition), in file order.
#[derive(Default)]
pub(super) struct RawDefs {
    pub(super) services: Vec<(String, Value)>,
    pub(super) checks: Vec<(String, Value)>,
}

/// Parses (and so validates) every definition, refusing script checks unless the config
/// enables them; the parser's warnings are added to `warnings`.
pub(super) fn parse(
    config: &Config,
    raw: RawDefs,
    warnings: &mut Vec<String>,
) -> Result<(Vec<ServiceDef>, Vec<CheckDef>)> {
    let scripts = config.enable_local_script_checks || config.enable_script_checks;
    let refuse = |origin: &str| {
        Error::Definition(format!(
            "{origin}: {}",
            script_refusal("enable_local_script_checks")
        ))
    };
    let mut services = Vec::new();
    let mut checks = Vec::new();
    for (origin, v) in &raw.services {
        let mut ctx = Ctx {
            origin,
            warnings: Vec::new(),
            consul_errors: false,
        };
        let def = parse_service(&mut ctx, v)?;
        if def.checks.iter().any(|c| c.is_script) && !scripts {
            return Err(refuse(origin));
        }
        warnings.extend(ctx.warnings);
        services.push(def);
    }
    for (origin, v) in &raw.checks {
        let mut ctx = Ctx {
            origin,
            warnings: Vec::new(),
            consul_errors: false,
        };
        let def = parse_check(&mut ctx, v, None, None)?;
        if def.is_script && !scripts {
            return Err(refuse(origin));
        }
        warnings.extend(ctx.warnings);
        checks.push(def);
    }
    Ok((services, checks))
}
