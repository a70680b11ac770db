//! The API's typed error: what a [`crate::Backend`] returns when it refuses
//! a request, and what the transport itself answers with (bad framing,
//! no token, unknown route). Each maps to one HTTP status and goes out as
//! Triton's APIs send their errors: a JSON body `{"code": .., "message": ..}`
//! (plus `errors`, the details of a validation failure, where there are any).

use alloc::string::{String, ToString};
use serde_json::{Map, Value};

/// What kind of failure; its name is the body's `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the request is not well-formed HTTP, or breaks its framing rules.
    BadRequest,
    /// 400: the body is not JSON, or not the JSON shape the route takes.
    InvalidContent,
    /// 400: a path segment or query parameter is not a value the route takes.
    InvalidArgument,
    /// 401: no bearer token was presented.
    Unauthorized,
    /// 403: the bearer token presented is not the one configured.
    Forbidden,
    /// 404: no such route, or no such VM or image.
    ResourceNotFound,
    /// 405: the route exists but not with this method (the response says
    /// which methods it has in `Allow`).
    MethodNotAllowed,
    /// 408: the request did not arrive in full in time.
    RequestTimeout,
    /// 409: the request conflicts with the current state (the uuid is
    /// taken, the image is in use, the VM is in the wrong state).
    Conflict,
    /// 411: a chunked body: this API takes bodies with `Content-Length` only.
    LengthRequired,
    /// 413: the body is larger than this API takes.
    RequestEntityTooLarge,
    /// 417: an `Expect` other than `100-continue`.
    ExpectationFailed,
    /// 422: the payload is JSON but fails validation (`errors` says where).
    ValidationFailed,
    /// 431: the request line and header fields are too large, or too many.
    RequestHeaderFieldsTooLarge,
    /// 500: the backend failed.
    InternalError,
    /// 501: a method or transfer coding this server does not implement, or
    /// a feature the backend does not have yet.
    NotImplemented,
    /// 503: too many connections, or the backend cannot serve now.
    ServiceUnavailable,
    /// 505: not HTTP/1.x.
    HttpVersionNotSupported,
}

impl ErrorCode {
    /// The HTTP status this error is sent with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidContent | ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::ResourceNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Conflict => 409,
            ErrorCode::LengthRequired => 411,
            ErrorCode::RequestEntityTooLarge => 413,
            ErrorCode::ExpectationFailed => 417,
            ErrorCode::ValidationFailed => 422,
            ErrorCode::RequestHeaderFieldsTooLarge => 431,
            ErrorCode::InternalError => 500,
            ErrorCode::NotImplemented => 501,
            ErrorCode::ServiceUnavailable => 503,
            ErrorCode::HttpVersionNotSupported => 505,
        }
    }

    /// The body's `code`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BadRequest",
            ErrorCode::InvalidContent => "InvalidContent",
            ErrorCode::InvalidArgument => "InvalidArgument",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::ResourceNotFound => "ResourceNotFound",
            ErrorCode::MethodNotAllowed => "MethodNotAllowed",
            ErrorCode::RequestTimeout => "RequestTimeout",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::LengthRequired => "LengthRequired",
            ErrorCode::RequestEntityTooLarge => "RequestEntityTooLarge",
            ErrorCode::ExpectationFailed => "ExpectationFailed",
            ErrorCode::ValidationFailed => "ValidationFailed",
            ErrorCode::RequestHeaderFieldsTooLarge => "RequestHeaderFieldsTooLarge",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::NotImplemented => "NotImplemented",
            ErrorCode::ServiceUnavailable => "ServiceUnavailable",
            ErrorCode::HttpVersionNotSupported => "HttpVersionNotSupported",
        }
    }
}

/// An error the API answers with; see the module's description.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// What kind of failure (and so the status).
    pub code: ErrorCode,
    /// What went wrong, naming the thing (`property "ram": must be ...`).
    pub message: String,
    /// Details, e.g. vmadm's `bad_values`/`bad_properties`/
    /// `missing_properties` of a failed validation; sent as `errors`.
    pub errors: Option<Value>,
}

impl ApiError {
    /// An error of kind `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), errors: None }
    }

    /// The payload fails validation; `errors` says where.
    pub fn validation(message: impl Into<String>, errors: Value) -> Self {
        Self { code: ErrorCode::ValidationFailed, message: message.into(), errors: Some(errors) }
    }

    /// No such VM or image.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound, message)
    }

    /// The request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// A parameter the route does not take.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// Something Alcove cannot do yet.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotImplemented, message)
    }

    /// The backend failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }

    /// The HTTP status it is sent with.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The JSON body: `{"code": .., "message": .., "errors": ..}`.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("code".to_string(), Value::String(self.code.name().to_string()));
        m.insert("message".to_string(), Value::String(self.message.clone()));
        if let Some(e) = &self.errors {
            m.insert("errors".to_string(), e.clone());
        }
        Value::Object(m)
    }
}

impl core::fmt::Display for ApiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({} {})", self.message, self.status(), self.code.name())
    }
}

impl core::error::Error for ApiError {}

/// Quotes `s` for an error message, cut to 64 characters: what a client
/// sent is named, but a hostile one cannot make the error large.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}
