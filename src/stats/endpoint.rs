//! `-o metrics=ADDR:PORT`: the Prometheus endpoint. The address is bound at mount, before the
//! daemon forks, so a port that cannot be had is one line and exit 10 then; the daemon serves
//! it on a thread of its own (hyper, HTTP/1, one small tokio runtime), away from the FUSE
//! request threads and the remote I/O threads. Each scrape takes a fresh snapshot: reads never
//! wait for a scrape, and a scrape never takes a lock that reads take, but the cache's books
//! for the moment it reads them.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::openmetrics::{CONTENT_TYPE, encode};
use super::snapshot::Snapshot;
use crate::error::{Error, Result, cause};

/// Where the figures come from at each scrape.
pub type Source = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// The port `-o metrics=` listens on when only a port is given: Prometheus's registry of
/// exporter ports has no npzfs; 9477 is free there.
pub const DEFAULT_PORT: u16 = 9477;

/// `-o metrics=` as written: `PORT`, `ADDR:PORT` (`[ADDR]:PORT` for IPv6) or `localhost:PORT`.
/// Loopback unless the address says otherwise.
pub fn parse(value: &str) -> std::result::Result<SocketAddr, String> {
    let loopback = |port: &str| {
        port.parse::<u16>()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .map_err(|_| format!("{port:?} is not a port number"))
    };
    if !value.contains(':') {
        return loopback(value);
    }
    if let Some(port) = value.strip_prefix("localhost:") {
        return loopback(port);
    }
    value.parse().map_err(|_| {
        format!("{value:?} is not ADDR:PORT (127.0.0.1:{DEFAULT_PORT}, [::1]:{DEFAULT_PORT})")
    })
}

/// Binds `addr` now (at mount, before the fork): a port in use or not ours is one error.
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).map_err(|e| Error::Metrics {
        addr: addr.to_string(),
        cause: cause(&e),
    })?;
    listener.set_nonblocking(true).map_err(|e| Error::Metrics {
        addr: addr.to_string(),
        cause: cause(&e),
    })?;
    Ok(listener)
}

/// Serves `GET /metrics` on `listener` from a thread of its own, for the life of the process.
pub fn serve(listener: TcpListener, source: Source) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let fail = |e: std::io::Error| Error::Metrics {
        addr: addr.clone(),
        cause: cause(&e),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(fail)?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(fail)?
    };
    log::debug!("metrics at http://{addr}/metrics");
    std::thread::Builder::new()
        .name("npzfs-metrics".into())
        .spawn(move || runtime.block_on(accept(listener, source)))
        .map_err(fail)?;
    Ok(())
}

async fn accept(listener: tokio::net::TcpListener, source: Source) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: the next accept may do better.
                log::debug!("metrics: cannot accept: {}", cause(&e));
                tokio::task::yield_now().await;
                continue;
            }
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, source.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                log::debug!("metrics: connection ended: {e}");
            }
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    source: Source,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = kind.parse() {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    let text = "text/plain; charset=utf-8";
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            reply(StatusCode::OK, CONTENT_TYPE, encode(source()))
        }
        (&Method::GET | &Method::HEAD, "/") => reply(
            StatusCode::OK,
            text,
            "npzfs: the figures are at /metrics\n".into(),
        ),
        (&Method::GET | &Method::HEAD, _) => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: try /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "only GET /metrics\n".into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_a_port_or_addr_port_and_loopback_by_default() {
        assert_eq!(parse("9477").unwrap().to_string(), "127.0.0.1:9477");
        assert_eq!(parse("localhost:80").unwrap().to_string(), "127.0.0.1:80");
        assert_eq!(parse("0.0.0.0:9").unwrap().to_string(), "0.0.0.0:9");
        assert_eq!(parse("[::1]:9477").unwrap().to_string(), "[::1]:9477");
        assert!(parse("70000").unwrap_err().contains("not a port number"));
        assert!(parse("host:x").unwrap_err().contains("not ADDR:PORT"));
    }

    #[test]
    fn a_port_in_use_is_one_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = bind(addr).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::METRICS);
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }
}
