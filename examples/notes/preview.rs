//! The client of the link-preview service: async code, called from `io!` regions.

use std::time::Duration;

use axum::http::StatusCode;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::api::ApiError;

/// What the preview service says about a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub url: String,
    pub title: String,
    pub description: String,
}

/// A client for the preview service at one base URL, with a timeout on every call.
#[derive(Debug, Clone)]
pub struct PreviewClient {
    http: reqwest::Client,
    endpoint: Url,
    timeout: Duration,
}

impl PreviewClient {
    /// A client for the service at `base` (e.g. `http://127.0.0.1:4000`).
    pub fn new(base: &str, timeout: Duration) -> Result<PreviewClient, String> {
        let endpoint = Url::parse(base)
            .and_then(|base| base.join("preview"))
            .map_err(|err| format!("bad upstream URL `{base}`: {err}"))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // The service is reached directly, whatever proxy the environment names.
            .no_proxy()
            .build()
            .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
        Ok(PreviewClient {
            http,
            endpoint,
            timeout,
        })
    }

    /// The URL previews are asked from.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// Asks for a preview of `link`. A service that cannot be reached, fails or sends something
    /// unreadable is a 502; one that does not answer within the timeout is a 504.
    pub async fn fetch(&self, link: &str) -> Result<Preview, ApiError> {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().append_pair("url", link);
        tracing::debug!(%url, "asking the preview service");
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|err| self.failed(err))?;
        let status = response.status();
        if !status.is_success() {
            tracing::warn!(%status, "the link preview service refused");
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the link preview service answered {status}"),
            ));
        }
        let preview = response.json().await.map_err(|err| self.failed(err))?;
        tracing::debug!(?preview, "preview received");
        Ok(preview)
    }

    fn failed(&self, err: reqwest::Error) -> ApiError {
        tracing::warn!(error = %err, "link preview failed");
        if err.is_timeout() {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the link preview service did not answer within {} ms",
                    self.timeout.as_millis()
                ),
            )
        } else if err.is_connect() {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "the link preview service is unreachable",
            )
        } else if err.is_decode() {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "the link preview service sent an unreadable preview",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the link preview call failed: {err}"),
            )
        }
    }
}
