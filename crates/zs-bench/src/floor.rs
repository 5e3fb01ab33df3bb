//! The floor: plain tokio servers that do the least work a server of that kind can do.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves a length-prefixed echo: every whole frame of one read is answered with one write.
pub async fn echo_server(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(echo_connection(stream));
    }
}

async fn echo_connection(mut s: TcpStream) {
    let mut input = BytesMut::with_capacity(16 << 10);
    let mut out = BytesMut::with_capacity(16 << 10);
    loop {
        match s.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while input.len() >= 4 {
            let len = u32::from_le_bytes(input[..4].try_into().expect("4 bytes")) as usize;
            if input.len() < 4 + len {
                break;
            }
            out.extend_from_slice(&input[..4 + len]);
            input.advance(4 + len);
        }
        if s.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}
