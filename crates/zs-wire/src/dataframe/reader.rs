//! Positional, typed reads from a DataFrame.

use serde::de::DeserializeOwned;

use super::{DataFrame, Value};

/// Why a typed read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No value is left at the reader's position.
    #[error("end of data: wanted {wanted} at index {index}, the frame has {len} values")]
    EndOfData {
        /// Position of the read.
        index: usize,
        /// The type asked for.
        wanted: &'static str,
        /// Number of values in the frame.
        len: usize,
    },
    /// The value at the position has another type.
    #[error("type mismatch at index {index}: wanted {wanted}, found {found}")]
    TypeMismatch {
        /// Position of the read.
        index: usize,
        /// The type asked for.
        wanted: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// An integer that does not fit the type asked for.
    #[error("value at index {index} is out of range for {wanted}")]
    OutOfRange {
        /// Position of the read.
        index: usize,
        /// The type asked for.
        wanted: &'static str,
    },
    /// A serde conversion failed.
    #[error("cannot read {wanted} at index {index}: {message}")]
    Serde {
        /// Position of the read.
        index: usize,
        /// The type asked for.
        wanted: &'static str,
        /// The serde error.
        message: String,
    },
}

/// Reads the values of a DataFrame in order.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    values: &'a [Value],
    index: usize,
}

macro_rules! int_readers {
    ($($(#[$m:meta])* $fn:ident -> $t:ty;)*) => {$(
        $(#[$m])*
        /// Any integer value that fits is accepted; others fail with `OutOfRange`.
        pub fn $fn(&mut self) -> Result<$t, ReadError> {
            let wanted = stringify!($t);
            let (index, v) = self.next(wanted)?;
            let r = match v.as_i128() {
                None => Err(ReadError::TypeMismatch { index, wanted, found: v.type_name() }),
                Some(i) => <$t>::try_from(i).map_err(|_| ReadError::OutOfRange { index, wanted }),
            };
            if r.is_err() {
                self.index = index;
            }
            r
        }
    )*};
}

impl<'a> Reader<'a> {
    pub(crate) fn new(values: &'a [Value]) -> Self {
        Reader { values, index: 0 }
    }

    /// Position of the next read.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Values left to read.
    pub fn remaining(&self) -> usize {
        self.values.len() - self.index
    }

    fn next(&mut self, wanted: &'static str) -> Result<(usize, &'a Value), ReadError> {
        let index = self.index;
        let v =
            self.values.get(index).ok_or(ReadError::EndOfData { index, wanted, len: self.values.len() })?;
        self.index += 1;
        Ok((index, v))
    }

    fn typed<T>(
        &mut self,
        wanted: &'static str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T, ReadError> {
        let (index, v) = self.next(wanted)?;
        match f(v) {
            Some(x) => Ok(x),
            None => {
                self.index = index;
                Err(ReadError::TypeMismatch { index, wanted, found: v.type_name() })
            }
        }
    }

    /// Reads the next value whatever its type.
    pub fn read_value(&mut self) -> Result<&'a Value, ReadError> {
        Ok(self.next("a value")?.1)
    }

    /// Reads a boolean.
    pub fn read_bool(&mut self) -> Result<bool, ReadError> {
        self.typed("bool", |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
    }

    int_readers! {
        /// Reads an `i8`.
        read_i8 -> i8;
        /// Reads an `i16`.
        read_i16 -> i16;
        /// Reads an `i32`.
        read_i32 -> i32;
        /// Reads an `i64`.
        read_i64 -> i64;
        /// Reads a `u8`.
        read_u8 -> u8;
        /// Reads a `u16`.
        read_u16 -> u16;
        /// Reads a `u32`.
        read_u32 -> u32;
        /// Reads a `u64`.
        read_u64 -> u64;
    }

    /// Reads an `f32` (an `f64` is narrowed).
    pub fn read_f32(&mut self) -> Result<f32, ReadError> {
        self.typed("f32", |v| match v {
            Value::F32(f) => Some(*f),
            Value::F64(f) => Some(*f as f32),
            _ => None,
        })
    }

    /// Reads an `f64` (an `f32` is widened).
    pub fn read_f64(&mut self) -> Result<f64, ReadError> {
        self.typed("f64", |v| match v {
            Value::F32(f) => Some(f64::from(*f)),
            Value::F64(f) => Some(*f),
            _ => None,
        })
    }

    /// Reads a string.
    pub fn read_str(&mut self) -> Result<&'a str, ReadError> {
        self.typed("string", |v| match v {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// Reads raw bytes.
    pub fn read_bytes(&mut self) -> Result<&'a [u8], ReadError> {
        self.typed("bytes", |v| match v {
            Value::Bytes(b) => Some(&b[..]),
            _ => None,
        })
    }

    /// Reads an array of values.
    pub fn read_array(&mut self) -> Result<&'a [Value], ReadError> {
        self.typed("array", |v| match v {
            Value::Array(a) => Some(&a[..]),
            _ => None,
        })
    }

    /// Reads a nested DataFrame.
    pub fn read_frame(&mut self) -> Result<DataFrame, ReadError> {
        self.typed("DataFrame", |v| match v {
            Value::Array(a) => Some(DataFrame::from_values(a.clone())),
            _ => None,
        })
    }

    /// Reads any value as a JSON-like document.
    pub fn read_json(&mut self) -> Result<serde_json::Value, ReadError> {
        Ok(self.next("document")?.1.to_json())
    }

    /// Reads any `Deserialize` type.
    pub fn read_serde<T: DeserializeOwned>(&mut self) -> Result<T, ReadError> {
        let wanted = std::any::type_name::<T>();
        let (index, v) = self.next(wanted)?;
        super::from_value(v).map_err(|message| {
            self.index = index;
            ReadError::Serde { index, wanted, message }
        })
    }
}
