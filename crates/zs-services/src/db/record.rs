//! A record as the data store keeps it: a stable id, a version that every change raises, an
//! optional expiry, and a typed value (a JSON document, bytes, or an encoded DataFrame).
//!
//! On disk (the value under its id): `[1][kind][version u64 LE][expires_at u64 LE][data]`,
//! `expires_at` 0 for never, `data` JSON text, raw bytes or a DataFrame's encoding.

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use zs::wire::{DataFrame, Limits};

/// The on-disk format's first byte.
const FORMAT: u8 = 1;
/// Bytes before the data.
const HEAD: usize = 18;

/// What a record holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A JSON document (its fields are what predicates and indexes see).
    Json(Value),
    /// Opaque bytes.
    Bytes(Vec<u8>),
    /// A DataFrame, encoded (its items are fields `@0`, `@1`...).
    Frame(Vec<u8>),
}

impl Data {
    /// Its value as the encoding carries it (JSON text, the bytes, the DataFrame).
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Data::Json(v) => serde_json::to_vec(v).expect("a JSON value always serialises"),
            Data::Bytes(b) | Data::Frame(b) => b.clone(),
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Data::Json(_) => 1,
            Data::Bytes(_) => 2,
            Data::Frame(_) => 3,
        }
    }

    /// Its fields as a predicate sees them: the document, a frame's items as an array, or
    /// `null` for bytes.
    pub fn fields(&self) -> Value {
        match self {
            Data::Json(v) => v.clone(),
            Data::Bytes(_) => Value::Null,
            Data::Frame(b) => DataFrame::decode(&Bytes::copy_from_slice(b), &Limits::default())
                .map(|f| f.to_json())
                .unwrap_or(Value::Null),
        }
    }

    /// The data of a request: exactly one of `json`, `bytes` (base64) or `frame` (base64 of
    /// an encoded DataFrame, which must decode).
    pub fn from_request(req: &Map<String, Value>) -> Result<Data, String> {
        let given: Vec<&str> =
            ["json", "bytes", "frame"].into_iter().filter(|k| req.contains_key(*k)).collect();
        let b64 = |k: &str| -> Result<Vec<u8>, String> {
            let s = req[k].as_str().ok_or_else(|| format!("`{k}` is a base64 string"))?;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("`{k}` is not base64: {e}"))
        };
        match given.as_slice() {
            ["json"] => Ok(Data::Json(req["json"].clone())),
            ["bytes"] => Ok(Data::Bytes(b64("bytes")?)),
            ["frame"] => {
                let raw = b64("frame")?;
                DataFrame::decode(&Bytes::copy_from_slice(&raw), &Limits::default())
                    .map_err(|e| format!("`frame` is not a DataFrame: {e}"))?;
                Ok(Data::Frame(raw))
            }
            [] => Err("a record needs one of `json`, `bytes` or `frame`".into()),
            _ => Err("a record has only one of `json`, `bytes` or `frame`".into()),
        }
    }

    /// Bytes it takes on disk (its encoding's length).
    pub fn size(&self) -> usize {
        HEAD + match self {
            Data::Json(v) => serde_json::to_vec(v).map_or(0, |b| b.len()),
            Data::Bytes(b) | Data::Frame(b) => b.len(),
        }
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its id, given at insert and never reused.
    pub id: u64,
    /// Raised by every change (1 at insert).
    pub version: u64,
    /// When it expires, milliseconds since the epoch (`None`: never).
    pub expires_at: Option<u64>,
    /// What it holds.
    pub data: Data,
}

impl Record {
    /// Its on-disk encoding.
    pub fn encode(&self) -> Vec<u8> {
        Record::encode_parts(self.version, self.expires_at, &self.data, &self.data.payload())
    }

    /// The encoding of a record holding `data`, whose [`Data::payload`] is `payload`.
    pub fn encode_parts(version: u64, expires_at: Option<u64>, data: &Data, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD + payload.len());
        out.push(FORMAT);
        out.push(data.kind());
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&expires_at.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Reads a record stored under `id`; a clear error for anything else.
    pub fn decode(id: u64, raw: &[u8]) -> Result<Record, String> {
        if raw.len() < HEAD {
            return Err(format!("record {id}: {} bytes, shorter than its head", raw.len()));
        }
        if raw[0] != FORMAT {
            return Err(format!("record {id}: unknown format {}", raw[0]));
        }
        let version = u64::from_le_bytes(raw[2..10].try_into().expect("8 bytes"));
        let expires = u64::from_le_bytes(raw[10..18].try_into().expect("8 bytes"));
        let body = &raw[HEAD..];
        let data = match raw[1] {
            1 => Data::Json(serde_json::from_slice(body).map_err(|e| format!("record {id}: bad JSON: {e}"))?),
            2 => Data::Bytes(body.to_vec()),
            3 => Data::Frame(body.to_vec()),
            k => return Err(format!("record {id}: unknown kind {k}")),
        };
        Ok(Record { id, version, expires_at: (expires != 0).then_some(expires), data })
    }

    /// The expiry in an encoded record (0 for never), without decoding the rest.
    pub fn expiry_of(raw: &[u8]) -> u64 {
        raw.get(10..18).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Its JSON form: `{"id", "version", "expires_at"?, and one of "json", "bytes", "frame"}`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "id": self.id, "version": self.version });
        if let Some(t) = self.expires_at {
            v["expires_at"] = json!(t);
        }
        let b64 = |b: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
        match &self.data {
            Data::Json(d) => v["json"] = d.clone(),
            Data::Bytes(b) => v["bytes"] = b64(b),
            Data::Frame(b) => v["frame"] = b64(b),
        }
        v
    }
}

