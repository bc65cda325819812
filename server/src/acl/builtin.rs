//! What the first leader (and a bootstrap) writes: the `global-management` policy, the
//! anonymous token and the `initial_management` token; and the RFC 3339 times tokens carry.

use serde_json::json;

use super::*;
use crate::model::{AclPolicy, AclToken, Command, Consistency, Query, QueryResult};
use crate::{new_uuid, Result, Server};

/// `ms` Unix milliseconds as RFC 3339 in UTC, as Go's `RFC3339Nano` writes it.
pub fn rfc3339(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let frac = if milli == 0 {
        String::new()
    } else {
        format!(".{milli:03}").trim_end_matches('0').to_string()
    };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z")
}

/// Parses an RFC 3339 time (`2030-01-02T03:04:05.5Z`, `+02:00` offsets) to Unix ms.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let rest = s.get(19..)?;
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            let digits = format!("{:0<3}", &r[..end]);
            (digits[..3].parse::<i64>().ok()?, &r[end..])
        }
        None => (0, rest),
    };
    let offset_min = match zone {
        "Z" | "z" => 0,
        z if z.len() == 6 => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (z.get(1..3)?.parse::<i64>().ok()? * 60 + z.get(4..6)?.parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + frac).ok()
}

/// The `global-management` policy.
pub fn management_policy() -> AclPolicy {
    let def = json!({
        "Description": "Builtin Policy that grants unlimited access",
        "Rules": MANAGEMENT_RULES,
    });
    AclPolicy {
        id: MANAGEMENT_POLICY_ID.into(),
        name: MANAGEMENT_POLICY_NAME.into(),
        definition: def.to_string(),
        ..AclPolicy::default()
    }
}

/// A management token (linked to `global-management`), created now.
pub fn management_token(accessor: String, secret: String, description: &str) -> AclToken {
    let def = json!({
        "Description": description,
        "Policies": [{ "ID": MANAGEMENT_POLICY_ID }],
        "Local": false,
        "CreateTime": rfc3339(now_unix_ms()),
    });
    AclToken {
        accessor_id: accessor,
        secret_id: secret,
        definition: def.to_string(),
        ..AclToken::default()
    }
}

/// Writes the `global-management` policy and the anonymous token if they are missing, and
/// the `initial_management` token of `config` if it is set and missing, as the bootstrap
/// token if ACLs were never bootstrapped (Consul's `initializeACLs` on gaining leadership).
pub async fn establish(server: &Server, config: &AclConfig) -> Result<()> {
    let (policies, _) = server
        .read(Consistency::Default, Query::AclPolicies)
        .await?;
    if !matches!(&policies, QueryResult::AclPolicies(l) if l.iter().any(|p| p.id == MANAGEMENT_POLICY_ID))
    {
        server
            .write(Command::AclPolicySet(Box::new(management_policy())))
            .await?;
    }
    let mut wanted = vec![(ANONYMOUS_SECRET.to_string(), None)];
    if let Some(secret) = &config.initial_management {
        wanted.push((secret.clone(), Some("Initial Management Token")));
    }
    for (secret, management) in wanted {
        let q = Query::AclResolve {
            secret: secret.clone(),
        };
        if let (QueryResult::AclResolved(Some(_)), _) = server.read(Consistency::Default, q).await?
        {
            continue;
        }
        let token = match management {
            Some(desc) => {
                // As Consul does, the configured token is the bootstrap when none happened
                // yet: `/v1/acl/bootstrap` must not then hand anyone a second management
                // token. Once bootstrapped, it is an ordinary token write.
                let token = management_token(new_uuid(), secret, desc);
                let boot = Command::AclBootstrap {
                    token: Box::new(token.clone()),
                    reset_index: 0,
                };
                if server.write(boot).await?.success {
                    continue;
                }
                token
            }
            None => AclToken {
                accessor_id: ANONYMOUS_ACCESSOR.into(),
                secret_id: ANONYMOUS_SECRET.into(),
                definition: json!({
                    "Description": "Anonymous Token",
                    "Local": false,
                    "CreateTime": rfc3339(now_unix_ms()),
                })
                .to_string(),
                ..AclToken::default()
            },
        };
        server.write(Command::AclTokenSet(Box::new(token))).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for ms in [
            0,
            1_000,
            951_782_400_123,
            1_780_000_000_500,
            4_102_444_800_000,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms), "{}", rfc3339(ms));
        }
        assert_eq!(rfc3339(951_782_400_120), "2000-02-29T00:00:00.12Z");
        assert_eq!(
            parse_rfc3339("2000-02-29T02:00:00+02:00"),
            Some(951_782_400_000)
        );
        assert_eq!(parse_rfc3339("nope"), None);
    }
}
