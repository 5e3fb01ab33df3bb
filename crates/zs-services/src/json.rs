//! What the services' commands share: JSON requests in, clear error codes out.

use serde::Deserialize;
use zs::wire::ErrorCode;
use zs::{HandlerError, Text};

/// A handler error with `code`.
pub(crate) fn err(code: ErrorCode, message: impl Into<String>) -> HandlerError {
    HandlerError::with_code(code, message)
}

/// The JSON request of a command (an empty text is `{}`).
pub(crate) fn request<T: for<'de> Deserialize<'de>>(text: &Text) -> Result<T, HandlerError> {
    let s = if text.as_str().trim().is_empty() { "{}" } else { text.as_str() };
    serde_json::from_str(s).map_err(|e| err(ErrorCode::InvalidArgument, format!("bad request: {e}")))
}

/// Registers console command `$name` on `$router`: its JSON request goes to
/// `$f(&state, &peer, text)`, whose JSON value is the reply. Evaluates to the command's
/// options (`.requires_login()`...).
macro_rules! json_command {
    ($router:expr, $state:expr, $name:expr, $f:path) => {{
        let state = $state.clone();
        $router.console_async($name, move |peer: zs::Peer, text: zs::Text| {
            let state = state.clone();
            async move { $f(&state, &peer, text).await.map(|v| v.to_string()) }
        })
    }};
}
pub(crate) use json_command;
