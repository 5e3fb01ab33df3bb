//! `DataFrame`: an ordered list of typed values, the payload of stream commands.
//!
//! Written with chained `write_*` calls, read back in order with a [`Reader`] whose typed
//! reads fail clearly on a type mismatch or at the end of the data. On the wire a
//! DataFrame is one MessagePack array, so any language with a MessagePack library can
//! read and write it.
//!
//! ```
//! use zs_wire::DataFrame;
//! let mut df = DataFrame::new();
//! df.write_str("hello").write_i32(42).write_bool(true);
//! let bytes = df.to_bytes();
//! let back = DataFrame::decode(&bytes, &Default::default()).unwrap();
//! let mut r = back.reader();
//! assert_eq!(r.read_str().unwrap(), "hello");
//! assert_eq!(r.read_i32().unwrap(), 42);
//! assert!(r.read_bool().unwrap());
//! assert!(r.read_bool().is_err()); // end of data
//! ```

mod codec;
mod reader;
mod value;

use bytes::{Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

pub use reader::{ReadError, Reader};
pub use value::Value;

use crate::{Limits, WireError};

/// An ordered list of typed values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataFrame {
    values: Vec<Value>,
}

/// A value could not be converted to or from a serde type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("serde conversion failed: {0}")]
pub struct SerdeError(pub String);

macro_rules! writers {
    ($($(#[$m:meta])* $fn:ident($t:ty) => $v:ident;)*) => {$(
        $(#[$m])*
        pub fn $fn(&mut self, v: $t) -> &mut Self {
            self.values.push(Value::$v(v.into()));
            self
        }
    )*};
}

impl DataFrame {
    /// An empty frame.
    pub fn new() -> Self {
        DataFrame::default()
    }

    /// A frame holding `values`.
    pub fn from_values(values: Vec<Value>) -> Self {
        DataFrame { values }
    }

    /// The values in order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Takes the values out.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the frame has no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Appends any value.
    pub fn push(&mut self, v: impl Into<Value>) -> &mut Self {
        self.values.push(v.into());
        self
    }

    writers! {
        /// Appends a boolean.
        write_bool(bool) => Bool;
        /// Appends an `i8`.
        write_i8(i8) => I8;
        /// Appends an `i16`.
        write_i16(i16) => I16;
        /// Appends an `i32`.
        write_i32(i32) => I32;
        /// Appends an `i64`.
        write_i64(i64) => I64;
        /// Appends a `u8`.
        write_u8(u8) => U8;
        /// Appends a `u16`.
        write_u16(u16) => U16;
        /// Appends a `u32`.
        write_u32(u32) => U32;
        /// Appends a `u64`.
        write_u64(u64) => U64;
        /// Appends an `f32`.
        write_f32(f32) => F32;
        /// Appends an `f64`.
        write_f64(f64) => F64;
        /// Appends a string.
        write_str(impl Into<String>) => Str;
        /// Appends raw bytes.
        write_bytes(impl Into<Bytes>) => Bytes;
        /// Appends an array of values.
        write_array(Vec<Value>) => Array;
    }

    /// Appends a nested DataFrame.
    pub fn write_frame(&mut self, frame: DataFrame) -> &mut Self {
        self.values.push(Value::Array(frame.values));
        self
    }

    /// Appends a JSON-like document.
    pub fn write_json(&mut self, doc: &serde_json::Value) -> &mut Self {
        self.values.push(Value::from_json(doc));
        self
    }

    /// Appends any `Serialize` value (structs become maps keyed by field name).
    pub fn write_serde<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<&mut Self, SerdeError> {
        let bytes = rmp_serde::to_vec_named(v).map_err(|e| SerdeError(e.to_string()))?;
        let bytes = Bytes::from(bytes);
        let limits = Limits::default();
        let mut dec = codec::Decoder::new(&bytes, &limits);
        let value = dec.value(0).map_err(|e| SerdeError(e.to_string()))?;
        self.values.push(value);
        Ok(self)
    }

    /// A reader positioned at the first value.
    pub fn reader(&self) -> Reader<'_> {
        Reader::new(&self.values)
    }

    /// Appends the MessagePack encoding to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        encode_array(&self.values, out);
    }

    /// The MessagePack encoding.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes a frame, enforcing depth and element limits; byte values share `data`.
    pub fn decode(data: &Bytes, limits: &Limits) -> Result<DataFrame, WireError> {
        let mut dec = codec::Decoder::new(data, limits);
        let values = dec.values(0)?;
        if !dec.at_end() {
            return Err(WireError::Malformed { what: "DataFrame", why: "bytes after the value array" });
        }
        Ok(DataFrame { values })
    }

    /// The JSON view: an array of the values (see [`Value::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.values.iter().map(Value::to_json).collect())
    }
}

/// Encodes values as one MessagePack array.
fn encode_array(values: &[Value], out: &mut BytesMut) {
    use bytes::BufMut;
    let w = &mut out.writer();
    let r = rmp::encode::write_array_len(w, values.len() as u32);
    debug_assert!(r.is_ok());
    values.iter().for_each(|v| codec::encode_value(v, w.get_mut()));
}

/// Decodes one value of a serde type from a DataFrame value.
pub(crate) fn from_value<T: DeserializeOwned>(v: &Value) -> Result<T, String> {
    let mut buf = BytesMut::new();
    codec::encode_value(v, &mut buf);
    rmp_serde::from_slice(&buf).map_err(|e| e.to_string())
}

impl From<Vec<Value>> for DataFrame {
    fn from(values: Vec<Value>) -> Self {
        DataFrame { values }
    }
}

#[cfg(test)]
mod tests;
