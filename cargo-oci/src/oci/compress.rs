//! Compresses a layer's tar stream on every core, streaming, with output bytes that do not
//! depend on the number of threads.
//!
//! The stream is cut into fixed [`CHUNK`]-byte chunks; each chunk is compressed on its own —
//! gzip: one gzip member per chunk (libdeflate, level 5, zero mtime, OS byte 255); zstd: one
//! zstd frame per chunk (level 1, with checksum) — and the results are written in order.
//! Concatenated gzip members and concatenated zstd frames are each one valid stream (RFC 1952
//! §2.2, RFC 8878 §3.1) that every OCI runtime reads; eStargz and zstd:chunked layers are built
//! the same way. Because the cut points depend only on the bytes, 1 thread and 64 threads give
//! the same blob. At most [`in_flight`] chunks exist at once, so memory does not grow with the
//! payload.
//!
//! The scheduling is written here rather than taken from gzp: gzp chains its blocks through
//! zlib dictionaries (several times slower per core than libdeflate) and has no zstd framing
//! that is independent of its thread count; the compressors themselves are libdeflate and zstd.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};

/// Size of the uncompressed chunks compressed independently.
pub const CHUNK: usize = 1 << 20;
/// gzip level: libdeflate's 5 still compresses at least as well as `gzip -6` on the benchmark's
/// workloads, at about 70 % of the CPU of its level 6.
pub const GZIP_LEVEL: i32 = 5;
/// zstd level: the fastest; zstd is the choice for speed, gzip for reach.
pub const ZSTD_LEVEL: i32 = 1;

/// The OCI media type of gzip layers.
pub const MEDIA_TYPE_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The OCI media type of zstd layers.
pub const MEDIA_TYPE_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How layers are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Codec {
    /// gzip: readable by every OCI and Docker runtime.
    #[default]
    Gzip,
    /// zstd: faster to write and read; needs a runtime that reads zstd layers (podman, containerd
    /// 1.5+, Docker 23+).
    Zstd,
}

impl Codec {
    /// The layer media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Codec::Gzip => MEDIA_TYPE_GZIP,
            Codec::Zstd => MEDIA_TYPE_ZSTD,
        }
    }

    /// Everything that decides the compressed bytes, for cache keys.
    pub fn identity(self) -> String {
        match self {
            Codec::Gzip => format!("gzip/libdeflate/{GZIP_LEVEL}/{CHUNK}"),
            Codec::Zstd => format!("zstd/{ZSTD_LEVEL}/{CHUNK}/checksum"),
        }
    }
}

/// A codec and the number of threads to run it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub codec: Codec,
    /// Compressing threads (1 or more); the output does not depend on it.
    pub threads: usize,
}

