//! The client of the link-preview service: async code, called from `io!` regions.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::uri::Scheme;
use axum::http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::{Deserialize, Serialize};

use crate::api::ApiError;

/// What the preview service says about a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub url: String,
    pub title: String,
    pub description: String,
}

/// Whether `link` is an absolute http(s) URL with a host: a link that can be previewed.
pub fn is_web_link(link: &str) -> bool {
    link.parse::<Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri
                .authority()
                .is_some_and(|authority| !authority.host().is_empty())
    })
}

/// A client for the preview service at one base URL, with a timeout on every call.
#[derive(Debug, Clone)]
pub struct PreviewClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    endpoint: String,
    timeout: Duration,
}

impl PreviewClient {
    /// A client for the service at `base` (e.g. `http://127.0.0.1:4000`).
    pub fn new(base: &str, timeout: Duration) -> Result<PreviewClient, String> {
        let endpoint = endpoint(base).map_err(|err| format!("bad upstream URL `{base}`: {err}"))?;
        // Plain TCP, no proxy: the service is reached directly, whatever proxy the environment
        // names. No delay on small writes, as most clients do.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            // Idle pooled connections are closed after a while, on tokio's timer.
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(PreviewClient {
            http,
            endpoint,
            timeout,
        })
    }

    /// The URL previews are asked from.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Asks for a preview of `link`. A service that cannot be reached, fails or sends something
    /// unreadable is a 502; one that does not answer within the timeout is a 504.
    pub async fn fetch(&self, link: &str) -> Result<Preview, ApiError> {
        // The timeout covers the whole call: connecting, the answer and its body.
        let answer = match tokio::time::timeout(self.timeout, self.call(link)).await {
            Ok(answer) => answer,
            Err(_elapsed) => Err(Failure::TimedOut),
        };
        let preview = answer.map_err(|failure| self.failed(failure))?;
        tracing::debug!(?preview, "preview received");
        Ok(preview)
    }

    /// `GET {endpoint}?url={link}`, the link form-encoded, and the answer's JSON body.
    async fn call(&self, link: &str) -> Result<Preview, Failure> {
        let query = serde_urlencoded::to_string([("url", link)]).map_err(Failure::other)?;
        let url: Uri = format!("{}?{query}", self.endpoint)
            .parse()
            .map_err(Failure::other)?;
        tracing::debug!(%url, "asking the preview service");
        let response = self.http.get(url).await.map_err(|err| {
            if err.is_connect() {
                Failure::Unreachable(err)
            } else {
                Failure::other(err)
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure::Refused(status));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(Failure::other)?
            .to_bytes();
        serde_json::from_slice(&body).map_err(Failure::Unreadable)
    }

    fn failed(&self, failure: Failure) -> ApiError {
        tracing::warn!(error = %failure, "link preview failed");
        match failure {
            Failure::TimedOut => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the link preview service did not answer within {} ms",
                    self.timeout.as_millis()
                ),
            ),
            Failure::Unreachable(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "the link preview service is unreachable",
            ),
            Failure::Refused(status) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the link preview service answered {status}"),
            ),
            Failure::Unreadable(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "the link preview service sent an unreadable preview",
            ),
            Failure::Other(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the link preview call failed: {failure}"),
            ),
        }
    }
}

/// Why a call to the preview service failed.
#[derive(Debug)]
enum Failure {
    /// No complete answer within the timeout.
    TimedOut,
    /// No connection to the service.
    Unreachable(hyper_util::client::legacy::Error),
    /// An answer that is not a success.
    Refused(StatusCode),
    /// An answer whose body is not a [`Preview`].
    Unreadable(serde_json::Error),
    /// Anything else: the request could not be made or sent, or the answer not read.
    Other(Box<dyn Error + Send + Sync>),
}

impl Failure {
    fn other(err: impl Into<Box<dyn Error + Send + Sync>>) -> Failure {
        Failure::Other(err.into())
    }
}

/// The error and its sources, `: `-separated, since hyper's errors say little alone
/// (`client error (SendRequest): connection closed before message completed`).
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let err: &(dyn Error + 'static) = match self {
            Failure::TimedOut => return f.write_str("timed out"),
            Failure::Refused(status) => return write!(f, "answered {status}"),
            Failure::Unreachable(err) => err,
            Failure::Unreadable(err) => err,
            Failure::Other(err) => &**err,
        };
        write!(f, "{err}")?;
        let mut source = err.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// `{base}` joined with `preview` as a relative reference: `http://host:4000` and
/// `http://host:4000/x` give `http://host:4000/preview`, `http://host:4000/x/` gives
/// `http://host:4000/x/preview`. Only `http`: the client has no TLS.
fn endpoint(base: &str) -> Result<String, String> {
    let uri = base.parse::<Uri>().map_err(|err| err.to_string())?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err("the URL must start with `http://` (no TLS)".to_string());
    }
    let authority = uri
        .authority()
        .filter(|authority| !authority.host().is_empty())
        .ok_or("the URL has no host")?;
    let path = uri.path();
    let directory = path.rfind('/').map_or("/", |slash| &path[..=slash]);
    Ok(format!("http://{authority}{directory}preview"))
}
