//! Compresses a layer's tar stream on every core, streaming, with output bytes that do not
//! depend on the number of threads.
//!
//! The stream is cut into fixed [`CHUNK`]-byte chunks; each chunk is compressed on its own —
//! gzip: one gzip member per chunk (libdeflate, level 5, zero mtime, OS byte 255); zstd: one
//! zstd frame per chunk (level 1, with checksum) — and the results are written in order.
//! Concatenated gzip members and concatenated zstd frames are each one valid stream (RFC 1952
//! §2.2, RFC 8878 §3.1) that every OCI runtime reads; eStargz and zstd:chunked layers are built
//! the same way. Because the cut points depend only on the bytes, 1 thread and 64 threads give
//! the same blob.
//!
//! One pool of compressing threads (one per core) serves every layer the process writes at
//! once, and at most [`in_flight`] chunks exist at any time across all of them, their buffers
//! reused: memory stays flat in the payload's size, in the number of layers and in the number
//! of images built side by side.
//!
//! The scheduling is written here rather than taken from gzp: gzp chains its blocks through
//! zlib dictionaries (several times slower per core than libdeflate), has no zstd framing that
//! is independent of its thread count, and runs a pool per stream; the compressors themselves
//! are libdeflate and zstd.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

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

/// How many chunks may be in memory at once in the whole process (handed over, compressing, or
/// compressed and waiting to be written): two per compressing thread keep every core busy
/// while the writers catch up, one more covers the hand-over.
#[cfg(test)]
pub fn in_flight() -> usize {
    budget(pool().workers)
}

fn budget(workers: usize) -> usize {
    2 * workers + 1
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

    /// Compresses `data` into `scratch` (grown as needed) and returns the compressed length.
    fn compress_into(&mut self, data: &[u8], scratch: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            ChunkCompressor::Gzip(c) => {
                let bound = c.gzip_compress_bound(data.len());
                if scratch.len() < bound {
                    scratch.resize(bound, 0);
                }
                c.gzip_compress(data, scratch)
                    .map_err(|e| io::Error::other(format!("gzip: {e:?}")))
            }
            ChunkCompressor::Zstd(c) => {
                let bound = zstd::zstd_safe::compress_bound(data.len());
                if scratch.len() < bound {
                    scratch.resize(bound, 0);
                }
                c.compress_to_buffer(data, scratch.as_mut_slice())
            }
        }
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
        let pool = pool();
        let (done_tx, done_rx) = channel::<Done>();
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopped);
        let writer = s.spawn(move || -> io::Result<W> {
            /// Tells the producer, however the writer ends, that nothing more is written.
            struct Stopped(Arc<AtomicBool>);
            impl Drop for Stopped {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _stopped = Stopped(flag);
            let mut out = out;
            let mut next = 0u64;
            let mut pending = BTreeMap::new();
            for done in done_rx {
                pending.insert(done.seq, done);
                while let Some(done) = pending.remove(&next) {
                    let bytes = done.bytes?;
                    out.write_all(&bytes)?;
                    next += 1;
                    // The buffer goes back to the pool, the credit with it (on drop).
                    pool.spare_output(bytes);
                }
            }
            Ok(out)
        });

        let mut w = ChunkWriter {
            buf: pool.input_buffer(),
            sent: 0,
            sink: Sink::Pool {
                codec: comp.codec,
                done: Some(done_tx),
                stopped,
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

/// The right to have one more chunk in memory: taken before a chunk is handed over, given back
/// when it is dropped (written, or abandoned on an error), whatever path it took.
struct Credit(&'static Pool);

impl Drop for Credit {
    fn drop(&mut self) {
        let pool = self.0;
        if let Ok(mut free) = pool.credits.lock() {
            *free += 1;
        }
        pool.credit_freed.notify_one();
    }
}

/// A chunk to compress, and where its result goes.
struct Job {
    seq: u64,
    codec: Codec,
    data: Vec<u8>,
    done: Sender<Done>,
    credit: Credit,
}

/// A compressed chunk on its way to its stream's writer.
struct Done {
    seq: u64,
    bytes: io::Result<Vec<u8>>,
    _credit: Credit,
}

/// The process's compressing threads, their queue, the credits and the spare buffers.
struct Pool {
    /// Read by the tests, which check the budget it sets.
    #[cfg_attr(not(test), allow(dead_code))]
    workers: usize,
    queue: Mutex<VecDeque<Job>>,
    queued: Condvar,
    credits: Mutex<usize>,
    credit_freed: Condvar,
    inputs: Mutex<Vec<Vec<u8>>>,
    outputs: Mutex<Vec<Vec<u8>>>,
}

/// The pool, its threads started on first use (one per core).
fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            workers,
            queue: Mutex::new(VecDeque::new()),
            queued: Condvar::new(),
            credits: Mutex::new(budget(workers)),
            credit_freed: Condvar::new(),
            inputs: Mutex::new(Vec::new()),
            outputs: Mutex::new(Vec::new()),
        }));
        for n in 0..workers {
            // A pool that cannot start a thread runs on those it has; with none, every
            // chunk waits forever: better to stop at once.
            if let Err(e) = std::thread::Builder::new()
                .name(format!("compress-{n}"))
                .spawn(move || pool.work())
            {
                if n == 0 {
                    panic!("cannot start a compressing thread: {e}");
                }
            }
        }
        pool
    })
}

impl Pool {
    /// Waits for a free credit.
    fn credit(&'static self) -> io::Result<Credit> {
        let closed = || io::Error::other("the compression pool failed");
        let mut free = self.credits.lock().map_err(|_| closed())?;
        while *free == 0 {
            free = self.credit_freed.wait(free).map_err(|_| closed())?;
        }
        *free -= 1;
        Ok(Credit(self))
    }

