//! `PUT /v1/txn`: up to 128 KV, node, service and check operations, applied all or none.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use muster_server::model::{CatalogVerb, Check, Command, KvVerb, Node, TxnOp, TxnResult};
use serde_json::{json, Value};

use crate::body::body;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::json;
use crate::requests::OpIn;
use crate::types::{AgentService, CatalogNode, HealthCheck, KvPair};
use crate::{ApiState, MAX_VALUE_SIZE};

/// Consul's limit on operations per transaction.
const MAX_OPS: usize = 128;
/// Consul's default `limits.txn_max_req_len`: the largest transaction body, 512 KiB.
const TXN_MAX_REQ_LEN: usize = 512 * 1024;

fn kv_verb(v: &str) -> ApiResult<KvVerb> {
    Ok(match v {
        "set" => KvVerb::Set,
        "cas" => KvVerb::Cas,
        "lock" => KvVerb::Lock,
        "unlock" => KvVerb::Unlock,
        "get" => KvVerb::Get,
        "get-tree" => KvVerb::GetTree,
        "check-index" => KvVerb::CheckIndex,
        "check-session" => KvVerb::CheckSession,
        "check-not-exists" => KvVerb::CheckNotExists,
        "delete" => KvVerb::Delete,
        "delete-tree" => KvVerb::DeleteTree,
        "delete-cas" => KvVerb::DeleteCas,
        other => return Err(ApiError::BadRequest(format!("Unknown KV verb {other:?}"))),
    })
}

/// A catalog verb; `cas` and `delete-cas` take the entity's `ModifyIndex`.
fn catalog_verb(kind: &str, v: &str, modify_index: Option<u64>) -> ApiResult<CatalogVerb> {
    let index = || {
        modify_index.ok_or_else(|| {
            ApiError::BadRequest(format!("{kind} verb {v:?} needs the {kind}'s ModifyIndex"))
        })
    };
    Ok(match v {
        "set" => CatalogVerb::Set,
        "get" => CatalogVerb::Get,
        "delete" => CatalogVerb::Delete,
        "cas" => CatalogVerb::Cas(index()?),
        "delete-cas" => CatalogVerb::DeleteCas(index()?),
        other => {
            return Err(ApiError::BadRequest(format!(
                "Unknown {kind} verb {other:?}"
            )))
        }
    })
}

