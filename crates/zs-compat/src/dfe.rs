//! DataFrameEngine (TDFE): the original's positional container of typed elements.
//!
//! ```text
//! edition u8 (FF: 32-bit sizes, FA: 64-bit) | size u32/u64 | compToken u8
//! | [uncompressed size u32/u64, if compToken != 0] | md5 16 B (zero in "fast" mode)
//! | body: count i32, then count × (type u8 + element)
//! ```
//! compToken 0 raw, 1/11 zlib, 4/44 parallel container (the second digit: 64-bit size);
//! Deflate and BRRC (2/22, 3/33) are the original's own codecs and are refused.

use bytes::Bytes;
use zs_wire::{DataFrame, Value};

use crate::compress;
use crate::CompatError;

const WHAT: &str = "DataFrameEngine";
/// Bodies above this are compressed with the parallel container, below it with zlib.
const ZLIB_MAX: usize = 64 << 10;

/// One element of a DataFrameEngine, by the original's type ids.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    /// 0: UTF-8 text.
    String(String),
    /// 1: i32.
    Integer(i32),
    /// 3: u16.
    Word(u16),
    /// 4: u8 (also how booleans are written).
    Byte(u8),
    /// 5: f32.
    Single(f32),
    /// 6: f64.
    Double(f64),
    /// 7: i32 array.
    ArrayInteger(Vec<i32>),
    /// 8: f32 array.
    ArraySingle(Vec<f32>),
    /// 9: f64 array.
    ArrayDouble(Vec<f64>),
    /// 10: bytes (a nested DataFrameEngine, JSON text, a file...).
    Stream(Bytes),
    /// 11: a Delphi variant.
    Variant(Variant),
    /// 12: i64.
    Int64(i64),
    /// 13: i8 array.
    ArrayShortInt(Vec<i8>),
    /// 14: u32.
    Cardinal(u32),
    /// 15: u64.
    UInt64(u64),
    /// 16: bytes (an MD5, a key).
    ArrayByte(Bytes),
    /// 17: i64 array.
    ArrayInt64(Vec<i64>),
}

/// A Delphi variant element (u16 VarType + value).
#[derive(Debug, Clone, PartialEq)]
pub enum Variant {
    /// varEmpty (0).
    Empty,
    /// varNull (1).
    Null,
    /// varSmallint (2).
    I16(i16),
    /// varInteger (3).
    I32(i32),
    /// varSingle (4).
    F32(f32),
    /// varDouble (5).
    F64(f64),
    /// varCurrency (6): fixed point, 4 decimals, as the raw i64.
    Currency(i64),
    /// varBoolean (0x0B).
    Bool(bool),
    /// varShortInt (0x10).
    I8(i8),
    /// varByte (0x11).
    U8(u8),
    /// varWord (0x12).
    U16(u16),
    /// varLongWord (0x13).
    U32(u32),
    /// varInt64 (0x14).
    I64(i64),
    /// varUInt64 (0x15).
    U64(u64),
    /// A string: varOleStr (8), varString (0x100, FPC) or varUString (0x102, Delphi).
    Str {
        /// Which of the three string VarTypes.
        var_type: u16,
        /// The text.
        text: String,
    },
}

/// A DataFrameEngine: elements in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dfe {
    /// The elements, read positionally.
    pub elements: Vec<Element>,
}

