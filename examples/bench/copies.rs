//! What the file figures are compared with: a plain TCP copy, and two raw libp2p copies on
//! the nodes' transport (TCP, noise, yamux) with nothing on top.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use encrypto_node::test_support::{listen_loopback, raw_swarm_for};
use tokio::time::timeout_at;

/// MB/s for `bytes` in `elapsed`.
pub(crate) fn mbs(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// A plain TCP copy of `bytes` over 127.0.0.1, 1 MiB writes, on two threads: MB/s.
pub(crate) fn tcp_copy(bytes: u64) -> Result<f64> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> Result<u64> {
        let (mut socket, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = socket.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n as u64;
        }
    });
    let started = Instant::now();
    let mut socket = std::net::TcpStream::connect(addr)?;
    let piece = vec![7u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        socket.write_all(&piece[..n])?;
        left -= n as u64;
    }
    drop(socket);
    let got = reader
        .join()
        .map_err(|_| anyhow!("the TCP reader panicked"))??;
    if got != bytes {
        bail!("the TCP copy moved {got} of {bytes} bytes");
    }
    Ok(mbs(bytes, started.elapsed()))
}

/// The libp2p baseline: the same transport as the nodes (TCP, noise, yamux) with nothing on
/// top but a 4-byte length prefix: 4 MiB frames, 4 in flight, the receiver discards them.
mod raw {
    use futures::prelude::*;
    use libp2p::StreamProtocol;
    use libp2p::request_response;

    pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/encrypto-bench/raw/1");

    #[derive(Clone, Default)]
    pub(crate) struct Codec;

    impl request_response::Codec for Codec {
        type Protocol = StreamProtocol;
        type Request = Vec<u8>;
        type Response = ();

        async fn read_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> std::io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            let mut len = [0u8; 4];
            io.read_exact(&mut len).await?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            io.read_exact(&mut body).await?;
            Ok(body)
        }

        async fn read_response<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<()>
        where
            T: AsyncRead + Unpin + Send,
        {
            Ok(())
        }

        async fn write_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            req: Vec<u8>,
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&(req.len() as u32).to_be_bytes()).await?;
            io.write_all(&req).await?;
            io.flush().await
        }

        async fn write_response<T>(
            &mut self,
            _: &StreamProtocol,
            _: &mut T,
            (): (),
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            Ok(())
        }
    }
}

/// The single-stream baseline: one libp2p stream (TCP, noise, yamux) that carries all the
/// bytes, written from a 1 MiB buffer and read into a 64 KiB one and discarded. The request
/// is the byte count; the bytes follow it on the stream.
mod one_stream {
    use futures::prelude::*;
    use libp2p::StreamProtocol;
    use libp2p::request_response;

    pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/encrypto-bench/stream/1");
    const WRITE: usize = 1 << 20;
    const READ: usize = 64 << 10;

    #[derive(Clone, Default)]
    pub(crate) struct Codec;

    impl request_response::Codec for Codec {
        type Protocol = StreamProtocol;
        type Request = u64;
        type Response = u64;

        async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<u64>
        where
            T: AsyncRead + Unpin + Send,
        {
            let mut len = [0u8; 8];
            io.read_exact(&mut len).await?;
            let want = u64::from_be_bytes(len);
            let mut buf = vec![0u8; READ];
            let mut got = 0u64;
            while got < want {
                let n = io.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                got += n as u64;
            }
            Ok(got)
        }

        async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<u64>
        where
            T: AsyncRead + Unpin + Send,
        {
            let mut got = [0u8; 8];
            io.read_exact(&mut got).await?;
            Ok(u64::from_be_bytes(got))
        }

        async fn write_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            bytes: u64,
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&bytes.to_be_bytes()).await?;
            let buf = vec![7u8; WRITE];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(WRITE as u64) as usize;
                io.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
            io.flush().await
        }

        async fn write_response<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            got: u64,
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            io.write_all(&got.to_be_bytes()).await?;
            io.flush().await
        }
    }
}

