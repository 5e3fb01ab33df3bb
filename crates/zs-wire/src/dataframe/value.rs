//! One typed DataFrame value and its JSON view.

use bytes::Bytes;

/// A typed value. Integer and float widths survive the round trip because each is
/// encoded with its own fixed-width MessagePack marker.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (MessagePack nil, JSON null).
    Nil,
    /// A boolean.
    Bool(bool),
    /// Signed 8-bit integer.
    I8(i8),
    /// Signed 16-bit integer.
    I16(i16),
    /// Signed 32-bit integer.
    I32(i32),
    /// Signed 64-bit integer.
    I64(i64),
    /// Unsigned 8-bit integer.
    U8(u8),
    /// Unsigned 16-bit integer.
    U16(u16),
    /// Unsigned 32-bit integer.
    U32(u32),
    /// Unsigned 64-bit integer.
    U64(u64),
    /// 32-bit float.
    F32(f32),
    /// 64-bit float.
    F64(f64),
    /// UTF-8 text.
    Str(String),
    /// Raw bytes (shares the received frame when decoded).
    Bytes(Bytes),
    /// An ordered list; a nested DataFrame is stored as one.
    Array(Vec<Value>),
    /// A document node: key/value pairs in order (JSON-like objects).
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The type's name, as used in read errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::I8(_) => "i8",
            Value::I16(_) => "i16",
            Value::I32(_) => "i32",
            Value::I64(_) => "i64",
            Value::U8(_) => "u8",
            Value::U16(_) => "u16",
            Value::U32(_) => "u32",
            Value::U64(_) => "u64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }

    /// The value as a wide integer, if it is an integer of any width.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::I8(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::I64(v) => v.into(),
            Value::U8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::U64(v) => v.into(),
            _ => return None,
        })
    }

    /// The JSON view: bytes become an array of numbers, non-string map keys their JSON
    /// text, non-finite floats null.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Nil => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
            Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Bytes(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Value::Str(s) => s.clone(),
                            other => other.to_json().to_string(),
                        };
                        (key, v.to_json())
                    })
                    .collect(),
            ),
            int => match int.as_i128() {
                Some(i) if i < 0 => J::from(i as i64),
                Some(i) => J::from(i as u64),
                None => J::Null,
            },
        }
    }

    /// Builds a value from JSON: integers become `I64` (or `U64` above `i64::MAX`), other
    /// numbers `F64`, objects `Map` with string keys.
    pub fn from_json(j: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Nil,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::I64(i)
                } else if let Some(u) = n.as_u64() {
                    Value::U64(u)
                } else {
                    Value::F64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Value::Str(s.clone()),
            J::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            J::Object(o) => {
                Value::Map(o.iter().map(|(k, v)| (Value::Str(k.clone()), Value::from_json(v))).collect())
            }
        }
    }
}

macro_rules! from_impls {
    ($($t:ty => $v:ident),*) => { $(impl From<$t> for Value { fn from(x: $t) -> Self { Value::$v(x.into()) } })* };
}
from_impls!(bool => Bool, i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16,
    u32 => U32, u64 => U64, f32 => F32, f64 => F64, String => Str, &str => Str, Bytes => Bytes,
    Vec<u8> => Bytes, Vec<Value> => Array);
