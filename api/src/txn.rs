//! `PUT /v1/txn`: up to 128 KV, node, service and check operations, applied all or none.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use muster_server::model::{CatalogVerb, Command, KvVerb, Node, TxnOp, TxnOutcome, TxnResult};
use serde_json::{json, Value};

use crate::body::body;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::json;
use crate::requests::OpIn;
use crate::types::{AgentService, CatalogNode, HealthCheck, KvPair};
use crate::{ApiState, MAX_VALUE_SIZE};

/// The most operations a transaction may have: Consul's limit from 1.13 on (1.10 had 64), so
/// a script written for either fits.
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
        other => return Err(ApiError::BadRequest(format!("unknown KV verb {other:?}"))),
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
                "unknown {kind} verb {other:?}"
            )))
        }
    })
}

/// Why an operation cannot be applied: a reason reported against the operation, or a
/// request the whole of which is refused (a body that does not decode, a value too large).
enum OpError {
    Invalid(String),
    Request(ApiError),
}

impl From<ApiError> for OpError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::BadRequest(m) => OpError::Invalid(m),
            e => OpError::Request(e),
        }
    }
}

fn op_from(o: OpIn, dc: &str) -> Result<TxnOp, OpError> {
    match (o.kv, o.node, o.service, o.check) {
        (Some(kv), None, None, None) => {
            let verb = kv_verb(&kv.verb).map_err(|e| OpError::Invalid(e.to_string()))?;
            let key = kv.key.unwrap_or_default();
            if key.is_empty() && !matches!(verb, KvVerb::GetTree | KvVerb::DeleteTree) {
                return Err(OpError::Invalid("Missing key for KV operation".into()));
            }
            let value = match kv.value {
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v)
                    // The body itself does not decode: 400, as in Consul, not an op error.
                    .map_err(|e| {
                        OpError::Request(ApiError::BadRequest(format!(
                            "Failed to parse body: failed to decode value: {e}"
                        )))
                    })?,
                None => Vec::new(),
            };
            if value.len() > MAX_VALUE_SIZE {
                return Err(OpError::Request(ApiError::TooLarge(format!(
                    "Value for key {key:?} is too large ({} > {MAX_VALUE_SIZE} bytes)",
                    value.len()
                ))));
            }
            if matches!(verb, KvVerb::Lock | KvVerb::Unlock | KvVerb::CheckSession)
                && kv.session.as_deref().unwrap_or("").is_empty()
            {
                return Err(OpError::Invalid(
                    "Missing session for lock operation".into(),
                ));
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
                .map_err(|e| OpError::Invalid(e.to_string()))?;
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
                return Err(OpError::Invalid("Must provide node".into()));
            }
            Ok(TxnOp::Node { verb, node })
        }
        (None, None, Some(s), None) => {
            let verb = catalog_verb("Service", &s.verb, s.service.modify_index)
                .map_err(|e| OpError::Invalid(e.to_string()))?;
            if s.node.is_empty() {
                return Err(OpError::Invalid("Must provide node".into()));
            }
            let service = s
                .service
                .into_service()
                .map_err(|e| OpError::Invalid(e.to_string()))?;
            Ok(TxnOp::Service {
                verb,
                node: s.node,
                service,
            })
        }
        (None, None, None, Some(c)) => {
            let verb = catalog_verb("Check", &c.verb, c.check.modify_index)
                .map_err(|e| OpError::Invalid(e.to_string()))?;
            let node = c.check.node.clone().unwrap_or_default();
            let id = c.check.check_id.clone().unwrap_or_default();
            let check = c
                .check
                .into_check(node, id)
                .map_err(|e| OpError::Invalid(e.to_string()))?;
            if check.node.is_empty() || check.id.is_empty() {
                return Err(OpError::Invalid("Must provide node and check ID".into()));
            }
            Ok(TxnOp::Check { verb, check })
        }
        _ => Err(OpError::Invalid(
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
    let ops: Vec<OpIn> = body(&b).map_err(|e| match e {
        ApiError::BadRequest(m) => {
            ApiError::BadRequest(m.replacen("Request decode failed: ", "Failed to parse body: ", 1))
        }
        e => e,
    })?;
    if ops.len() > MAX_OPS {
        return Err(ApiError::TooLarge(format!(
            "Transaction contains too many operations ({} > {MAX_OPS})",
            ops.len()
        )));
    }
    let read_only = !ops.iter().any(OpIn::writes);
    let mut converted = Vec::with_capacity(ops.len());
    let mut invalid = Vec::new();
    for (i, o) in ops.into_iter().enumerate() {
        match op_from(o, &dc) {
            Ok(op) => converted.push(op),
            Err(OpError::Invalid(what)) => invalid.push((i, what)),
            Err(OpError::Request(e)) => return Err(e),
        }
    }
    // As in Consul, an operation that does not validate fails the transaction with the
    // per-operation errors, like a condition that does not hold; nothing is applied.
    let (outcome, index) = if invalid.is_empty() {
        let res = st.server.write(Command::Txn(converted)).await?;
        (res.txn.unwrap_or_default(), res.index)
    } else {
        let outcome = TxnOutcome {
            results: Vec::new(),
            errors: invalid,
        };
        (outcome, st.server.applied_index().unwrap_or(0))
    };
    let mut body = if outcome.errors.is_empty() {
        let results: Vec<Value> = outcome.results.into_iter().map(result_json).collect();
        json!({ "Results": results, "Errors": null })
    } else {
        let errors: Vec<Value> = outcome
            .errors
            .into_iter()
            .map(|(i, what)| json!({ "OpIndex": i, "What": what }))
            .collect();
        json!({ "Results": null, "Errors": errors })
    };
    let conflict = body["Errors"].is_array();
    // A transaction of reads only is answered as a read: with the read's metadata in the body
    // and the leader headers, as Consul's `Txn.Read` answers. It went through the Raft log
    // here, so it is linearizable and the leader is known.
    if read_only {
        if let Value::Object(m) = &mut body {
            m.insert("Index".into(), index.into());
            m.insert("LastContact".into(), 0.into());
            m.insert("KnownLeader".into(), true.into());
            m.insert("ConsistencyLevel".into(), "".into());
            m.insert("NotModified".into(), false.into());
            m.insert("Backend".into(), 0.into());
        }
    }
    let mut resp = json(&body, p.pretty());
    if conflict {
        *resp.status_mut() = StatusCode::CONFLICT;
    }
    if read_only {
        let h = resp.headers_mut();
        h.insert("x-consul-knownleader", HeaderValue::from_static("true"));
        h.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    }
    Ok(resp.into_response())
}
