//! Every HTTP request to an object store, counted: the `object_store` client's own connector
//! (reqwest) wrapped so that each attempt, retries included, is counted by what it is for and
//! how it ended, with the time to its answer's headers, the time to the end of its body and
//! the bytes of that body (`metrics`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame};
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService, ReqwestConnector,
};

use crate::metrics::{Kind, METRICS, Status};

/// The connector every store of npzfs is built with.
#[derive(Debug, Default)]
pub struct Counted;

impl HttpConnector for Counted {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Counting(client)))
    }
}

#[derive(Debug)]
struct Counting(HttpClient);

#[async_trait]
impl HttpService for Counting {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let kind = kind_of(&req);
        let began = Instant::now();
        METRICS.remote_sent();
        let answer = self.0.execute(req).await;
        METRICS.remote_first_byte(kind, began.elapsed());
        match answer {
            Ok(response) => {
                let status = Status::of_code(response.status().as_u16());
                let (parts, body) = response.into_parts();
                let body = Tally {
                    body,
                    kind,
                    status,
                    began,
                    ended: false,
                };
                Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
            }
            Err(e) => {
                METRICS.remote_done(kind, failure(&e), began.elapsed());
                Err(e)
            }
        }
    }
}

/// What a request is for: S3 lists with `list-type=2`, an HTTP server with PROPFIND.
fn kind_of(req: &HttpRequest) -> Kind {
    let query = req.uri().query().unwrap_or("");
    match *req.method() {
        Method::HEAD => Kind::Head,
        Method::GET if query.contains("list-type") => Kind::List,
        Method::GET => Kind::Get,
        _ if req.method().as_str() == "PROPFIND" => Kind::List,
        _ => Kind::Other,
    }
}

/// How a request that got no (whole) answer ended.
fn failure(e: &HttpError) -> Status {
    match e.kind() {
        HttpErrorKind::Timeout => Status::Timeout,
        _ => Status::Cut,
    }
}

/// A response body that counts its bytes, and the request's end when it ends (or is dropped:
/// a reader that stops early ends it too).
struct Tally {
    body: HttpResponseBody,
    kind: Kind,
    status: Status,
    began: Instant,
    ended: bool,
}

impl Tally {
    fn end(&mut self, status: Status) {
        if !self.ended {
            self.ended = true;
            METRICS.remote_done(self.kind, status, self.began.elapsed());
        }
    }
}

impl Body for Tally {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    METRICS.remote_bytes(data.len());
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let status = failure(e);
                self.end(status);
            }
            Poll::Ready(None) => {
                let status = self.status;
                self.end(status);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let status = self.status;
        self.end(status);
    }
}