impl Compression {
    /// `codec` on every core.
    pub fn new(codec: Codec) -> Compression {
        Compression {
            codec,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// How many chunks may be in memory at once (read, compressing, or waiting to be written).
pub fn in_flight(threads: usize) -> usize {
    2 * threads.max(1) + 1
}

/// One codec's compressor state, reused from chunk to chunk.
enum ChunkCompressor {
    Gzip(libdeflater::Compressor),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl ChunkCompressor {
    fn new(codec: Codec) -> io::Result<ChunkCompressor> {
        Ok(match codec {
            Codec::Gzip => {
                let lvl = libdeflater::CompressionLvl::new(GZIP_LEVEL)
                    .map_err(|e| io::Error::other(format!("gzip level: {e:?}")))?;
                ChunkCompressor::Gzip(libdeflater::Compressor::new(lvl))
            }
            Codec::Zstd => {
                let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
                c.include_checksum(true)?;
                c.include_contentsize(true)?;
                ChunkCompressor::Zstd(Box::new(c))
            }
        })
    }

    fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            ChunkCompressor::Gzip(c) => {
                let mut out = vec![0; c.gzip_compress_bound(data.len())];
                let n = c
                    .gzip_compress(data, &mut out)
                    .map_err(|e| io::Error::other(format!("gzip: {e:?}")))?;
                out.truncate(n);
                Ok(out)
            }
            ChunkCompressor::Zstd(c) => c.compress(data),
        }
    }
}

/// Compresses what `produce` writes into `out`, on `comp.threads` threads, and returns what
/// `produce` returned and `out`. `produce` runs on the calling thread; the compressed bytes reach
/// `out` in order on a writer thread.
pub fn compress<W, T, F>(comp: Compression, out: W, produce: F) -> Result<(T, W)>
where
    W: Write + Send,
    F: FnOnce(&mut ChunkWriter) -> Result<T>,
{
    if comp.threads <= 1 {
        let mut out = out;
        let mut w = ChunkWriter {
            buf: Vec::with_capacity(CHUNK),
            sent: 0,
            sink: Sink::Inline {
                compressor: ChunkCompressor::new(comp.codec)?,
                out: &mut out,
            },
        };
        let t = produce(&mut w)?;
        w.finish()?;
        drop(w);
        return Ok((t, out));
    }

    std::thread::scope(|s| {
        let slots = in_flight(comp.threads);
        let (work_tx, work_rx) = sync_channel::<(u64, Vec<u8>)>(slots);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (done_tx, done_rx) = sync_channel::<(u64, io::Result<Vec<u8>>)>(slots);
        // A credit per chunk in flight: the producer takes one per chunk, the writer gives it back
        // once the chunk is written, so memory stays bounded whatever the workers' pace.
        let (credit_tx, credit_rx) = sync_channel::<()>(slots);
        for _ in 0..slots {
            credit_tx
                .send(())
                .map_err(|_| anyhow!("compression scheduler closed"))?;
        }

        for _ in 0..comp.threads {
            let rx = Arc::clone(&work_rx);
            let tx = done_tx.clone();
            s.spawn(move || worker(comp.codec, &rx, &tx));
        }
        drop(work_rx);
        drop(done_tx);

        let writer = s.spawn(move || -> io::Result<W> {
            let mut out = out;
            let mut next = 0u64;
            let mut pending = BTreeMap::new();
            for (seq, r) in done_rx {
                pending.insert(seq, r?);
                while let Some(bytes) = pending.remove(&next) {
                    out.write_all(&bytes)?;
                    next += 1;
                    let _ = credit_tx.send(());
                }
            }
            Ok(out)
        });

        let mut w = ChunkWriter {
            buf: Vec::with_capacity(CHUNK),
            sent: 0,
            sink: Sink::Pool {
                work: Some(work_tx),
                credits: credit_rx,
            },
        };
        let produced = produce(&mut w).and_then(|t| {
            w.finish()?;
            Ok(t)
        });
        drop(w);
        let written = writer
            .join()
            .map_err(|_| anyhow!("the compressed-layer writer panicked"))?;
        // The writer's own error explains a producer that could not hand over a chunk.
        let out = written.context("cannot write the compressed layer")?;
        Ok((produced?, out))
    })
}

fn worker(
    codec: Codec,
    rx: &Mutex<Receiver<(u64, Vec<u8>)>>,
    tx: &SyncSender<(u64, io::Result<Vec<u8>>)>,
) {
    let mut compressor = match ChunkCompressor::new(codec) {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = tx.send((0, Err(e)));
            None
        }
    };
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, data)) = job else { return };
        let r = match compressor.as_mut() {
            Some(c) => c.compress(&data),
            None => Err(io::Error::other("no compressor")),
        };
        if tx.send((seq, r)).is_err() {
            return;
        }
    }
}

/// Where full chunks go.
enum Sink<'a> {
    /// Compressed on the calling thread.
    Inline {
        compressor: ChunkCompressor,
        out: &'a mut dyn Write,
    },
    /// Handed to the worker threads.
    Pool {
        work: Option<SyncSender<(u64, Vec<u8>)>>,
        credits: Receiver<()>,
    },
}

/// The uncompressed side: cuts what is written into chunks.
pub struct ChunkWriter<'a> {
    buf: Vec<u8>,
    sent: u64,
    sink: Sink<'a>,
}

