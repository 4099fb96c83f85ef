//! The HTTP side of errors: every failure is a status and a JSON body `{"error": "..."}`,
//! including the requests axum's own extractors reject.

use std::any::Any;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, extract};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::db::DbError;

/// An error answer: a status and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 422: the request is well formed but its content breaks a rule.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn note_not_found(id: i64) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("note {id} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// The status of a request whose client went away (nginx's 499): logged, never sent.
pub const CLIENT_GONE: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
};

impl From<blocking_first::Cancelled> for ApiError {
    fn from(err: blocking_first::Cancelled) -> ApiError {
        ApiError::new(CLIENT_GONE, err.to_string())
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> ApiError {
        match err {
            DbError::Rejected(reason) => ApiError::invalid(reason),
            DbError::Pool(_) => {
                tracing::error!(error = %err, "database pool exhausted");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is busy, try again",
                )
            }
            DbError::Sqlite(_) => {
                tracing::error!(error = %err, "database failure");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "database error")
            }
        }
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(err: r2d2::Error) -> ApiError {
        DbError::from(err).into()
    }
}

/// Keeps axum's status (400 bad syntax, 415 not JSON, 422 wrong types, 413 too large) and its
/// explanation, in our JSON shape.
macro_rules! from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> ApiError {
                ApiError::new(rejection.status(), rejection.body_text())
            }
        }
    )*};
}

from_rejection!(JsonRejection, PathRejection, QueryRejection);

/// `axum::Json` as an extractor whose rejections are [`ApiError`]s.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(value))
    }
}

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(Debug)]
pub struct PathArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let extract::Path(value) = extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(PathArgs(value))
    }
}

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug)]
pub struct QueryArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let extract::Query(value) = extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(QueryArgs(value))
    }
}

/// The answer for a path no route matches.
pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

/// The answer for a known path asked with a method it does not serve.
pub async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}", uri.path()),
    )
}

/// What `CatchPanicLayer` answers when a handler panics: a 500, with the panic logged.
pub fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}
