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

/// Serves the same echo holding nothing while a connection is idle: it waits for
/// readiness, reads into a stack buffer and keeps bytes on the heap only while a frame is
/// incomplete (the floor of memory per idle connection).
pub async fn idle_echo_server(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(idle_echo_connection(stream));
    }
}

async fn idle_echo_connection(s: TcpStream) {
    // Only `partial` lives across awaits: the read buffer is a local of a plain function,
    // so the task holds no 4 KiB array while it waits.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        if s.readable().await.is_err() {
            return;
        }
        match read_into(&s, &mut partial) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        let mut whole = 0;
        while partial.len() - whole >= 4 {
            let len = u32::from_le_bytes(partial[whole..whole + 4].try_into().expect("4 bytes")) as usize;
            if partial.len() - whole < 4 + len {
                break;
            }
            whole += 4 + len;
        }
        let mut written = 0;
        while written < whole {
            if s.writable().await.is_err() {
                return;
            }
            match s.try_write(&partial[written..whole]) {
                Ok(k) => written += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        partial.drain(..whole);
        if partial.is_empty() {
            partial = Vec::new();
        }
    }
}

fn read_into(s: &TcpStream, partial: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut buf = [0u8; 4096];
    let n = s.try_read(&mut buf)?;
    partial.extend_from_slice(&buf[..n]);
    Ok(n)
}

/// The fan-out floor's server (`zs bench fanout-floor-server`): the first connection is
/// control, the next `peers` are subscribers; each little-endian `u32` K read from control
/// sends K frames (a `u32` length and `payload` bytes) to every subscriber, from one
/// writer task per subscriber that writes all it has queued with one syscall.
pub async fn fanout_server(listener: TcpListener, peers: usize, payload: usize) -> Result<(), String> {
    let (mut control, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let mut frame = (payload as u32).to_le_bytes().to_vec();
    frame.resize(4 + payload, b'x');
    let frame = bytes::Bytes::from(frame);
    let mut writers = Vec::with_capacity(peers);
    for _ in 0..peers {
        let (s, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        writers.push(batching_writer(s));
    }
    let mut k = [0u8; 4];
    while control.read_exact(&mut k).await.is_ok() {
        for _ in 0..u32::from_le_bytes(k) {
            for w in &writers {
                let _ = w.send(frame.clone());
            }
        }
    }
    Ok(())
}

/// A task writing what it is handed to `s`, everything queued at once in one syscall;
/// unbounded, so its users keep it shallow (the fan-out benches wait for deliveries before
/// they hand it more).
pub fn batching_writer(mut s: TcpStream) -> tokio::sync::mpsc::UnboundedSender<bytes::Bytes> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
    tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(first) = rx.recv().await {
            out.clear();
            out.extend_from_slice(&first);
            while let Ok(more) = rx.try_recv() {
                out.extend_from_slice(&more);
            }
            if s.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    tx
}
