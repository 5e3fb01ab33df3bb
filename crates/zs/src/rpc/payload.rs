//! What a command carries: text (console form) or a DataFrame (stream form).

use bytes::{Bytes, BytesMut};
use zs_wire::{DataFrame, Flags, Limits};

use super::Text;
use crate::error::HandlerError;

/// The two payload forms of the original: console (text) and stream (DataFrame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// UTF-8 text in, text out.
    Console,
    /// DataFrame in, DataFrame out.
    Stream,
}

impl Form {
    /// The frame flags of this form.
    pub(crate) fn flags(self) -> Flags {
        match self {
            Form::Console => Flags::NONE,
            Form::Stream => Flags::DATAFRAME,
        }
    }

    /// The form a frame's flags announce.
    pub(crate) fn of(flags: Flags) -> Form {
        if flags.contains(Flags::DATAFRAME) {
            Form::Stream
        } else {
            Form::Console
        }
    }

    fn name(self) -> &'static str {
        match self {
            Form::Console => "text",
            Form::Stream => "a DataFrame",
        }
    }
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Console form.
    Text(Text),
    /// Stream form.
    Frame(DataFrame),
}

impl Payload {
    /// Decodes a payload of the form its flags announce, checking it is the form `want`.
    pub(crate) fn decode(want: Form, flags: Flags, bytes: Bytes, limits: &Limits) -> Result<Payload, String> {
        let got = Form::of(flags);
        if got != want {
            return Err(format!("takes {}, got {}", want.name(), got.name()));
        }
        let bytes = if flags.contains(Flags::COMPRESSED) {
            Bytes::from(zs_wire::compress::unlz4(&bytes, limits.max_frame_len).map_err(|e| e.to_string())?)
        } else {
            bytes
        };
        match got {
            Form::Console => {
                Text::from_utf8(bytes).map(Payload::Text).map_err(|_| "text is not UTF-8".into())
            }
            Form::Stream => DataFrame::decode(&bytes, limits).map(Payload::Frame).map_err(|e| e.to_string()),
        }
    }

    /// The form.
    pub(crate) fn form(&self) -> Form {
        match self {
            Payload::Text(_) => Form::Console,
            Payload::Frame(_) => Form::Stream,
        }
    }

    /// Appends the encoded payload.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        match self {
            Payload::Text(t) => out.extend_from_slice(t.as_bytes()),
            Payload::Frame(f) => f.encode(out),
        }
    }

    /// Encoded size, for buffer sizing (exact for text, a guess for frames).
    pub(crate) fn size_hint(&self) -> usize {
        match self {
            Payload::Text(t) => t.len(),
            Payload::Frame(f) => 16 * f.len() + 8,
        }
    }
}

/// A type that travels as a payload of one form: [`Text`] or [`DataFrame`].
pub trait PayloadType: Sized + Send + 'static {
    /// The form it travels in.
    const FORM: Form;
    /// Wraps it.
    fn into_payload(self) -> Payload;
    /// Unwraps it, if the payload is of this form.
    fn from_payload(p: Payload) -> Option<Self>;
}

impl PayloadType for Text {
    const FORM: Form = Form::Console;
    fn into_payload(self) -> Payload {
        Payload::Text(self)
    }
    fn from_payload(p: Payload) -> Option<Self> {
        match p {
            Payload::Text(t) => Some(t),
            Payload::Frame(_) => None,
        }
    }
}

impl PayloadType for DataFrame {
    const FORM: Form = Form::Stream;
    fn into_payload(self) -> Payload {
        Payload::Frame(self)
    }
    fn from_payload(p: Payload) -> Option<Self> {
        match p {
            Payload::Frame(f) => Some(f),
            Payload::Text(_) => None,
        }
    }
}

/// What a handler of payload type `P` may return: the reply, or a result with an error
/// that becomes an error reply.
pub trait IntoReply<P> {
    /// Converts to the reply or a handler error.
    fn into_reply(self) -> Result<P, HandlerError>;
}

impl IntoReply<Text> for Text {
    fn into_reply(self) -> Result<Text, HandlerError> {
        Ok(self)
    }
}

impl IntoReply<Text> for String {
    fn into_reply(self) -> Result<Text, HandlerError> {
        Ok(Text::from(self))
    }
}

impl IntoReply<Text> for &'static str {
    fn into_reply(self) -> Result<Text, HandlerError> {
        Ok(Text::from_static(self))
    }
}

impl IntoReply<DataFrame> for DataFrame {
    fn into_reply(self) -> Result<DataFrame, HandlerError> {
        Ok(self)
    }
}

impl<P, T: IntoReply<P>, E: Into<HandlerError>> IntoReply<P> for Result<T, E> {
    fn into_reply(self) -> Result<P, HandlerError> {
        self.map_err(Into::into).and_then(IntoReply::into_reply)
    }
}
