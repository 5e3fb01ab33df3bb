use super::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

fn round_trip(df: &DataFrame) -> DataFrame {
    DataFrame::decode(&df.to_bytes(), &Limits::default()).unwrap()
}

#[test]
fn every_type_round_trips_with_its_width() {
    let mut inner = DataFrame::new();
    inner.write_str("inner").write_u8(1);
    let mut df = DataFrame::new();
    df.write_bool(true)
        .write_i8(-5)
        .write_i16(-300)
        .write_i32(-70000)
        .write_i64(i64::MIN)
        .write_u8(5)
        .write_u16(300)
        .write_u32(70000)
        .write_u64(u64::MAX)
        .write_f32(1.5)
        .write_f64(-2.25)
        .write_str("héllo")
        .write_bytes(vec![0u8, 1, 255])
        .write_frame(inner.clone())
        .write_array(vec![Value::I32(1), Value::Str("x".into())])
        .write_json(&serde_json::json!({"a": [1, null, "b"], "n": 2.5}));
    let back = round_trip(&df);
    assert_eq!(back, df);
    let mut r = back.reader();
    assert!(r.read_bool().unwrap());
    assert_eq!(r.read_i8().unwrap(), -5);
    assert_eq!(r.read_i16().unwrap(), -300);
    assert_eq!(r.read_i32().unwrap(), -70000);
    assert_eq!(r.read_i64().unwrap(), i64::MIN);
    assert_eq!(r.read_u8().unwrap(), 5);
    assert_eq!(r.read_u16().unwrap(), 300);
    assert_eq!(r.read_u32().unwrap(), 70000);
    assert_eq!(r.read_u64().unwrap(), u64::MAX);
    assert_eq!(r.read_f32().unwrap(), 1.5);
    assert_eq!(r.read_f64().unwrap(), -2.25);
    assert_eq!(r.read_str().unwrap(), "héllo");
    assert_eq!(r.read_bytes().unwrap(), &[0, 1, 255]);
    assert_eq!(r.read_frame().unwrap(), inner);
    assert_eq!(r.read_array().unwrap().len(), 2);
    assert_eq!(r.read_json().unwrap(), serde_json::json!({"a": [1, null, "b"], "n": 2.5}));
    assert_eq!(r.remaining(), 0);
}

#[test]
fn typed_reads_fail_clearly() {
    let mut df = DataFrame::new();
    df.write_str("x").write_i32(300).write_i32(-1);
    let mut r = df.reader();
    let e = r.read_i32().unwrap_err();
    assert_eq!(e, ReadError::TypeMismatch { index: 0, wanted: "i32", found: "string" });
    assert!(e.to_string().contains("wanted i32, found string"));
    // A failed read does not move the reader.
    assert_eq!(r.read_str().unwrap(), "x");
    assert_eq!(r.read_u8().unwrap_err(), ReadError::OutOfRange { index: 1, wanted: "u8" });
    assert_eq!(r.read_u16().unwrap(), 300);
    assert_eq!(r.read_u32().unwrap_err(), ReadError::OutOfRange { index: 2, wanted: "u32" });
    assert_eq!(r.read_i8().unwrap(), -1);
    let e = r.read_bool().unwrap_err();
    assert_eq!(e, ReadError::EndOfData { index: 3, wanted: "bool", len: 3 });
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Player {
    name: String,
    level: u32,
    tags: Vec<String>,
    pos: (f32, f32),
    guild: Option<String>,
}

#[test]
fn serde_bridge() {
    let p = Player { name: "ann".into(), level: 7, tags: vec!["a".into()], pos: (1.0, 2.0), guild: None };
    let mut df = DataFrame::new();
    df.write_serde(&p).unwrap().write_i32(9);
    let back = round_trip(&df);
    let mut r = back.reader();
    assert_eq!(r.read_serde::<Player>().unwrap(), p);
    let e = r.read_serde::<Player>().unwrap_err();
    assert!(matches!(e, ReadError::Serde { index: 1, .. }), "{e}");
    // A foreign encoder's compact MessagePack (rmp-serde, fixints) decodes and reads back.
    let foreign = Bytes::from(rmp_serde::to_vec(&(1u8, "two", -3i64, vec![4u16])).unwrap());
    let df = DataFrame::decode(&foreign, &Limits::default()).unwrap();
    let mut r = df.reader();
    assert_eq!(r.read_i64().unwrap(), 1);
    assert_eq!(r.read_str().unwrap(), "two");
    assert_eq!(r.read_i8().unwrap(), -3);
    assert_eq!(r.read_array().unwrap(), &[Value::U8(4)]);
}

#[test]
fn decode_errors() {
    let l = Limits::default();
    let d = |b: &[u8]| DataFrame::decode(&Bytes::copy_from_slice(b), &l);
    assert!(matches!(d(&[]), Err(WireError::Malformed { .. })));
    assert!(matches!(d(&[0xc0]), Err(WireError::Malformed { .. })), "top level must be an array");
    assert!(matches!(d(&[0x91]), Err(WireError::Malformed { .. })), "truncated");
    assert!(matches!(d(&[0x90, 0x00]), Err(WireError::Malformed { .. })), "trailing bytes");
    assert_eq!(d(&[0x91, 0xc1]), Err(WireError::UnsupportedMarker(0xc1)));
    assert_eq!(d(&[0x91, 0xd4, 1, 0]), Err(WireError::UnsupportedMarker(0xd4)), "ext");
    assert_eq!(d(&[0x91, 0xa1, 0xff]), Err(WireError::InvalidUtf8("DataFrame string")));
    // A claimed 4-billion-element array is refused by the element limit, not allocated.
    assert_eq!(d(&[0xdd, 0xff, 0xff, 0xff, 0xff]), Err(WireError::TooManyElements(l.max_elements)));
    // A claim within the limit but past the data fails cleanly.
    assert!(matches!(d(&[0xdd, 0, 0x0f, 0, 0, 0xc0]), Err(WireError::Malformed { .. })));
    // Nesting bomb.
    let bomb = vec![0x91u8; 100];
    assert_eq!(d(&bomb), Err(WireError::TooDeep(l.max_depth)));
    let tight = Limits { max_elements: 3, ..l };
    let many = Bytes::from_static(&[0x94, 1, 2, 3, 4]);
    assert_eq!(DataFrame::decode(&many, &tight), Err(WireError::TooManyElements(3)));
}

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i8>().prop_map(Value::I8),
        any::<i16>().prop_map(Value::I16),
        any::<i32>().prop_map(Value::I32),
        any::<i64>().prop_map(Value::I64),
        any::<u8>().prop_map(Value::U8),
        any::<u16>().prop_map(Value::U16),
        any::<u32>().prop_map(Value::U32),
        any::<u64>().prop_map(Value::U64),
        any::<f32>().prop_filter("NaN != NaN", |f| !f.is_nan()).prop_map(Value::F32),
        any::<f64>().prop_filter("NaN != NaN", |f| !f.is_nan()).prop_map(Value::F64),
        ".{0,40}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Value::Bytes(v.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #[test]
    fn any_frame_round_trips(values in proptest::collection::vec(value_strategy(), 0..16)) {
        let df = DataFrame::from_values(values);
        prop_assert_eq!(round_trip(&df), df);
    }
}