    fn submit(&self, job: Job) -> io::Result<()> {
        self.queue
            .lock()
            .map_err(|_| io::Error::other("the compression pool failed"))?
            .push_back(job);
        self.queued.notify_one();
        Ok(())
    }

    /// An empty buffer with room for a chunk (a spare one when there is one).
    fn input_buffer(&self) -> Vec<u8> {
        self.inputs
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    fn spare_input(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut v) = self.inputs.lock() {
            v.push(buf);
        }
    }

    fn spare_output(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut v) = self.outputs.lock() {
            v.push(buf);
        }
    }

    /// A worker: compresses queued chunks, oldest first, for as long as the process runs.
    fn work(&'static self) {
        let mut gzip = None;
        let mut zstd = None;
        // libdeflate writes into a slice of the bound's size; the result is copied out of it
        // into a spare buffer of the compressed size.
        let mut scratch = Vec::new();
        loop {
            let job = {
                let Ok(mut q) = self.queue.lock() else { return };
                loop {
                    if let Some(job) = q.pop_front() {
                        break job;
                    }
                    match self.queued.wait(q) {
                        Ok(g) => q = g,
                        Err(_) => return,
                    }
                }
            };
            let slot = match job.codec {
                Codec::Gzip => &mut gzip,
                Codec::Zstd => &mut zstd,
            };
            let bytes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if slot.is_none() {
                    *slot = Some(ChunkCompressor::new(job.codec)?);
                }
                let c = slot
                    .as_mut()
                    .ok_or_else(|| io::Error::other("no compressor"))?;
                let n = c.compress_into(&job.data, &mut scratch)?;
                let mut out = self
                    .outputs
                    .lock()
                    .ok()
                    .and_then(|mut v| v.pop())
                    .unwrap_or_default();
                out.extend_from_slice(&scratch[..n]);
                Ok(out)
            }))
            .unwrap_or_else(|_| Err(io::Error::other("a compressor panicked")));
            self.spare_input(job.data);
            // A stream whose writer has stopped no longer wants it: the credit comes back.
            let _ = job.done.send(Done {
                seq: job.seq,
                bytes,
                _credit: job.credit,
            });
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
    /// Handed to the pool; the results go to this stream's writer.
    Pool {
        codec: Codec,
        done: Option<Sender<Done>>,
        /// Set when the writer has stopped (on an error): no use compressing more.
        stopped: Arc<AtomicBool>,
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
        let seq = self.sent;
        self.sent += 1;
        match &mut self.sink {
            Sink::Inline { compressor, out } => {
                let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
                out.write_all(&compressor.compress(&data)?)
            }
            Sink::Pool {
                codec,
                done,
                stopped,
            } => {
                let closed = || io::Error::other("the compressed-layer writer stopped");
                if stopped.load(Ordering::SeqCst) {
                    return Err(closed());
                }
                let done = done.as_ref().ok_or_else(closed)?.clone();
                let pool = pool();
                let credit = pool.credit()?;
                let data = std::mem::replace(&mut self.buf, pool.input_buffer());
                pool.submit(Job {
                    seq,
                    codec: *codec,
                    data,
                    done,
                    credit,
                })
            }
        }
    }

    /// Sends the last chunk (an empty stream still gets one, so the output is a valid stream).
    fn finish(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() || self.sent == 0 {
            self.ship()?;
        }
        if let Sink::Pool { done, .. } = &mut self.sink {
            done.take();
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
                    most <= in_flight(),
                    "{most} chunks in memory, at most {} allowed",
                    in_flight()
                );
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(written.load(Ordering::SeqCst), 40);
    }

    #[test]
    fn streams_compressed_side_by_side_share_one_budget() {
        use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
        // Chunks handed over and not yet written, over all streams, and the most seen.
        static LIVE: AtomicIsize = AtomicIsize::new(0);
        static MOST: AtomicIsize = AtomicIsize::new(0);
        static WRITTEN: AtomicUsize = AtomicUsize::new(0);
        struct Slow;
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_millis(3));
                LIVE.fetch_sub(1, Ordering::SeqCst);
                WRITTEN.fetch_add(1, Ordering::SeqCst);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let chunk = vec![9u8; CHUNK];
        let streams = 6;
        std::thread::scope(|s| {
            for _ in 0..streams {
                s.spawn(|| {
                    let comp = Compression {
                        codec: Codec::Zstd,
                        threads: 2,
                    };
                    compress(comp, Slow, |w| {
                        for _ in 0..12 {
                            // Counted before the chunk is handed over: an upper bound.
                            let now = LIVE.fetch_add(1, Ordering::SeqCst) + 1;
                            MOST.fetch_max(now, Ordering::SeqCst);
                            w.write_all(&chunk)?;
                        }
                        Ok(())
                    })
                    .unwrap();
                });
            }
        });
        assert_eq!(WRITTEN.load(Ordering::SeqCst), streams * 12);
        // Each stream may hold one counted chunk it is about to hand over, beyond the budget.
        let most = MOST.load(Ordering::SeqCst);
        let allowed = (in_flight() + streams) as isize;
        assert!(
            most <= allowed,
            "{most} chunks in memory over {streams} streams, at most {allowed} allowed"
        );
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
        let mut handed = 0;
        let r = compress(Compression::new(Codec::Gzip), Broken, |w| {
            for _ in 0..50 {
                w.write_all(&data)?;
                handed += 1;
            }
            Ok(())
        });
        let err = format!("{:#}", r.err().expect("a broken output fails"));
        assert!(err.contains("disk full"), "{err}");
        assert!(handed < 50, "the producer went on after the output failed");
    }
}
