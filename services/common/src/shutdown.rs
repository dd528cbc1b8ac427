//! Graceful shutdown: one token, cancelled on SIGTERM or SIGINT, that every
//! task of a service watches. A service finishes or aborts its current
//! transaction when it sees the token cancelled, then returns from `run`.

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Cancels `shutdown` on the first SIGTERM or SIGINT. A second signal while
/// the service is draining exits the process at once.
pub fn cancel_on_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutdown signal received; draining.");
        shutdown.cancel();
        wait_for_signal().await;
        tracing::warn!("Second shutdown signal; exiting at once.");
        std::process::exit(130);
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
