//! `/v1/snapshot`: `GET` streams an archive of the whole replicated state (Consul's shape,
//! see `muster_server::snapshot`), `PUT` restores one through Raft: the body is streamed to
//! a file in the agent's data dir, then checked and restored from there, never held in
//! memory. Both hold every secret, so their ACL rule asks `acl:write`, as Consul's.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::{json, with_meta};
use crate::ApiState;

/// The largest archive `PUT` takes: it lands on disk, and a disk filled by one request
/// would stop the server.
const MAX_ARCHIVE_BYTES: u64 = 16 << 30;

/// A file removed when dropped: the uploaded archive, whatever becomes of the restore.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Streams `body` into a new file in `dir`.
async fn body_to_file(body: Body, dir: &std::path::Path) -> ApiResult<Scratch> {
    let name = format!(".snapshot-restore-{}.tmp", rand::random::<u64>());
    let scratch = Scratch(dir.join(name));
    let unwritable = |e: std::io::Error| {
        ApiError::Unavailable(format!(
            "cannot write the snapshot to {}: {e}",
            scratch.0.display()
        ))
    };
    let f = tokio::fs::File::create(&scratch.0)
        .await
        .map_err(unwritable)?;
    let mut f = tokio::io::BufWriter::with_capacity(1 << 20, f);
    let mut stream = body.into_data_stream();
    let mut len = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
        len += chunk.len() as u64;
        if len > MAX_ARCHIVE_BYTES {
            return Err(ApiError::TooLarge(format!(
                "snapshot archive over {MAX_ARCHIVE_BYTES} bytes"
            )));
        }
        f.write_all(&chunk).await.map_err(unwritable)?;
    }
    f.flush().await.map_err(unwritable)?;
    Ok(scratch)
}

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
    let file = body_to_file(body, &st.server.scratch_dir()).await?;
    let (index, inspection) = st.server.restore_file(&file.0).await?;
    drop(file);
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
