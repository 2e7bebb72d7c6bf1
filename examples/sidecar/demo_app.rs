//! `sidecar demo-app --listen ADDR [--name NAME]` (hidden): the demo's workload, a counter in the spirit of
//! Kuma's demo app. Every request (any method, any path) counts, and the answer is JSON naming the app,
//! the counter, the path and the client address the app saw, so a trace shows whether a request came
//! through the sidecar (client `127.0.0.6`) or straight from the caller.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Serve the counter app.
#[derive(Debug, Args)]
pub(crate) struct DemoAppArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The app's name in its answers.
    #[arg(long, default_value = "demo-app")]
    name: String,
}

/// Serve until killed.
pub(crate) fn run(args: DemoAppArgs) -> ExitCode {
    let served = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| rt.block_on(serve(args)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sidecar demo-app: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: DemoAppArgs) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {}: {e}", args.listen)))?;
    let local = listener.local_addr()?;
    let counter = Arc::new(AtomicU64::new(0));
    let name: Arc<str> = args.name.into();
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and the like: try again after a breath.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (counter, name) = (counter.clone(), name.clone());
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let body = serde_json::json!({
                "app": &*name,
                "counter": n,
                "path": req.uri().path(),
                "listen": local.to_string(),
                "client": client.to_string(),
            });
            let response = Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(format!("{body}\n"))))
                .unwrap_or_default();
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
