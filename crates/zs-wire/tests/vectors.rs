//! The shared test vectors, `spec/vectors.json`: frames, calls and DataFrames with their bytes,
//! and bytes each decoder must refuse. The JS and Python clients pass the same file. This test
//! builds every vector with this crate, checks that the file holds exactly those (run with
//! `ZS_WRITE_VECTORS=1` to rewrite it after a deliberate change), and decodes every one back.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value as Json};
use zs_wire::body::{parse_code_message, put_code_message};
use zs_wire::compress::{lz4, unlz4};
use zs_wire::{
    CallBody, DataFrame, ErrorCode, Flags, FrameDecoder, FrameWriter, GoAwayCode, Kind, Limits, Value,
    WireError,
};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec/vectors.json");

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// A value as the file writes it: its type and its value (64-bit integers as decimal strings,
/// bytes as hex, maps as pairs).
fn typed(v: &Value) -> Json {
    let (t, value) = match v {
        Value::Nil => return json!({"type": "nil"}),
        Value::Bool(b) => ("bool", json!(b)),
        Value::I8(x) => ("i8", json!(x)),
        Value::I16(x) => ("i16", json!(x)),
        Value::I32(x) => ("i32", json!(x)),
        Value::I64(x) => ("i64", json!(x.to_string())),
        Value::U8(x) => ("u8", json!(x)),
        Value::U16(x) => ("u16", json!(x)),
        Value::U32(x) => ("u32", json!(x)),
        Value::U64(x) => ("u64", json!(x.to_string())),
        Value::F32(x) => ("f32", json!(x)),
        Value::F64(x) => ("f64", json!(x)),
        Value::Str(s) => ("str", json!(s)),
        Value::Bytes(b) => ("bytes", json!(hex(b))),
        Value::Array(a) => ("array", Json::Array(a.iter().map(typed).collect())),
        Value::Map(m) => ("map", Json::Array(m.iter().map(|(k, v)| json!([typed(k), typed(v)])).collect())),
    };
    json!({"type": t, "value": value})
}

fn typed_all(values: &[Value]) -> Json {
    Json::Array(values.iter().map(typed).collect())
}

/// The name of a decoder error as the file writes it: the `WireError` variant.
fn error_name(e: &WireError) -> String {
    format!("{e:?}").split(['(', ' ', '{']).next().unwrap().to_owned()
}

fn frame(kind: Kind, flags: Flags, channel: u32, request: u32, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut w = FrameWriter::begin(&mut out, kind, flags, channel, request);
    w.body().extend_from_slice(body);
    w.finish(Limits::DEFAULT_MAX_FRAME_LEN).unwrap();
    out.to_vec()
}

fn code_message(code: u16, message: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_code_message(&mut b, code, message);
    b.to_vec()
}

fn dataframes() -> Vec<(&'static str, Vec<Value>)> {
    let nested = Value::Array(vec![Value::I32(1), Value::Str("two".into()), Value::Array(vec![])]);
    let doc = Value::Map(vec![
        (Value::Str("name".into()), Value::Str("zserver".into())),
        (Value::Str("port".into()), Value::U16(9818)),
        (Value::Str("tags".into()), Value::Array(vec![Value::Str("a".into()), Value::Nil])),
    ]);
    vec![
        ("empty", vec![]),
        ("one string", vec![Value::Str("hello".into())]),
        ("booleans and nil", vec![Value::Bool(true), Value::Bool(false), Value::Nil]),
        (
            "signed integers at their edges",
            vec![
                Value::I8(-128),
                Value::I8(127),
                Value::I16(-32768),
                Value::I16(300),
                Value::I32(i32::MIN),
                Value::I32(-1),
                Value::I64(i64::MIN),
                Value::I64(i64::MAX),
                Value::I64(0),
            ],
        ),
        (
            "unsigned integers at their edges",
            vec![
                Value::U8(0),
                Value::U8(255),
                Value::U16(65535),
                Value::U32(u32::MAX),
                Value::U64(u64::MAX),
                Value::U64(1),
            ],
        ),
        (
            "floats",
            vec![Value::F32(1.5), Value::F32(-0.25), Value::F64(std::f64::consts::PI), Value::F64(-1e300)],
        ),
        (
            "strings by length",
            vec![
                Value::Str(String::new()),
                Value::Str("é文🙂".into()),
                Value::Str("x".repeat(31)),
                Value::Str("y".repeat(32)),
                Value::Str("z".repeat(256)),
            ],
        ),
        (
            "bytes by length",
            vec![
                Value::Bytes(Bytes::new()),
                Value::Bytes(Bytes::from_static(&[0, 1, 255])),
                Value::Bytes(Bytes::from(vec![7u8; 256])),
            ],
        ),
        ("nested arrays and a document", vec![nested, doc, Value::Array((0..16).map(Value::U8).collect())]),
    ]
}

