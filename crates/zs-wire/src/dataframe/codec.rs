//! MessagePack encoding of values. Encoding uses `rmp`'s strict fixed-width writers so a
//! value's width is kept; decoding accepts any MessagePack a foreign encoder produces
//! (compact integers included) except ext types, within [`Limits`].

use bytes::{BufMut, Bytes, BytesMut};
use rmp::Marker;

use super::Value;
use crate::{Limits, WireError};

/// Writing into memory cannot fail; `rmp` reports errors only because it serves real writers.
fn infallible<T, E: std::fmt::Debug>(r: Result<T, E>) {
    debug_assert!(r.is_ok(), "writing MessagePack into memory failed: {:?}", r.err());
}

/// Appends the MessagePack encoding of `v` to `out`.
pub(crate) fn encode_value(v: &Value, out: &mut BytesMut) {
    use rmp::encode as e;
    let w = &mut out.writer();
    match v {
        Value::Nil => infallible(e::write_nil(w)),
        Value::Bool(b) => infallible(e::write_bool(w, *b)),
        Value::I8(x) => infallible(e::write_i8(w, *x)),
        Value::I16(x) => infallible(e::write_i16(w, *x)),
        Value::I32(x) => infallible(e::write_i32(w, *x)),
        Value::I64(x) => infallible(e::write_i64(w, *x)),
        Value::U8(x) => infallible(e::write_u8(w, *x)),
        Value::U16(x) => infallible(e::write_u16(w, *x)),
        Value::U32(x) => infallible(e::write_u32(w, *x)),
        Value::U64(x) => infallible(e::write_u64(w, *x)),
        Value::F32(x) => infallible(e::write_f32(w, *x)),
        Value::F64(x) => infallible(e::write_f64(w, *x)),
        Value::Str(s) => infallible(e::write_str(w, s)),
        Value::Bytes(b) => infallible(e::write_bin(w, b)),
        Value::Array(a) => {
            infallible(e::write_array_len(w, a.len() as u32));
            a.iter().for_each(|x| encode_value(x, w.get_mut()));
        }
        Value::Map(m) => {
            infallible(e::write_map_len(w, m.len() as u32));
            for (k, x) in m {
                encode_value(k, w.get_mut());
                encode_value(x, w.get_mut());
            }
        }
    }
}

/// Decodes values from a buffer, sharing it for byte strings.
pub(crate) struct Decoder<'a> {
    data: &'a Bytes,
    pos: usize,
    limits: &'a Limits,
    elements: u32,
}

const WHAT: &str = "DataFrame";

