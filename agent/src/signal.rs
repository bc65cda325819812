//! Waiting for the operator to ask for shutdown: the agent's `main` and `muster lock` while it
//! waits for its lock both stop on the first SIGTERM or SIGINT.

/// Resolves on the first SIGTERM or SIGINT. If the handlers cannot be installed it never
/// resolves: the process then stops the way it would without them.
pub async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