/// A bounds-checked little-endian reader.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8], what: &'static str) -> Self {
        Cursor { data, what }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CompatError> {
        if n > self.data.len() {
            return Err(CompatError::malformed(
                self.what,
                format!("needs {n} more bytes, {} left", self.data.len()),
            ));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CompatError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, CompatError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CompatError> {
        self.array().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Result<u32, CompatError> {
        self.array().map(u32::from_le_bytes)
    }
    pub(crate) fn i32(&mut self) -> Result<i32, CompatError> {
        self.array().map(i32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, CompatError> {
        self.array().map(u64::from_le_bytes)
    }
    pub(crate) fn i64(&mut self) -> Result<i64, CompatError> {
        self.array().map(i64::from_le_bytes)
    }
    /// An i32 length, checked against what is left (each item `item` bytes).
    fn len(&mut self, item: usize) -> Result<usize, CompatError> {
        let n = self.i32()?;
        let n = usize::try_from(n).map_err(|_| CompatError::malformed(self.what, "negative length"))?;
        if n.saturating_mul(item) > self.data.len() {
            return Err(CompatError::malformed(self.what, format!("length {n} runs past the end")));
        }
        Ok(n)
    }
    fn items<T, const N: usize>(&mut self, f: fn([u8; N]) -> T) -> Result<Vec<T>, CompatError> {
        let n = self.len(N)?;
        (0..n).map(|_| self.array().map(f)).collect()
    }
    fn string(&mut self) -> Result<String, CompatError> {
        let n = self.len(1)?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn bytes(&mut self) -> Result<Bytes, CompatError> {
        let n = self.len(1)?;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as i32).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

macro_rules! put_items {
    ($out:expr, $v:expr) => {{
        put_len($out, $v.len());
        for x in $v {
            $out.extend_from_slice(&x.to_le_bytes());
        }
    }};
}

impl Element {
    /// The original's type id.
    pub fn type_id(&self) -> u8 {
        match self {
            Element::String(_) => 0,
            Element::Integer(_) => 1,
            Element::Word(_) => 3,
            Element::Byte(_) => 4,
            Element::Single(_) => 5,
            Element::Double(_) => 6,
            Element::ArrayInteger(_) => 7,
            Element::ArraySingle(_) => 8,
            Element::ArrayDouble(_) => 9,
            Element::Stream(_) => 10,
            Element::Variant(_) => 11,
            Element::Int64(_) => 12,
            Element::ArrayShortInt(_) => 13,
            Element::Cardinal(_) => 14,
            Element::UInt64(_) => 15,
            Element::ArrayByte(_) => 16,
            Element::ArrayInt64(_) => 17,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.type_id());
        match self {
            Element::String(s) => put_str(out, s),
            Element::Integer(v) => out.extend_from_slice(&v.to_le_bytes()),
            Element::Word(v) => out.extend_from_slice(&v.to_le_bytes()),
            Element::Byte(v) => out.push(*v),
            Element::Single(v) => out.extend_from_slice(&v.to_le_bytes()),
            Element::Double(v) => out.extend_from_slice(&v.to_le_bytes()),
            Element::ArrayInteger(v) => put_items!(out, v),
            Element::ArraySingle(v) => put_items!(out, v),
            Element::ArrayDouble(v) => put_items!(out, v),
            Element::Stream(b) | Element::ArrayByte(b) => {
                put_len(out, b.len());
                out.extend_from_slice(b);
            }
            Element::Variant(v) => v.encode(out),
            Element::Int64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Element::ArrayShortInt(v) => put_items!(out, v),
            Element::Cardinal(v) => out.extend_from_slice(&v.to_le_bytes()),
            Element::UInt64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Element::ArrayInt64(v) => put_items!(out, v),
        }
    }

    fn decode(r: &mut Cursor<'_>) -> Result<Element, CompatError> {
        Ok(match r.u8()? {
            0 => Element::String(r.string()?),
            1 => Element::Integer(r.i32()?),
            3 => Element::Word(r.u16()?),
            4 => Element::Byte(r.u8()?),
            5 => Element::Single(f32::from_le_bytes(r.array()?)),
            6 => Element::Double(f64::from_le_bytes(r.array()?)),
            7 => Element::ArrayInteger(r.items(i32::from_le_bytes)?),
            8 => Element::ArraySingle(r.items(f32::from_le_bytes)?),
            9 => Element::ArrayDouble(r.items(f64::from_le_bytes)?),
            10 => Element::Stream(r.bytes()?),
            11 => Element::Variant(Variant::decode(r)?),
            12 => Element::Int64(r.i64()?),
            13 => Element::ArrayShortInt(r.items(i8::from_le_bytes)?),
            14 => Element::Cardinal(r.u32()?),
            15 => Element::UInt64(r.u64()?),
            16 => Element::ArrayByte(r.bytes()?),
            17 => Element::ArrayInt64(r.items(i64::from_le_bytes)?),
            t => return Err(CompatError::malformed(WHAT, format!("unknown element type {t}"))),
        })
    }
}

impl Variant {
    fn encode(&self, out: &mut Vec<u8>) {
        let (vt, value): (u16, Vec<u8>) = match self {
            Variant::Empty => (0, vec![]),
            Variant::Null => (1, vec![]),
            Variant::I16(v) => (2, v.to_le_bytes().to_vec()),
            Variant::I32(v) => (3, v.to_le_bytes().to_vec()),
            Variant::F32(v) => (4, v.to_le_bytes().to_vec()),
            Variant::F64(v) => (5, v.to_le_bytes().to_vec()),
            Variant::Currency(v) => (6, v.to_le_bytes().to_vec()),
            Variant::Bool(v) => (0x0B, vec![*v as u8]),
            Variant::I8(v) => (0x10, v.to_le_bytes().to_vec()),
            Variant::U8(v) => (0x11, vec![*v]),
            Variant::U16(v) => (0x12, v.to_le_bytes().to_vec()),
            Variant::U32(v) => (0x13, v.to_le_bytes().to_vec()),
            Variant::I64(v) => (0x14, v.to_le_bytes().to_vec()),
            Variant::U64(v) => (0x15, v.to_le_bytes().to_vec()),
            Variant::Str { var_type, text } => {
                let mut b = (text.len() as u32).to_le_bytes().to_vec();
                b.extend_from_slice(text.as_bytes());
                (*var_type, b)
            }
        };
        out.extend_from_slice(&vt.to_le_bytes());
        out.extend_from_slice(&value);
    }

    fn decode(r: &mut Cursor<'_>) -> Result<Variant, CompatError> {
        Ok(match r.u16()? {
            0 => Variant::Empty,
            1 => Variant::Null,
            2 => Variant::I16(i16::from_le_bytes(r.array()?)),
            3 => Variant::I32(r.i32()?),
            4 => Variant::F32(f32::from_le_bytes(r.array()?)),
            5 => Variant::F64(f64::from_le_bytes(r.array()?)),
            6 => Variant::Currency(r.i64()?),
            0x0B => Variant::Bool(r.u8()? != 0),
            0x10 => Variant::I8(r.u8()? as i8),
            0x11 => Variant::U8(r.u8()?),
            0x12 => Variant::U16(r.u16()?),
            0x13 => Variant::U32(r.u32()?),
            0x14 => Variant::I64(r.i64()?),
            0x15 => Variant::U64(r.u64()?),
            vt @ (8 | 0x100 | 0x102) => {
                let n = r.u32()? as usize;
                Variant::Str { var_type: vt, text: String::from_utf8_lossy(r.take(n)?).into_owned() }
            }
            vt => return Err(CompatError::malformed(WHAT, format!("variant type {vt:#x} not supported"))),
        })
    }
}

impl Dfe {
    /// An empty DataFrameEngine.
    pub fn new() -> Self {
        Dfe::default()
    }

    /// Appends an element.
    pub fn push(&mut self, e: Element) -> &mut Self {
        self.elements.push(e);
        self
    }

    fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4 + self.elements.len() * 8);
        put_len(&mut body, self.elements.len());
        for e in &self.elements {
            e.encode(&mut body);
        }
        body
    }

    /// The "fast" encoding the original sends: 32-bit sizes, uncompressed, MD5 zero.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.body();
        let mut out = Vec::with_capacity(22 + body.len());
        out.push(0xFF);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.push(0);
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&body);
        out
    }

    /// The original's `EncodeAsSelectCompressor(fast)`: zlib (token 1) up to 64 KiB of
    /// body, the parallel container (token 4) above.
    pub fn encode_compressed(&self) -> Vec<u8> {
        let body = self.body();
        let (token, packed) = if body.len() <= ZLIB_MAX {
            (1, compress::zlib(&body))
        } else {
            (4, compress::parallel_compress(&body))
        };
        let mut out = Vec::with_capacity(26 + packed.len());
        out.push(0xFF);
        out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        out.push(token);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&packed);
        out
    }

    /// Decodes a DataFrameEngine at the front of `data` (bytes after it are ignored); a
    /// compressed body may inflate to at most `limit` bytes.
    pub fn decode(data: &[u8], limit: u64) -> Result<Dfe, CompatError> {
        let mut r = Cursor::new(data, WHAT);
        let wide = match r.u8()? {
            0xFF => false,
            0xFA => true,
            e => return Err(CompatError::malformed(WHAT, format!("unknown edition {e:#04x}"))),
        };
        let size = if wide { r.u64()? } else { r.u32()? as u64 };
        let token = r.u8()?;
        let raw_size = match token {
            0 => size,
            1 | 4 => r.u32()? as u64,
            11 | 44 => r.u64()?,
            2 | 22 | 3 | 33 => {
                return Err(CompatError::malformed(WHAT, "Deflate and BRRC compression are not supported"))
            }
            t => return Err(CompatError::malformed(WHAT, format!("unknown compression token {t}"))),
        };
        r.take(16)?; // MD5: zero in fast mode, and the original's framework never checks it.
        let packed = r.take(usize::try_from(size).unwrap_or(usize::MAX))?;
        let inflated;
        let body = match token {
            0 => packed,
            1 | 11 => {
                inflated = compress::unzlib(packed, raw_size, limit)?;
                &inflated[..]
            }
            _ => {
                inflated = compress::parallel_decompress(packed, raw_size, limit)?;
                &inflated[..]
            }
        };
        let mut r = Cursor::new(body, WHAT);
        let count = r.len(1)?;
        let elements = (0..count).map(|_| Element::decode(&mut r)).collect::<Result<_, _>>()?;
        Ok(Dfe { elements })
    }

    /// The same values as a zserver `DataFrame` (Stream and ArrayByte become bytes, arrays
    /// become arrays, variants their value).
    pub fn to_dataframe(&self) -> DataFrame {
        DataFrame::from_values(self.elements.iter().map(Element::to_value).collect())
    }

    /// A zserver `DataFrame` as a DataFrameEngine: each value as the element type a
    /// ZServer4D reader expects for it (see `docs/COMPAT.md`).
    pub fn from_dataframe(frame: &DataFrame) -> Dfe {
        Dfe { elements: frame.values().iter().map(Element::from_value).collect() }
    }
}

impl Element {
    /// This element as a zserver `Value`.
    pub fn to_value(&self) -> Value {
        match self {
            Element::String(s) => Value::Str(s.clone()),
            Element::Integer(v) => Value::I32(*v),
            Element::Word(v) => Value::U16(*v),
            Element::Byte(v) => Value::U8(*v),
            Element::Single(v) => Value::F32(*v),
            Element::Double(v) => Value::F64(*v),
            Element::ArrayInteger(v) => Value::Array(v.iter().map(|x| Value::I32(*x)).collect()),
            Element::ArraySingle(v) => Value::Array(v.iter().map(|x| Value::F32(*x)).collect()),
            Element::ArrayDouble(v) => Value::Array(v.iter().map(|x| Value::F64(*x)).collect()),
            Element::Stream(b) | Element::ArrayByte(b) => Value::Bytes(b.clone()),
            Element::Variant(v) => match v {
                Variant::Empty | Variant::Null => Value::Nil,
                Variant::I16(x) => Value::I16(*x),
                Variant::I32(x) => Value::I32(*x),
                Variant::F32(x) => Value::F32(*x),
                Variant::F64(x) => Value::F64(*x),
                Variant::Currency(x) => Value::F64(*x as f64 / 10_000.0),
                Variant::Bool(x) => Value::Bool(*x),
                Variant::I8(x) => Value::I8(*x),
                Variant::U8(x) => Value::U8(*x),
                Variant::U16(x) => Value::U16(*x),
                Variant::U32(x) => Value::U32(*x),
                Variant::I64(x) => Value::I64(*x),
                Variant::U64(x) => Value::U64(*x),
                Variant::Str { text, .. } => Value::Str(text.clone()),
            },
            Element::Int64(v) => Value::I64(*v),
            Element::ArrayShortInt(v) => Value::Array(v.iter().map(|x| Value::I8(*x)).collect()),
            Element::Cardinal(v) => Value::U32(*v),
            Element::UInt64(v) => Value::U64(*v),
            Element::ArrayInt64(v) => Value::Array(v.iter().map(|x| Value::I64(*x)).collect()),
        }
    }

    /// A zserver `Value` as the element a ZServer4D reader expects: booleans as Byte (as
    /// `WriteBool` does), small signed integers as Integer, nil as an empty variant,
    /// uniform numeric arrays as the matching array type, other arrays as a nested
    /// DataFrameEngine in a Stream, maps as JSON text in a Stream (as `WriteJson` does).
    pub fn from_value(v: &Value) -> Element {
        match v {
            Value::Nil => Element::Variant(Variant::Empty),
            Value::Bool(b) => Element::Byte(*b as u8),
            Value::I8(x) => Element::Integer(*x as i32),
            Value::I16(x) => Element::Integer(*x as i32),
            Value::I32(x) => Element::Integer(*x),
            Value::I64(x) => Element::Int64(*x),
            Value::U8(x) => Element::Byte(*x),
            Value::U16(x) => Element::Word(*x),
            Value::U32(x) => Element::Cardinal(*x),
            Value::U64(x) => Element::UInt64(*x),
            Value::F32(x) => Element::Single(*x),
            Value::F64(x) => Element::Double(*x),
            Value::Str(s) => Element::String(s.clone()),
            Value::Bytes(b) => Element::Stream(b.clone()),
            Value::Array(items) => uniform_array(items).unwrap_or_else(|| {
                Element::Stream(
                    Dfe { elements: items.iter().map(Element::from_value).collect() }.encode().into(),
                )
            }),
            Value::Map(_) => Element::Stream(v.to_json().to_string().into()),
        }
    }
}

/// A non-empty array whose items are all of one numeric type with a DFE array type.
fn uniform_array(items: &[Value]) -> Option<Element> {
    macro_rules! all {
        ($variant:ident, $element:ident) => {
            items
                .iter()
                .map(|v| if let Value::$variant(x) = v { Some(*x) } else { None })
                .collect::<Option<Vec<_>>>()
                .map(Element::$element)
        };
    }
    match items.first()? {
        Value::I32(_) => all!(I32, ArrayInteger),
        Value::F32(_) => all!(F32, ArraySingle),
        Value::F64(_) => all!(F64, ArrayDouble),
        Value::I8(_) => all!(I8, ArrayShortInt),
        Value::I64(_) => all!(I64, ArrayInt64),
        _ => None,
    }
}