/// A bare swarm on the nodes' transport (TCP with nodelay, noise, yamux) with a fresh key,
/// speaking one request-response protocol with `codec`: what the raw copies and the floor's
/// round trips run on.
pub(crate) fn bench_swarm<C>(
    codec: C,
    protocol: libp2p::StreamProtocol,
    timeout: Duration,
) -> Result<libp2p::Swarm<libp2p::request_response::Behaviour<C>>>
where
    C: libp2p::request_response::Codec<Protocol = libp2p::StreamProtocol> + Clone + Send + 'static,
{
    use libp2p::request_response::{self, ProtocolSupport};
    let key = libp2p::identity::Keypair::generate_ed25519();
    Ok(raw_swarm_for(key, Duration::from_secs(60), |_| {
        request_response::Behaviour::with_codec(
            codec,
            [(protocol, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(timeout),
        )
    })?)
}

fn stream_swarm() -> Result<libp2p::Swarm<libp2p::request_response::Behaviour<one_stream::Codec>>> {
    bench_swarm(
        one_stream::Codec,
        one_stream::PROTOCOL,
        Duration::from_secs(300),
    )
}

fn raw_swarm() -> Result<libp2p::Swarm<libp2p::request_response::Behaviour<raw::Codec>>> {
    bench_swarm(raw::Codec, raw::PROTOCOL, Duration::from_secs(120))
}

/// Copies `bytes` over one libp2p stream between two swarms in this process (each polled on
/// its own task): MB/s from the connection being up to the receiver's count coming back.
pub(crate) async fn libp2p_stream_copy(bytes: u64, until: tokio::time::Instant) -> Result<f64> {
    use futures::StreamExt;
    use libp2p::request_response::{Event, Message};
    use libp2p::swarm::SwarmEvent;
    let mut receiver = stream_swarm()?;
    let addr = listen_loopback(&mut receiver).await?;
    let receiver_id = *receiver.local_peer_id();
    let serving = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) = receiver.select_next_some().await
            {
                let _ = receiver.behaviour_mut().send_response(channel, request);
            }
        }
    });
    let mut sender = stream_swarm()?;
    sender.add_peer_address(receiver_id, addr);
    // Connect first (a tiny copy), so the timed copy starts on a connection that is up.
    let result = timeout_at(until, async {
        let mut started = None;
        sender.behaviour_mut().send_request(&receiver_id, 1);
        loop {
            match sender.select_next_some().await {
                SwarmEvent::Behaviour(Event::Message {
                    message: Message::Response { response, .. },
                    ..
                }) => match started {
                    None => {
                        started = Some(Instant::now());
                        sender.behaviour_mut().send_request(&receiver_id, bytes);
                    }
                    Some(at) => {
                        if response != bytes {
                            return Err(anyhow!("the receiver counted {response} bytes"));
                        }
                        return Ok(mbs(bytes, Instant::elapsed(&at)));
                    }
                },
                SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => {
                    return Err(anyhow!("the one-stream libp2p copy failed: {error}"));
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow!("the one-stream libp2p copy timed out"))?;
    serving.abort();
    result
}

/// Copies `bytes` between two libp2p swarms in this process (each polled on its own task):
/// MB/s.
pub(crate) async fn libp2p_copy(bytes: u64, until: tokio::time::Instant) -> Result<f64> {
    use futures::StreamExt;
    use libp2p::request_response::{Event, Message};
    use libp2p::swarm::SwarmEvent;
    const FRAME: u64 = 4 << 20;
    const IN_FLIGHT: usize = 4;
    let mut receiver = raw_swarm()?;
    let addr = listen_loopback(&mut receiver).await?;
    let receiver_id = *receiver.local_peer_id();
    let serving = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(Event::Message {
                message: Message::Request { channel, .. },
                ..
            }) = receiver.select_next_some().await
            {
                let _ = receiver.behaviour_mut().send_response(channel, ());
            }
        }
    });
    let mut sender = raw_swarm()?;
    // The first request dials the receiver at this address.
    sender.add_peer_address(receiver_id, addr);
    let frame = vec![7u8; FRAME as usize];
    let result = timeout_at(until, async {
        let mut started = None;
        let (mut sent, mut done, mut in_flight) = (0u64, 0u64, 0usize);
        loop {
            // The first request waits for the connection; timing starts once it is up.
            while sent < bytes && in_flight < IN_FLIGHT && (started.is_some() || in_flight == 0) {
                let n = (bytes - sent).min(FRAME) as usize;
                sender
                    .behaviour_mut()
                    .send_request(&receiver_id, frame[..n].to_vec());
                sent += n as u64;
                in_flight += 1;
            }
            match sender.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {
                    started.get_or_insert_with(Instant::now);
                }
                SwarmEvent::Behaviour(Event::Message {
                    message: Message::Response { .. },
                    ..
                }) => {
                    in_flight -= 1;
                    done += FRAME.min(bytes - done);
                    if done == bytes {
                        let started = started.unwrap_or_else(Instant::now);
                        return Ok(mbs(bytes, started.elapsed()));
                    }
                }
                SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => {
                    return Err(anyhow!("raw libp2p copy failed: {error}"));
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow!("the raw libp2p copy timed out"))?;
    serving.abort();
    result
}
