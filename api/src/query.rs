//! `/v1/query`: prepared queries. Create, list, read, update and delete them, and resolve a
//! name to one (`explain`) or run it (`execute`), with Consul 1.10's bodies, statuses and
//! texts. The errors Consul's server returns for a client's mistake (an invalid definition, a
//! name taken, a query that does not exist to update) have its text but are 400s, where
//! Consul answers 500 (README, "Compatibility"); a query not found on read or execute is a
//! 404 (`Query not found`).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use muster_server::model::{
    Command, Consistency, PreparedExecute, PreparedQuery, PreparedRun, Query, QueryResult, ReadMeta,
};
use muster_server::prepared::{self, Definition, Dns};
use serde::Serialize;
use serde_json::Value;

use crate::body::body;
use crate::error::{ApiError, ApiResult};
use crate::health::service_entry;
use crate::params::Params;
use crate::read::read;
use crate::reply::{json, with_query_meta};
use crate::types::ServiceEntry;
use crate::ApiState;

/// Consul's `ErrQueryNotFound`.
const NOT_FOUND: &str = "Query not found";

/// Consul's `QueryMeta`, which its execute and explain replies carry in the body too.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BodyMeta {
    index: u64,
    last_contact: u64,
    known_leader: bool,
    consistency_level: &'static str,
    not_modified: bool,
    backend: u8,
}

impl BodyMeta {
    fn new(meta: &ReadMeta, mode: Consistency) -> Self {
        BodyMeta {
            index: 0,
            last_contact: meta.last_contact_ms.saturating_mul(1_000_000),
            known_leader: meta.known_leader,
            consistency_level: mode.as_str(),
            not_modified: false,
            backend: 0,
        }
    }
}

/// `/v1/query/<id>/execute`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExecuteOut {
    service: String,
    nodes: Vec<ServiceEntry>,
    #[serde(rename = "DNS")]
    dns: Dns,
    datacenter: String,
    failovers: u32,
    #[serde(flatten)]
    meta: BodyMeta,
}

/// `/v1/query/<id>/explain`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExplainOut {
    query: Value,
    #[serde(flatten)]
    meta: BodyMeta,
}

/// A 400 with Consul's text, for the errors its server returns about the request.
fn invalid(why: String) -> ApiError {
    ApiError::BadRequest(why)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, NOT_FOUND).into_response()
}

/// Consul looks queries up by a UUID index, which refuses an ID of the wrong length.
fn check_id(id: &str) -> ApiResult<()> {
    if id.len() != 36 {
        return Err(invalid(
            "failed prepared query lookup: UUID must be 36 characters".into(),
        ));
    }
    Ok(())
}

/// Reads a query body; an empty body is Go's `EOF`.
fn definition(b: &[u8]) -> ApiResult<Definition> {
    body(b)
}

/// The stored query `id`, read at the leader.
async fn existing(st: &ApiState, id: &str) -> ApiResult<Option<PreparedQuery>> {
    let q = Query::PreparedQuery { id: id.to_string() };
    Ok(match st.server.read(Consistency::Default, q).await?.0 {
        QueryResult::PreparedQueries(mut v) => v.pop(),
        _ => None,
    })
}

/// Why the state machine refused to store `q`, in Consul's words, read back after the fact.
async fn refused(st: &ApiState, q: &PreparedQuery) -> ApiResult<Option<String>> {
    let all = match st
        .server
        .read(Consistency::Default, Query::PreparedQueries)
        .await?
        .0
    {
        QueryResult::PreparedQueries(v) => v,
        _ => Vec::new(),
    };
    let session = Query::Session {
        id: q.session.clone(),
    };
    let session_exists = q.session.is_empty()
        || matches!(
            st.server.read(Consistency::Default, session).await?.0,
            QueryResult::Sessions(s) if !s.is_empty()
        );
    Ok(prepared::check_set(&all, q, session_exists).err())
}

/// Checks a definition as Consul does before storing it, stores it, and says why not.
async fn store(st: &ApiState, def: &Definition) -> ApiResult<()> {
    prepared::validate(def).map_err(|e| invalid(format!("Invalid prepared query: {e}")))?;
    let q = def.to_stored();
    if q.template {
        if let Err(e) = prepared::template::compile(def) {
            // Consul's state store checks names and the session before compiling.
            let why = refused(st, &q).await?;
            return Err(invalid(
                why.unwrap_or_else(|| format!("failed compiling template: {e}")),
            ));
        }
    }
    let res = st
        .server
        .write(Command::PreparedQuerySet(Box::new(q.clone())))
        .await?;
    if !res.success {
        let why = refused(st, &q).await?;
        return Err(invalid(why.unwrap_or_else(|| {
            "prepared query conflicts with one stored meanwhile".into()
        })));
    }
    Ok(())
}

pub(crate) async fn query_create(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    b: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let mut def = definition(&b)?;
    if !def.id.is_empty() {
        return Err(invalid(
            "ID must be empty when creating a new prepared query".into(),
        ));
    }
    def.id = muster_server::new_uuid();
    store(&st, &def).await?;
    Ok(json(&serde_json::json!({ "ID": def.id }), p.pretty()))
}

pub(crate) async fn query_update(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    b: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let mut def = if b.is_empty() {
        Definition::default()
    } else {
        definition(&b)?
    };
    // The ID is the URL's, not the body's.
    def.id.clone_from(&id);
    modify(&st, &id).await?;
    store(&st, &def).await?;
    Ok(StatusCode::OK.into_response())
}

/// Consul's check before an update or delete: the query must exist.
async fn modify(st: &ApiState, id: &str) -> ApiResult<()> {
    check_id(id).map_err(|e| invalid(format!("Prepared Query lookup failed: {e}")))?;
    if existing(st, id).await?.is_none() {
        return Err(invalid(format!(
            "Cannot modify non-existent prepared query: '{id}'"
        )));
    }
    Ok(())
}