/// Encodings a reader accepts beside the fixed-width ones a writer uses.
fn dataframe_reads() -> Vec<(&'static str, Vec<u8>, Vec<Value>)> {
    vec![
        ("positive fixint reads as u8", vec![0x92, 0x00, 0x7f], vec![Value::U8(0), Value::U8(127)]),
        ("negative fixint reads as i8", vec![0x92, 0xff, 0xe0], vec![Value::I8(-1), Value::I8(-32)]),
        (
            "str 16 and array 16 forms",
            vec![0xdc, 0x00, 0x01, 0xda, 0x00, 0x02, b'h', b'i'],
            vec![Value::Str("hi".into())],
        ),
        (
            "map 16 form",
            vec![0x91, 0xde, 0x00, 0x01, 0xa1, b'k', 0xc3],
            vec![Value::Map(vec![(Value::Str("k".into()), Value::Bool(true))])],
        ),
    ]
}

fn calls() -> Vec<Json> {
    let mut v = Vec::new();
    let mut call = |name: &str, kind: Kind, request: u32, command: Option<&str>, payload: Payload| {
        let mut body = BytesMut::new();
        if let Some(c) = command {
            CallBody::put_name(&mut body, c).unwrap();
        }
        let (mut flags, plain, text, values) = match &payload {
            Payload::Text(t) => (Flags::NONE, t.as_bytes().to_vec(), json!(t), Json::Null),
            Payload::Frame(values) => (
                Flags::DATAFRAME,
                DataFrame::from_values(values.clone()).to_bytes().to_vec(),
                Json::Null,
                typed_all(values),
            ),
        };
        let compressed = plain.len() >= 1024;
        if compressed {
            body.extend_from_slice(&lz4(&plain).expect("the vector's payload compresses"));
            flags = Flags(flags.0 | Flags::COMPRESSED.0);
        } else {
            body.extend_from_slice(&plain);
        }
        let frame_name = match kind {
            Kind::Call => "call",
            Kind::Send => "send",
            _ => "reply",
        };
        v.push(json!({
            "name": name, "frame": frame_name, "request": request, "command": command,
            "text": text, "values": values, "compressed": compressed,
            "bytes": hex(&frame(kind, flags, 0, request, &body)),
        }));
    };
    call("console call", Kind::Call, 1, Some("echo"), Payload::Text("hello".into()));
    call("console call, empty text", Kind::Call, 2, Some("stats"), Payload::Text(String::new()));
    call(
        "stream call",
        Kind::Call,
        3,
        Some("echo_stream"),
        Payload::Frame(vec![Value::Str("a".into()), Value::I32(-7), Value::Bool(true)]),
    );
    call("one-way send", Kind::Send, 0, Some("chat.say"), Payload::Text("hi all".into()));
    call(
        "a push with a JSON text",
        Kind::Send,
        0,
        Some("inbox.waiting"),
        Payload::Text(r#"{"count":2}"#.into()),
    );
    call("text reply", Kind::Reply, 1, None, Payload::Text("hello".into()));
    call("DataFrame reply", Kind::Reply, 3, None, Payload::Frame(vec![Value::U64(u64::MAX), Value::Nil]));
    call("compressed text reply", Kind::Reply, 4, None, Payload::Text("zserver ".repeat(512)));
    call("compressed console call", Kind::Call, 5, Some("echo"), Payload::Text("abcd".repeat(600)));
    call(
        "compressed DataFrame reply",
        Kind::Reply,
        6,
        None,
        Payload::Frame(vec![Value::Str("q".repeat(4000))]),
    );
    v
}

enum Payload {
    Text(String),
    Frame(Vec<Value>),
}

fn frames() -> Vec<Json> {
    let f = |name: &str, kind: Kind, request: u32, body: Vec<u8>| {
        json!({
            "name": name, "kind": kind.code(), "flags": 0, "channel": 0, "request": request,
            "body": hex(&body), "bytes": hex(&frame(kind, Flags::NONE, 0, request, &body)),
        })
    };
    vec![
        f("ping", Kind::Ping, 9, vec![]),
        f("pong", Kind::Pong, 9, vec![]),
        f(
            "error: unknown command",
            Kind::Error,
            3,
            code_message(ErrorCode::UnknownCommand.code(), "unknown command: nope"),
        ),
        f(
            "error: auth failed",
            Kind::Error,
            4,
            code_message(ErrorCode::AuthFailed.code(), "wrong user name, password or token"),
        ),
        f(
            "goaway: shutting down",
            Kind::GoAway,
            0,
            code_message(GoAwayCode::ShuttingDown.code(), "server shutting down"),
        ),
        f("goaway: kicked", Kind::GoAway, 0, code_message(GoAwayCode::Kicked.code(), "")),
        f("session ack", Kind::SessionAck, 0, 123_456u64.to_le_bytes().to_vec()),
    ]
}

fn bad() -> Vec<Json> {
    let header = |b0: u8, b1: u8, kind: u8, flags: u8, channel: u32, len: u32| {
        let mut h = vec![b0, b1, kind, flags];
        h.extend_from_slice(&channel.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&len.to_le_bytes());
        h
    };
    let one = |name: &str, what: &str, bytes: Vec<u8>| {
        let error = match what {
            "header" => decode_frame(&bytes).map(|_| ()),
            "call" => decode_call(&bytes).map(|_| ()),
            _ => DataFrame::decode(&Bytes::from(bytes.clone()), &Limits::default()).map(|_| ()),
        }
        .expect_err(name);
        json!({"name": name, "what": what, "bytes": hex(&bytes), "error": error_name(&error)})
    };
    let mut deep = vec![0x91u8; 64];
    deep.push(0xc0);
    let mut bad_name = frame(Kind::Call, Flags::NONE, 0, 1, &[2, 0xff, 0xfe]);
    bad_name.truncate(16 + 3);
    vec![
        one("HTTP instead of a frame", "header", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        one("version 2", "header", header(0x5a, 2, 1, 0, 0, 0)),
        one("unassigned kind 0x09", "header", header(0x5a, 1, 0x09, 0, 0, 0)),
        one("a ping with the DATAFRAME flag", "header", header(0x5a, 1, 0x05, 0x01, 0, 0)),
        one("a reserved flag bit on a call", "header", header(0x5a, 1, 0x01, 0x04, 0, 0)),
        one("a frame of 16 MiB and one byte", "header", header(0x5a, 1, 0x01, 0, 0, (16 << 20) + 1)),
        one("an empty command name", "call", frame(Kind::Call, Flags::NONE, 0, 1, &[0])),
        one(
            "a command name that runs past the end",
            "call",
            frame(Kind::Call, Flags::NONE, 0, 1, &[5, b'e', b'c']),
        ),
        one("a command name that is not UTF-8", "call", bad_name),
        one("not an array at the top", "dataframe", vec![0xc0]),
        one("an ext type", "dataframe", vec![0x91, 0xd4, 0x01, 0x00]),
        one("the reserved marker 0xc1", "dataframe", vec![0x91, 0xc1]),
        one("bytes after the array", "dataframe", vec![0x90, 0x00]),
        one("a string that runs past the end", "dataframe", vec![0x91, 0xa5, b'h', b'i']),
        one("a string that is not UTF-8", "dataframe", vec![0x91, 0xa2, 0xc3, 0x28]),
        one("nesting 64 deep", "dataframe", deep),
    ]
}

fn decode_frame(bytes: &[u8]) -> Result<zs_wire::Frame, WireError> {
    let mut buf = BytesMut::from(bytes);
    FrameDecoder::new(Limits::default())
        .decode(&mut buf)?
        .ok_or(WireError::Malformed { what: "vector", why: "incomplete" })
}

fn decode_call(bytes: &[u8]) -> Result<CallBody, WireError> {
    CallBody::parse(&decode_frame(bytes)?.body)
}

fn build() -> Json {
    let dataframes: Vec<Json> = dataframes()
        .into_iter()
        .map(|(name, values)| {
            json!({"name": name, "values": typed_all(&values), "bytes": hex(&DataFrame::from_values(values).to_bytes())})
        })
        .collect();
    let reads: Vec<Json> = dataframe_reads()
        .into_iter()
        .map(
            |(name, bytes, values)| json!({"name": name, "bytes": hex(&bytes), "values": typed_all(&values)}),
        )
        .collect();
    json!({
        "version": 1,
        "about": "zserver wire vectors (docs/PROTOCOL.md): encode each and get its bytes; decode the bytes and get it back. \
                  Compressed payloads (lz4, size prepended) need only decode to the same payload: lz4 encoders differ. \
                  Each 'bad' entry must be refused; 'error' names the Rust decoder's error.",
        "frames": frames(),
        "dataframes": dataframes,
        "dataframe_reads": reads,
        "calls": calls(),
        "bad": bad(),
    })
}

#[test]
fn the_vectors_file_holds_what_this_codec_writes() {
    let built = serde_json::to_string_pretty(&build()).unwrap() + "\n";
    if std::env::var_os("ZS_WRITE_VECTORS").is_some() {
        std::fs::write(FILE, &built).unwrap();
    }
    let on_disk = std::fs::read_to_string(FILE).expect("spec/vectors.json (ZS_WRITE_VECTORS=1 writes it)");
    assert!(on_disk == built, "spec/vectors.json differs from what the codec writes; rerun with ZS_WRITE_VECTORS=1 if the change is deliberate");
}

#[test]
fn every_vector_in_the_file_decodes_back() {
    let file: Json = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    let limits = Limits::default();
    for f in file["frames"].as_array().unwrap() {
        let got = decode_frame(&unhex(f["bytes"].as_str().unwrap())).unwrap();
        assert_eq!(u64::from(got.header.kind.code()), f["kind"].as_u64().unwrap(), "{f}");
        assert_eq!(u64::from(got.header.request), f["request"].as_u64().unwrap());
        assert_eq!(hex(&got.body), f["body"].as_str().unwrap());
        if matches!(got.header.kind, Kind::Error | Kind::GoAway) {
            parse_code_message(&got.body).unwrap();
        }
    }
    for d in file["dataframes"].as_array().unwrap().iter().chain(file["dataframe_reads"].as_array().unwrap())
    {
        let df = DataFrame::decode(&Bytes::from(unhex(d["bytes"].as_str().unwrap())), &limits).unwrap();
        assert_eq!(typed_all(df.values()), d["values"], "{}", d["name"]);
    }
    for c in file["calls"].as_array().unwrap() {
        let frame = decode_frame(&unhex(c["bytes"].as_str().unwrap())).unwrap();
        let (command, payload) = if frame.header.kind == Kind::Reply {
            (Json::Null, frame.body.clone())
        } else {
            let body = CallBody::parse(&frame.body).unwrap();
            (json!(body.name()), body.payload)
        };
        assert_eq!(command, c["command"], "{}", c["name"]);
        let payload = if frame.header.flags.contains(Flags::COMPRESSED) {
            Bytes::from(unlz4(&payload, limits.max_frame_len).unwrap())
        } else {
            payload
        };
        assert_eq!(frame.header.flags.contains(Flags::COMPRESSED), c["compressed"] == true);
        if frame.header.flags.contains(Flags::DATAFRAME) {
            assert_eq!(typed_all(DataFrame::decode(&payload, &limits).unwrap().values()), c["values"]);
        } else {
            assert_eq!(json!(std::str::from_utf8(&payload).unwrap()), c["text"]);
        }
    }
    assert!(file["bad"].as_array().unwrap().len() >= 10);
}
