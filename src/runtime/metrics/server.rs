//! The metrics endpoint's HTTP server: hyper's HTTP/1 server on a current-thread tokio runtime
//! of its own thread, one task per connection, so that idle, slow or oversized clients hold up
//! neither a scrape nor the timely workers (docs/metrics.md says why this stack).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;

use super::{exposition, Metrics, MetricsArgs, Settings};

/// The most a request head (request line and headers) may take; a longer one is answered 431
/// and its connection closed, so no client makes the server buffer more than this.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// A client must send its whole request head within this of connecting (or, on a kept-alive
/// connection, of the previous response); then its connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// No connection lives longer than this, however it is used: a client that never reads its
/// response holds its task no longer.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Connections served at once. Beyond it new connections are closed as they are accepted;
/// idle ones free their place within [`HEADER_READ_TIMEOUT`].
const MAX_CONNECTIONS: usize = 512;

/// How long the accept loop waits after a failed accept (out of file descriptors, typically).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address does not parse or resolve, or is taken.
    #[error("--metrics-addr {addr}: cannot listen there (expected HOST:PORT, e.g. 127.0.0.1:9187)")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server's runtime or thread could not be created.
    #[error("cannot start the metrics endpoint's thread")]
    Start(#[source] std::io::Error),
}

/// The server's handle on the metrics: what the command keeps.
pub struct Server {
    pub metrics: Arc<Metrics>,
    linger: Duration,
}

impl Server {
    /// Binds `--metrics-addr` and serves it on a background thread; `None` without the flag.
    pub fn start(args: &MetricsArgs, settings: Settings) -> Result<Option<Server>, ServerError> {
        let Some(addr) = &args.metrics_addr else { return Ok(None) };
        let bind_error = |source| ServerError::Bind { addr: addr.clone(), source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ServerError::Start)?;
        let metrics = Arc::new(Metrics::new(settings));
        let endpoint =
            Arc::new(Endpoint { metrics: Arc::clone(&metrics), registry: exposition::registry(Arc::clone(&metrics)) });
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || runtime.block_on(accept(listener, endpoint)))
            .map_err(ServerError::Start)?;
        tracing::info!("metrics on http://{bound}/metrics (also /health, /ready)");
        Ok(Some(Server { metrics, linger: Duration::from_secs(args.metrics_linger_secs) }))
    }

    /// Keeps serving the final values for `--metrics-linger-secs`.
    pub fn linger(&self) {
        if !self.linger.is_zero() {
            std::thread::sleep(self.linger);
        }
    }
}

/// What every connection answers from.
struct Endpoint {
    metrics: Arc<Metrics>,
    registry: Registry,
}

/// Accepts connections until the process ends, each served by a task of its own.
async fn accept(listener: std::net::TcpListener, endpoint: Arc<Endpoint>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("the metrics endpoint stopped: {e}");
            return;
        }
    };
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Over the limit, the stream is dropped here: the client sees the connection closed.
        if let Some(place) = Place::take(&open) {
            tokio::spawn(serve(stream, Arc::clone(&endpoint), place));
        }
    }
}

/// One connection's place among [`MAX_CONNECTIONS`], given back when dropped.
struct Place(Arc<AtomicUsize>);

impl Place {
    fn take(open: &Arc<AtomicUsize>) -> Option<Place> {
        let taken = open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < MAX_CONNECTIONS).then_some(n + 1));
        taken.ok().map(|_| Place(Arc::clone(open)))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection's requests until the client closes it or a limit is reached.
async fn serve(stream: tokio::net::TcpStream, endpoint: Arc<Endpoint>, _place: Place) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = endpoint.answer(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    // A failed connection is the client's doing (reset, malformed or oversized head, too slow);
    // hyper has already answered what could be answered.
    let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
}

impl Endpoint {
    /// The answer to one request. A request body is never read: hyper closes the connection
    /// after answering rather than read an unread body.
    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match request.uri().path() {
            "/metrics" => {
                let mut response = text(StatusCode::OK, exposition::render(&self.registry));
                let content_type = HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE);
                response.headers_mut().insert(CONTENT_TYPE, content_type);
                response
            }
            "/health" => probe(self.metrics.health()),
            "/ready" => probe(self.metrics.readiness()),
            _ => text(StatusCode::NOT_FOUND, "try /metrics, /health or /ready\n".into()),
        }
    }
}

/// `/health` and `/ready`: 200 `ok`, or 503 with the one-line reason.
fn probe(result: Result<(), String>) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => text(StatusCode::OK, "ok\n".into()),
        Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