fn op_from(i: usize, o: OpIn, dc: &str) -> ApiResult<TxnOp> {
    let bad = |m: String| ApiError::BadRequest(format!("operation {i}: {m}"));
    match (o.kv, o.node, o.service, o.check) {
        (Some(kv), None, None, None) => {
            let verb = kv_verb(&kv.verb).map_err(|e| bad(e.to_string()))?;
            let key = kv.key.unwrap_or_default();
            if key.is_empty() && !matches!(verb, KvVerb::GetTree | KvVerb::DeleteTree) {
                return Err(bad("Missing key for KV operation".into()));
            }
            let value = match kv.value {
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|e| bad(format!("Value is not valid base64: {e}")))?,
                None => Vec::new(),
            };
            if value.len() > MAX_VALUE_SIZE {
                return Err(ApiError::TooLarge(format!(
                    "operation {i}: Value exceeds {MAX_VALUE_SIZE} byte limit"
                )));
            }
            if matches!(verb, KvVerb::Lock | KvVerb::Unlock | KvVerb::CheckSession)
                && kv.session.as_deref().unwrap_or("").is_empty()
            {
                return Err(bad("Missing session for lock operation".into()));
            }
            Ok(TxnOp::Kv {
                verb,
                key,
                value,
                flags: kv.flags.unwrap_or(0),
                index: kv.index.unwrap_or(0),
                session: kv.session.unwrap_or_default(),
            })
        }
        (None, Some(n), None, None) => {
            let verb = catalog_verb("Node", &n.verb, n.node.modify_index)
                .map_err(|e| bad(e.to_string()))?;
            let node = Node {
                name: n.node.node.unwrap_or_default(),
                id: n.node.id.unwrap_or_default(),
                address: n.node.address.unwrap_or_default(),
                datacenter: dc.to_string(),
                tagged_addresses: n.node.tagged_addresses.unwrap_or_default(),
                meta: n.node.meta.unwrap_or_default(),
                ..Default::default()
            };
            if node.name.is_empty() {
                return Err(bad("Must provide node".into()));
            }
            Ok(TxnOp::Node { verb, node })
        }
        (None, None, Some(s), None) => {
            let verb = catalog_verb("Service", &s.verb, s.service.modify_index)
                .map_err(|e| bad(e.to_string()))?;
            if s.node.is_empty() {
                return Err(bad("Must provide node".into()));
            }
            let service = s.service.into_service().map_err(|e| bad(e.to_string()))?;
            Ok(TxnOp::Service {
                verb,
                node: s.node,
                service,
            })
        }
        (None, None, None, Some(c)) => {
            let verb = catalog_verb("Check", &c.verb, c.check.modify_index)
                .map_err(|e| bad(e.to_string()))?;
            let status = c.check.health_status().map_err(|e| bad(e.to_string()))?;
            let check = Check {
                node: c.check.node.unwrap_or_default(),
                id: c.check.check_id.unwrap_or_default(),
                name: c.check.name.unwrap_or_default(),
                status,
                notes: c.check.notes.unwrap_or_default(),
                output: c.check.output.unwrap_or_default(),
                service_id: c.check.service_id.unwrap_or_default(),
                ..Default::default()
            };
            if check.node.is_empty() || check.id.is_empty() {
                return Err(bad("Must provide node and check ID".into()));
            }
            Ok(TxnOp::Check { verb, check })
        }
        _ => Err(bad(
            "exactly one of KV, Node, Service or Check must be given".into(),
        )),
    }
}

fn result_json(r: TxnResult) -> Value {
    match r {
        TxnResult::Kv(e) => json!({ "KV": KvPair::from(e) }),
        TxnResult::Node(n) => json!({ "Node": CatalogNode::from(n) }),
        TxnResult::Service(_, s) => json!({ "Service": AgentService::from(s) }),
        TxnResult::Check(c) => json!({ "Check": HealthCheck::from(c) }),
    }
}

pub(crate) async fn txn_apply(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    b: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let dc = st.agent.datacenter();
    p.check_dc(&dc)?;
    if b.len() > TXN_MAX_REQ_LEN {
        return Err(ApiError::TooLarge(format!(
            "Request body({} bytes) too large, max size: {TXN_MAX_REQ_LEN} bytes \
             (limits.txn_max_req_len)",
            b.len()
        )));
    }
    let ops: Vec<OpIn> = body(&b)?;
    if ops.len() > MAX_OPS {
        return Err(ApiError::TooLarge(format!(
            "Transaction contains too many operations ({} > {MAX_OPS})",
            ops.len()
        )));
    }
    let ops = ops
        .into_iter()
        .enumerate()
        .map(|(i, o)| op_from(i, o, &dc))
        .collect::<ApiResult<Vec<_>>>()?;
    let res = st.server.write(Command::Txn(ops)).await?;
    let outcome = res.txn.unwrap_or_default();
    let mut resp = if outcome.errors.is_empty() {
        let results: Vec<Value> = outcome.results.into_iter().map(result_json).collect();
        json(&json!({ "Results": results, "Errors": null }), p.pretty())
    } else {
        let errors: Vec<Value> = outcome
            .errors
            .into_iter()
            .map(|(i, what)| json!({ "OpIndex": i, "What": what }))
            .collect();
        let mut r = json(&json!({ "Results": null, "Errors": errors }), p.pretty());
        *r.status_mut() = StatusCode::CONFLICT;
        r
    };
    resp.headers_mut()
        .insert("x-consul-index", res.index.into());
    Ok(resp.into_response())
}
