//! The floor under an unpipelined message on this machine: a TCP round trip, a bare libp2p
//! request-response round trip, and a small durable store write.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use encrypto_crypto::StorageKey;
use encrypto_node::test_support::listen_loopback;
use tokio::time::timeout_at;

use crate::Args;
use crate::copies::bench_swarm;
use crate::report::{Report, ms, percentile};

/// Round trips measured for the floor figures, after [`FLOOR_WARM_UP`] not counted.
const FLOOR_TRIES: usize = 2_000;
const FLOOR_WARM_UP: usize = 200;

/// The floor under an unpipelined message on this machine (see the module docs): a TCP round
/// trip, a bare libp2p request-response round trip, a small durable store write; p50 of each.
pub(crate) async fn measure_floor(args: &Args, report: &mut Report) {
    eprintln!("floor: round trips and flushes");
    let until = tokio::time::Instant::now() + args.deadline;
    let result = async {
        let tcp = tcp_round_trips(until).await?;
        let libp2p = libp2p_round_trips(until).await?;
        let flush = durable_writes(args).await?;
        anyhow::Ok((tcp, libp2p, flush))
    }
    .await;
    match result {
        Ok((tcp, libp2p, flush)) => {
            report.row(
                "  floor: TCP round trip p50 (300 B out, 150 B back)",
                ms(percentile(&tcp, 0.5)),
                "",
            );
            report.row(
                "  floor: libp2p request-response round trip p50 (bare swarms)",
                ms(percentile(&libp2p, 0.5)),
                "",
            );
            report.row(
                "  floor: store write of one small record, flushed, p50",
                ms(percentile(&flush, 0.5)),
                "",
            );
        }
        Err(e) => report.fail("floor figures", &e),
    }
}

/// Records one try's time, unless it is one of the first [`FLOOR_WARM_UP`].
fn record_try(times: &mut Vec<Duration>, i: usize, started: Instant) {
    if i >= FLOOR_WARM_UP {
        times.push(started.elapsed());
    }
}

async fn tcp_round_trips(until: tokio::time::Instant) -> Result<Vec<Duration>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut request = [0u8; 300];
        while socket.read_exact(&mut request).await.is_ok() {
            socket.write_all(&request[..150]).await?;
        }
        anyhow::Ok(())
    });
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let request = [7u8; 300];
    let mut answer = [0u8; 150];
    let mut times = Vec::with_capacity(FLOOR_TRIES);
    timeout_at(until, async {
        for i in 0..FLOOR_WARM_UP + FLOOR_TRIES {
            let t = Instant::now();
            socket.write_all(&request).await?;
            socket.read_exact(&mut answer).await?;
            record_try(&mut times, i, t);
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow!("the TCP round trips timed out"))??;
    times.sort();
    drop(socket);
    echo.abort();
    Ok(times)
}

async fn libp2p_round_trips(until: tokio::time::Instant) -> Result<Vec<Duration>> {
    use futures::StreamExt;
    use libp2p::request_response::{Event, Message};
    use libp2p::swarm::SwarmEvent;
    let mut receiver = bench_swarm(echo::Codec, echo::PROTOCOL, Duration::from_secs(30))?;
    let addr = listen_loopback(&mut receiver).await?;
    let receiver_id = *receiver.local_peer_id();
    let serving = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(Event::Message {
                message:
                    Message::Request {
                        mut request,
                        channel,
                        ..
                    },
                ..
            }) = receiver.select_next_some().await
            {
                request.truncate(150);
                let _ = receiver.behaviour_mut().send_response(channel, request);
            }
        }
    });
    let mut sender = bench_swarm(echo::Codec, echo::PROTOCOL, Duration::from_secs(30))?;
    sender.add_peer_address(receiver_id, addr);
    let mut times = Vec::with_capacity(FLOOR_TRIES);
    timeout_at(until, async {
        for i in 0..FLOOR_WARM_UP + FLOOR_TRIES {
            let t = Instant::now();
            sender
                .behaviour_mut()
                .send_request(&receiver_id, vec![7u8; 300]);
            loop {
                match sender.select_next_some().await {
                    SwarmEvent::Behaviour(Event::Message {
                        message: Message::Response { .. },
                        ..
                    }) => break,
                    SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => {
                        bail!("a libp2p round trip failed: {error}")
                    }
                    _ => {}
                }
            }
            record_try(&mut times, i, t);
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow!("the libp2p round trips timed out"))??;
    times.sort();
    serving.abort();
    Ok(times)
}

/// Durable small writes to a store in a temporary directory: one setting written and flushed.
async fn durable_writes(args: &Args) -> Result<Vec<Duration>> {
    let tmp = tempfile::Builder::new()
        .prefix("encrypto-bench-flush")
        .tempdir_in(&args.dir)
        .with_context(|| format!("creating a temporary directory in {}", args.dir.display()))?;
    tokio::task::spawn_blocking(move || {
        let store = encrypto_node::Store::open(tmp.path(), StorageKey::generate(&mut rand::rng()))?;
        let mut times = Vec::with_capacity(FLOOR_TRIES);
        for i in 0..FLOOR_WARM_UP + FLOOR_TRIES {
            let t = Instant::now();
            // One sealed record, then sled's flush (put_setting flushes before it returns).
            store.put_setting("bench", &i.to_be_bytes())?;
            record_try(&mut times, i, t);
        }
        times.sort();
        anyhow::Ok(times)
    })
    .await?
}

/// A request-response protocol of length-prefixed byte strings both ways: what the libp2p
/// round trips of the floor figures run on.
mod echo {
    use futures::prelude::*;
    use libp2p::StreamProtocol;
    use libp2p::request_response;

    pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/encrypto-bench/echo/1");
    /// Longer requests or answers are refused.
    const MAX: usize = 64 << 10;

    #[derive(Clone, Default)]
    pub(crate) struct Codec;

    async fn read<T: AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX {
            return Err(std::io::Error::other("frame too long"));
        }
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await?;
        Ok(body)
    }

    async fn write<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(body);
        io.write_all(&frame).await?;
        io.flush().await
    }

    impl request_response::Codec for Codec {
        type Protocol = StreamProtocol;
        type Request = Vec<u8>;
        type Response = Vec<u8>;

        async fn read_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> std::io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            read(io).await
        }

        async fn read_response<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> std::io::Result<Vec<u8>>
        where
            T: AsyncRead + Unpin + Send,
        {
            read(io).await
        }

        async fn write_request<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            request: Vec<u8>,
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            write(io, &request).await
        }

        async fn write_response<T>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            response: Vec<u8>,
        ) -> std::io::Result<()>
        where
            T: AsyncWrite + Unpin + Send,
        {
            write(io, &response).await
        }
    }
}