/// Appends a row to a packed run, as `db.rows` and `db.change` carry rows:
/// `[id u64 LE][length u32 LE][the record's encoding]`, one after another.
pub fn pack(out: &mut Vec<u8>, id: u64, encoded: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(encoded);
}

/// The rows of a packed run, in order: (id, encoding); an error, then nothing, where the
/// run is cut short.
pub fn unpack(packed: &[u8]) -> Unpack<'_> {
    Unpack { rest: packed }
}

/// The iterator of [`unpack`].
#[derive(Debug, Clone)]
pub struct Unpack<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Unpack<'a> {
    type Item = Result<(u64, &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let Some((head, body)) = rest.split_at_checked(12) else {
            return Some(Err(format!("a row cut short: {} bytes of its 12-byte head", rest.len())));
        };
        let id = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
        let Some((row, after)) = body.split_at_checked(len) else {
            return Some(Err(format!("row {id} cut short: {} of its {len} bytes", body.len())));
        };
        self.rest = after;
        Some(Ok((id, row)))
    }
}

/// Sortable bytes of an indexed field's value: scalars only (`None` for objects and arrays,
/// which are not indexed). Numbers sort as numbers, strings by their bytes.
pub fn index_key(v: &Value) -> Option<Vec<u8>> {
    Some(match v {
        Value::Null => vec![0],
        Value::Bool(false) => vec![1],
        Value::Bool(true) => vec![2],
        Value::Number(n) => {
            let f = n.as_f64()?;
            // IEEE 754 bits made to sort as numbers do.
            let bits = f.to_bits();
            let sortable = if f.is_sign_negative() { !bits } else { bits | (1 << 63) };
            let mut k = vec![3];
            k.extend_from_slice(&sortable.to_be_bytes());
            k
        }
        Value::String(s) => {
            let mut k = vec![4];
            k.extend_from_slice(s.as_bytes());
            k
        }
        Value::Array(_) | Value::Object(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Vec<u8> {
        let mut f = DataFrame::new();
        f.push(7u32).push("x");
        f.to_bytes().to_vec()
    }

    #[test]
    fn records_round_trip_and_bad_ones_say_why() {
        for data in [Data::Json(json!({"a": [1, "x"]})), Data::Bytes(vec![0, 255]), Data::Frame(frame())] {
            let r = Record { id: 9, version: 3, expires_at: Some(77), data };
            assert_eq!(Record::decode(9, &r.encode()).unwrap(), r);
        }
        let good = Record { id: 1, version: 1, expires_at: None, data: Data::Bytes(vec![]) }.encode();
        assert!(Record::decode(1, &good[..5]).unwrap_err().contains("shorter"));
        let mut bad = good.clone();
        bad[0] = 9;
        assert!(Record::decode(1, &bad).unwrap_err().contains("format"));
        bad = good.clone();
        bad[1] = 7;
        assert!(Record::decode(1, &bad).unwrap_err().contains("kind"));
        bad = good;
        bad[1] = 1;
        bad.extend_from_slice(b"{nope");
        assert!(Record::decode(1, &bad).unwrap_err().contains("JSON"));
    }

    #[test]
    fn packed_rows_come_back_and_cut_ones_say_so() {
        let mut p = Vec::new();
        pack(&mut p, 7, b"abc");
        pack(&mut p, 9, b"");
        let rows: Vec<_> = unpack(&p).collect::<Result<_, _>>().unwrap();
        assert_eq!(rows, vec![(7, &b"abc"[..]), (9, &b""[..])]);
        let cut: Vec<_> = unpack(&p[..14]).collect();
        assert!(matches!(&cut[..], [Err(e)] if e.contains("row 7 cut short")), "{cut:?}");
        let cut: Vec<_> = unpack(&p[..20]).collect();
        assert!(matches!(&cut[..], [Ok(_), Err(e)] if e.contains("head")), "{cut:?}");
    }

    #[test]
    fn index_keys_sort_as_their_values() {
        let vals = [
            json!(null),
            json!(false),
            json!(true),
            json!(-5.5),
            json!(-1),
            json!(0),
            json!(2),
            json!(10.25),
            json!(1e9),
            json!(""),
            json!("a"),
            json!("ab"),
            json!("b"),
        ];
        let keys: Vec<Vec<u8>> = vals.iter().map(|v| index_key(v).unwrap()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(index_key(&json!(2)), index_key(&json!(2.0)));
        assert!(index_key(&json!([1])).is_none());
    }

    #[test]
    fn requests_name_one_kind_of_data() {
        let req = |v: Value| Data::from_request(v.as_object().unwrap());
        assert_eq!(req(json!({"json": {"x": 1}})).unwrap(), Data::Json(json!({"x": 1})));
        assert_eq!(req(json!({"bytes": "AAE="})).unwrap(), Data::Bytes(vec![0, 1]));
        assert!(req(json!({})).unwrap_err().contains("one of"));
        assert!(req(json!({"json": 1, "bytes": ""})).unwrap_err().contains("only one"));
        assert!(req(json!({"bytes": "!!"})).unwrap_err().contains("base64"));
        assert!(req(json!({"frame": "/w=="})).unwrap_err().contains("DataFrame"));
    }
}
