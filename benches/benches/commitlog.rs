//! The commit log on this machine's disk.
//!
//! - A tick's write made durable (write + fdatasync), per device: io_uring (the write
//!   linked to the fdatasync) and the fallback (`pwrite` then `fdatasync`), for frames of
//!   4 KiB and 64 KiB, appended to one file: latency percentiles with hdrhistogram.
//! - The writer under load: ticks appended as fast as the tick thread could hand them
//!   over, batched by the writer into as few writes as the disk allows: ticks per second
//!   made durable, and ticks per write.
//!
//! - Appending to a preallocated file, and with O_DIRECT: whether the log should
//!   preallocate its segments and write aligned frames.
//!
//! Files go to `target/commitlog-bench` (the project's disk, not a tmpfs).
//! Run with `cargo bench -p tickdb-benches --bench commitlog`.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use tickdb_engine::commitlog::device::{DeviceKind, IoMode, open_device};
use tickdb_engine::commitlog::writer::OnDurable;
use tickdb_engine::commitlog::{LogConfig, LogEnd, LogWriter};

fn bench_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/commitlog-bench").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    dir
}

fn device_latency() {
    println!("\n### A tick's frame made durable (write + fdatasync), appended to one file\n");
    println!("| device | frame | writes | p50 µs | p90 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|---|---|");
    for mode in [IoMode::Auto, IoMode::Pwrite] {
        for size in [4 << 10, 64 << 10] {
            let dir = bench_dir("device");
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(dir.join("log"))
                .expect("file");
            let (mut device, why_not) = open_device(file, mode);
            if mode == IoMode::Auto && device.kind() == DeviceKind::Pwrite {
                println!("| io_uring unavailable: {} | | | | | | |", why_not.unwrap_or_default());
                continue;
            }
            let frame = vec![0x5Au8; size];
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut offset = 0u64;
            for i in 0..330 {
                let started = Instant::now();
                device.write_durable(offset, &frame).expect("write");
                if i >= 30 {
                    h.saturating_record(started.elapsed().as_micros() as u64);
                }
                offset += size as u64;
            }
            let q = |q| h.value_at_quantile(q);
            let kind = match device.kind() {
                DeviceKind::IoUring => "io_uring",
                DeviceKind::Pwrite => "pwrite + fdatasync",
            };
            println!(
                "| {kind} | {} KiB | {} | {} | {} | {} | {} |",
                size >> 10,
                h.len(),
                q(0.5),
                q(0.9),
                q(0.99),
                h.max()
            );
        }
    }
}

fn writer_throughput() {
    const TICKS: u64 = 3000;
    println!("\n### The writer under load: {TICKS} ticks handed over as fast as possible\n");
    println!("| device | tick payload | ticks/s durable | MB/s | ticks per write |");
    println!("|---|---|---|---|---|");
    for mode in [IoMode::Auto, IoMode::Pwrite] {
        for size in [1 << 10, 16 << 10] {
            let dir = bench_dir("writer");
            let end = LogEnd { segment: None, last_tick: None, next_tx: 0, truncated: None };
            let writes = Arc::new(AtomicU64::new(0));
            let counter = Arc::clone(&writes);
            let on_durable: OnDurable = Box::new(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            });
            let mut writer =
                LogWriter::open(&dir, &end, LogConfig { io: mode, ..LogConfig::default() }, on_durable)
                    .expect("writer");
            let kind = writer.device().0;
            let started = Instant::now();
            for tick in 1..=TICKS {
                writer.append(tick, 10, vec![7u8; size]).expect("append");
            }
            writer.wait_durable(TICKS).expect("durable");
            let elapsed = started.elapsed().as_secs_f64();
            writer.close().expect("close");
            let writes = writes.load(Ordering::Relaxed).max(1);
            let name = match kind {
                DeviceKind::IoUring => "io_uring",
                DeviceKind::Pwrite => "pwrite + fdatasync",
            };
            let mb = (TICKS as f64 * size as f64) / elapsed / 1e6;
            println!(
                "| {name} | {} KiB | {:.0} | {mb:.1} | {:.1} |",
                size >> 10,
                TICKS as f64 / elapsed,
                TICKS as f64 / writes as f64
            );
        }
    }
}

/// A 4 KiB-aligned buffer, as O_DIRECT needs.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Aligned { ptr, layout }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

fn file_variants() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    println!("\n### 4 KiB frames appended with pwrite + fdatasync: plain, preallocated, O_DIRECT\n");
    println!("| file | writes | p50 µs | p90 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|---|");
    for (name, preallocate, direct) in [
        ("appended (grows)", false, false),
        ("preallocated", true, false),
        ("preallocated, O_DIRECT", true, true),
    ] {
        let dir = bench_dir("variants");
        let path = dir.join("log");
        let mut options = OpenOptions::new();
        options.create(true).write(true).truncate(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options.open(&path).expect("file");
        if preallocate {
            // SAFETY: a valid open descriptor and a non-negative range.
            let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, 8 << 20) };
            assert_eq!(r, 0, "posix_fallocate");
            file.sync_all().expect("sync");
        }
        let frame = Aligned::new(4096);
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for i in 0..330u64 {
            let started = Instant::now();
            file.write_all_at(frame.bytes(), i * 4096).expect("write");
            file.sync_data().expect("sync");
            if i >= 30 {
                h.saturating_record(started.elapsed().as_micros() as u64);
            }
        }
        let q = |q| h.value_at_quantile(q);
        println!("| {name} | {} | {} | {} | {} | {} |", h.len(), q(0.5), q(0.9), q(0.99), h.max());
    }
}

fn main() {
    file_variants();
    device_latency();
    writer_throughput();
    let _ =
        std::fs::remove_dir_all(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/commitlog-bench"));
}
