//! `/v1/snapshot`: `GET` streams an archive of the whole replicated state (Consul's shape,
//! see `muster_server::snapshot`), `PUT` restores one through Raft. Both hold every secret,
//! so their ACL rule asks `acl:write`, as Consul's.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use muster_server::snapshot::MAX_RESTORE_BYTES;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::{json, with_meta};
use crate::ApiState;

/// The largest archive `PUT` reads: a restore's state is bounded by [`MAX_RESTORE_BYTES`]
/// once decoded, and gzip rarely makes it larger.
const MAX_ARCHIVE_BYTES: usize = MAX_RESTORE_BYTES + (1 << 20);

/// Sends what it is given to the response body, 64 KiB at a time.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 << 10;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// `GET /v1/snapshot[?stale]`: the archive, written as it is sent.
pub(crate) async fn snapshot_get(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (snap, meta) = st.server.snapshot(p.consistency()?).await?;
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let written = snap
            .write_archive(&mut w)
            .and_then(|_| std::io::Write::flush(&mut w));
        if let Err(e) = written {
            tracing::warn!(error = %e, "snapshot stream cut short");
            // The client sees the body end early; its checksums then fail.
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let resp = (
        [("content-type", "application/x-gzip")],
        Body::from_stream(stream),
    )
        .into_response();
    Ok(with_meta(resp, &meta))
}

/// What a restore answers: the index it was applied at, and what the archive held.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Restored {
    index: u64,
    #[serde(rename = "ID")]
    id: String,
    format: &'static str,
    /// Consul record types a Consul snapshot held that Muster does not import.
    skipped: std::collections::BTreeMap<String, u64>,
}

/// `PUT /v1/snapshot`: the archive in the body replaces the whole state.
pub(crate) async fn snapshot_put(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let bytes = axum::body::to_bytes(body, MAX_ARCHIVE_BYTES)
        .await
        .map_err(|_| {
            ApiError::TooLarge(format!(
                "snapshot archive over {MAX_ARCHIVE_BYTES} bytes: a restore is one Raft entry"
            ))
        })?;
    let (index, inspection) = st.server.restore(&bytes).await?;
    for (kind, n) in &inspection.skipped {
        tracing::warn!(record = %kind, count = n, "snapshot restore skipped Consul records");
    }
    Ok(json(
        &Restored {
            index,
            id: inspection.meta.id,
            format: inspection.format,
            skipped: inspection.skipped.into_iter().collect(),
        },
        p.pretty(),
    ))
}