impl ChunkWriter<'_> {
    fn ship(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let seq = self.sent;
        self.sent += 1;
        match &mut self.sink {
            Sink::Inline { compressor, out } => out.write_all(&compressor.compress(&data)?),
            Sink::Pool { work, credits } => {
                let closed = || io::Error::other("the compressed-layer writer stopped");
                credits.recv().map_err(|_| closed())?;
                work.as_ref()
                    .ok_or_else(closed)?
                    .send((seq, data))
                    .map_err(|_| closed())
            }
        }
    }

    /// Sends the last chunk (an empty stream still gets one, so the output is a valid stream).
    fn finish(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() || self.sent == 0 {
            self.ship()?;
        }
        if let Sink::Pool { work, .. } = &mut self.sink {
            work.take();
        }
        Ok(())
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.ship()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader of the uncompressed bytes of a layer blob with this media type.
pub fn decoder<'a>(media_type: &str, blob: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let blob = io::BufReader::with_capacity(1 << 16, blob);
    Ok(match media_type {
        MEDIA_TYPE_GZIP => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        MEDIA_TYPE_ZSTD => Box::new(zstd::stream::read::Decoder::with_buffer(blob)?),
        other => anyhow::bail!("cannot read a layer of media type {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random-looking (xorshift) and repetitive bytes, several chunks long and not a multiple of
    /// the chunk size.
    fn payload() -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut v = Vec::with_capacity(3 * CHUNK + 12345);
        while v.len() < 3 * CHUNK / 2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        while v.len() < 3 * CHUNK + 12345 {
            v.extend_from_slice(b"GET /health 200 0.3ms\n");
        }
        v
    }

    fn run(codec: Codec, threads: usize, data: &[u8]) -> Vec<u8> {
        let comp = Compression { codec, threads };
        let ((), out) = compress(comp, Vec::new(), |w| {
            // Odd-sized writes, as the tar builder makes.
            for piece in data.chunks(7777) {
                w.write_all(piece)?;
            }
            Ok(())
        })
        .unwrap();
        out
    }

    fn decode(codec: Codec, blob: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decoder(codec.media_type(), blob)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn same_bytes_on_1_and_n_threads() {
        let data = payload();
        for codec in [Codec::Gzip, Codec::Zstd] {
            let one = run(codec, 1, &data);
            for n in [2, 3, 8] {
                let many = run(codec, n, &data);
                assert_eq!(
                    crate::oci::digest::Digest::of(&one),
                    crate::oci::digest::Digest::of(&many),
                    "{codec:?}: 1 and {n} threads differ"
                );
            }
            assert!(one.len() < data.len(), "{codec:?} did not compress");
            assert_eq!(decode(codec, &one), data, "{codec:?} round trip");
        }
    }

    #[test]
    fn gzip_members_read_back_with_standard_tools() {
        let data = payload();
        let blob = run(Codec::Gzip, 2, &data);
        // Fixed header: no mtime, no name, OS 255.
        assert_eq!(&blob[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&blob[4..8], &[0, 0, 0, 0]);
        assert_eq!(blob[9], 255);
        let Ok(mut child) = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIP: no gzip");
            return;
        };
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || stdin.write_all(&blob));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn empty_stream_is_valid() {
        for codec in [Codec::Gzip, Codec::Zstd] {
            for threads in [1, 2] {
                let blob = run(codec, threads, &[]);
                assert!(!blob.is_empty());
                assert!(decode(codec, &blob).is_empty());
            }
        }
    }

    #[test]
    fn chunks_in_flight_stay_bounded() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        /// A slow output counting the chunks it has received.
        struct Slow(Arc<AtomicUsize>);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_millis(2));
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let written = Arc::new(AtomicUsize::new(0));
        let threads = 3;
        let chunk = vec![7u8; CHUNK];
        let ((), _) = compress(
            Compression {
                codec: Codec::Zstd,
                threads,
            },
            Slow(Arc::clone(&written)),
            |w| {
                let mut most = 0;
                for handed in 1..=40 {
                    w.write_all(&chunk)?;
                    most = most.max(handed - written.load(Ordering::SeqCst));
                }
                assert!(
                    most <= in_flight(threads),
                    "{most} chunks in memory, at most {} allowed",
                    in_flight(threads)
                );
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(written.load(Ordering::SeqCst), 40);
    }

    #[test]
    fn a_failing_output_stops_the_producer() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = payload();
        let r = compress(Compression::new(Codec::Gzip), Broken, |w| {
            for _ in 0..50 {
                w.write_all(&data)?;
            }
            Ok(())
        });
        let err = format!("{:#}", r.err().expect("a broken output fails"));
        assert!(err.contains("disk full"), "{err}");
    }
}