impl<'a> Decoder<'a> {
    pub(crate) fn new(data: &'a Bytes, limits: &'a Limits) -> Self {
        Decoder { data, pos: 0, limits, elements: 0 }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.data.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let data: &'a [u8] = self.data;
        let end = self.pos.checked_add(n).filter(|&e| e <= data.len());
        let end = end.ok_or(WireError::Malformed { what: WHAT, why: "value runs past the end" })?;
        let s = &data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// The length that follows a str, bin, array or map marker of 8, 16 or 32 bits.
    fn var_len(&mut self, m: Marker) -> Result<usize, WireError> {
        Ok(match m {
            Marker::Str8 | Marker::Bin8 => self.be::<1>()?[0] as usize,
            Marker::Str16 | Marker::Bin16 | Marker::Array16 | Marker::Map16 => {
                u16::from_be_bytes(self.be()?) as usize
            }
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    fn count(&mut self, n: usize) -> Result<(), WireError> {
        let total = (self.elements as usize).saturating_add(n);
        if total > self.limits.max_elements as usize {
            return Err(WireError::TooManyElements(self.limits.max_elements));
        }
        self.elements = total as u32;
        Ok(())
    }

    fn string(&mut self, n: usize) -> Result<Value, WireError> {
        let s = crate::body::utf8(self.take(n)?).map_err(|_| WireError::InvalidUtf8("DataFrame string"))?;
        Ok(Value::Str(s.to_owned()))
    }

    fn bytes(&mut self, n: usize) -> Result<Value, WireError> {
        let start = self.pos;
        self.take(n)?;
        Ok(Value::Bytes(self.data.slice(start..start + n)))
    }

    /// Reads an array header and returns its length.
    pub(crate) fn array_len(&mut self) -> Result<usize, WireError> {
        let m = Marker::from_u8(self.be::<1>()?[0]);
        match m {
            Marker::FixArray(n) => Ok(n as usize),
            Marker::Array16 | Marker::Array32 => self.var_len(m),
            _ => Err(WireError::Malformed { what: WHAT, why: "does not start with an array" }),
        }
    }

    fn array(&mut self, n: usize, depth: u16) -> Result<Vec<Value>, WireError> {
        self.count(n)?;
        // Every value takes at least one byte: never reserve more than the bytes left.
        let mut v = Vec::with_capacity(n.min(self.data.len() - self.pos));
        for _ in 0..n {
            v.push(self.value(depth)?);
        }
        Ok(v)
    }

    fn map(&mut self, n: usize, depth: u16) -> Result<Value, WireError> {
        self.count(n.saturating_mul(2))?;
        let mut v = Vec::with_capacity(n.min((self.data.len() - self.pos) / 2));
        for _ in 0..n {
            let k = self.value(depth)?;
            let x = self.value(depth)?;
            v.push((k, x));
        }
        Ok(Value::Map(v))
    }

    /// Reads a whole array of values at nesting level `depth`.
    pub(crate) fn values(&mut self, depth: u16) -> Result<Vec<Value>, WireError> {
        let n = self.array_len()?;
        self.array(n, depth)
    }

    /// Reads one value at nesting level `depth`.
    pub(crate) fn value(&mut self, depth: u16) -> Result<Value, WireError> {
        let m = Marker::from_u8(self.be::<1>()?[0]);
        let nested = |d: &Self| {
            if depth >= d.limits.max_depth {
                Err(WireError::TooDeep(d.limits.max_depth))
            } else {
                Ok(depth + 1)
            }
        };
        Ok(match m {
            Marker::Null => Value::Nil,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::FixPos(n) => Value::U8(n),
            Marker::FixNeg(n) => Value::I8(n),
            Marker::U8 => Value::U8(self.be::<1>()?[0]),
            Marker::U16 => Value::U16(u16::from_be_bytes(self.be()?)),
            Marker::U32 => Value::U32(u32::from_be_bytes(self.be()?)),
            Marker::U64 => Value::U64(u64::from_be_bytes(self.be()?)),
            Marker::I8 => Value::I8(i8::from_be_bytes(self.be()?)),
            Marker::I16 => Value::I16(i16::from_be_bytes(self.be()?)),
            Marker::I32 => Value::I32(i32::from_be_bytes(self.be()?)),
            Marker::I64 => Value::I64(i64::from_be_bytes(self.be()?)),
            Marker::F32 => Value::F32(f32::from_be_bytes(self.be()?)),
            Marker::F64 => Value::F64(f64::from_be_bytes(self.be()?)),
            Marker::FixStr(n) => self.string(n as usize)?,
            Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let n = self.var_len(m)?;
                self.string(n)?
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = self.var_len(m)?;
                self.bytes(n)?
            }
            Marker::FixArray(n) => Value::Array(self.array(n as usize, nested(self)?)?),
            Marker::Array16 | Marker::Array32 => {
                let n = self.var_len(m)?;
                Value::Array(self.array(n, nested(self)?)?)
            }
            Marker::FixMap(n) => self.map(n as usize, nested(self)?)?,
            Marker::Map16 | Marker::Map32 => {
                let n = self.var_len(m)?;
                self.map(n, nested(self)?)?
            }
            other => return Err(WireError::UnsupportedMarker(other.to_u8())),
        })
    }
}