pub(crate) async fn query_delete(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    modify(&st, &id).await?;
    st.server.write(Command::PreparedQueryDelete { id }).await?;
    Ok(StatusCode::OK.into_response())
}

fn queries_json(res: QueryResult) -> Vec<Value> {
    match res {
        QueryResult::PreparedQueries(v) => v.iter().map(Definition::json_of).collect(),
        _ => Vec::new(),
    }
}

pub(crate) async fn query_list(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (res, meta, mode) = read(&st, &p, Query::PreparedQueries).await?;
    Ok(with_query_meta(
        json(&queries_json(res), p.pretty()),
        &meta,
        mode,
    ))
}

pub(crate) async fn query_get(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    check_id(&id)?;
    let (res, meta, mode) = read(&st, &p, Query::PreparedQuery { id }).await?;
    let list = queries_json(res);
    let resp = if list.is_empty() {
        not_found()
    } else {
        json(&list, p.pretty())
    };
    Ok(with_query_meta(resp, &meta, mode))
}

/// The request to run `id_or_name`, from `?near`, `?limit`, `?connect` and the agent.
fn execute_request(
    st: &ApiState,
    p: &Params,
    headers: &HeaderMap,
    id_or_name: String,
) -> ApiResult<PreparedExecute> {
    let limit = match p.get("limit") {
        None | Some("") => 0,
        Some(l) => l.parse::<i64>().map_err(|_| {
            invalid(format!(
                "Bad limit: strconv.Atoi: parsing {l:?}: invalid syntax"
            ))
        })?,
    };
    let source_ip = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    Ok(PreparedExecute {
        id_or_name,
        near: p.get("near").unwrap_or_default().to_string(),
        agent_node: st.agent.node_name(),
        source_ip,
        limit: u64::try_from(limit).unwrap_or(0),
        connect: p.has("connect") && p.get("connect") != Some("false"),
    })
}

/// Runs a resolve-or-execute read; not found and resolution errors as Consul answers them.
async fn run(
    st: &ApiState,
    p: &Params,
    q: Query,
) -> ApiResult<
    Result<
        (
            PreparedQuery,
            Vec<muster_server::model::ServiceHealth>,
            ReadMeta,
            Consistency,
        ),
        Response,
    >,
> {
    let (res, meta, mode) = read(st, p, q).await?;
    match res {
        QueryResult::PreparedQueryRun(PreparedRun::Found { query, nodes }) => {
            Ok(Ok((query, nodes, meta, mode)))
        }
        QueryResult::PreparedQueryRun(PreparedRun::Failed(why)) => Err(invalid(why)),
        _ => Ok(Err(with_query_meta(not_found(), &meta, mode))),
    }
}

pub(crate) async fn query_execute(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let req = execute_request(&st, &p, &headers, id)?;
    let (query, nodes, meta, mode) =
        match run(&st, &p, Query::PreparedQueryExecute(Box::new(req))).await? {
            Ok(found) => found,
            Err(resp) => return Ok(resp),
        };
    let def = Definition::of(&query);
    let (nodes, filtered) = readable(&st, &headers, q.as_deref(), &def.token, nodes).await?;
    let out = ExecuteOut {
        service: def.service.service,
        nodes: nodes.into_iter().map(service_entry).collect(),
        dns: def.dns,
        datacenter: st.agent.datacenter(),
        failovers: 0,
        meta: BodyMeta::new(&meta, mode),
    };
    let mut resp = with_query_meta(json(&out, p.pretty()), &meta, mode);
    if filtered {
        resp.headers_mut().insert(
            "X-Consul-Results-Filtered-By-ACLs",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// The instances a query's answer may show, and whether any were dropped. As Consul, a query
/// runs with the token it was stored with, else the caller's; an instance shows when that
/// token may read its node and its service.
async fn readable(
    st: &ApiState,
    headers: &HeaderMap,
    query: Option<&str>,
    stored: &str,
    nodes: Vec<muster_server::model::ServiceHealth>,
) -> ApiResult<(Vec<muster_server::model::ServiceHealth>, bool)> {
    if !st.acl.enabled() {
        return Ok((nodes, false));
    }
    let secret = match stored {
        "" => crate::acl::enforce::request_secret(headers, query),
        s => Some(s.to_string()),
    };
    let authz = match st.acl.resolve(secret.as_deref()).await {
        Ok(a) => a,
        Err(muster_server::acl::ResolveError::NotFound) => {
            return Err(ApiError::Forbidden("ACL not found".into()))
        }
        Err(muster_server::acl::ResolveError::Server(e)) => return Err(e.into()),
    };
    use muster_server::acl::{Access, Resource};
    let before = nodes.len();
    let kept: Vec<_> = nodes
        .into_iter()
        .filter(|h| {
            authz.allowed(Resource::Node, &h.node.name, Access::Read)
                && authz.allowed(Resource::Service, &h.service.name, Access::Read)
        })
        .collect();
    let filtered = kept.len() != before;
    Ok((kept, filtered))
}

pub(crate) async fn query_explain(
    State(st): State<ApiState>,
    Path(id_or_name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    // Parsed for its errors, as Consul's explain parses them too.
    execute_request(&st, &p, &headers, String::new())?;
    let (query, _, meta, mode) =
        match run(&st, &p, Query::PreparedQueryExplain { id_or_name }).await? {
            Ok(found) => found,
            Err(resp) => return Ok(resp),
        };
    let out = ExplainOut {
        query: Definition::json_of(&query),
        meta: BodyMeta::new(&meta, mode),
    };
    Ok(with_query_meta(json(&out, p.pretty()), &meta, mode))
}
