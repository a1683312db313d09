//! How frames reach the disk: a [`LogDevice`] writes bytes at an offset and makes them
//! durable before it returns. Two implementations: io_uring, with the write linked to
//! an fdatasync in one submission, and a fallback of `pwrite` + `fdatasync`. The
//! fallback works over any [`FileIo`], which is where tests inject faults.

use std::fs::File;
use std::io;

/// The file operations the fallback device needs. Implemented by [`File`]; tests
/// implement it to inject short writes, torn writes, full disks and failed syncs.
pub trait FileIo: Send {
    /// Writes some prefix of `data` at `offset`; returns how many bytes.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<usize>;
    /// Makes every write so far durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
}

impl FileIo for File {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(self, data, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// Which writer a log uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    IoUring,
    Pwrite,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::IoUring => "io_uring (write linked to fdatasync)",
            DeviceKind::Pwrite => "pwrite + fdatasync",
        })
    }
}

/// Writes bytes durably; see the module docs.
pub trait LogDevice: Send {
    /// Writes all of `data` at `offset` and returns once it is durable. An error means
    /// the bytes may be partly written and nothing is known to be durable.
    fn write_durable(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// As [`LogDevice::write_durable`], for a buffer the device may keep: it may swap
    /// `data` with a buffer of its own (io_uring does, to write without a copy), so
    /// `data` holds unspecified bytes afterwards.
    fn write_durable_owned(&mut self, offset: u64, data: &mut Vec<u8>) -> io::Result<()> {
        self.write_durable(offset, data)
    }

    fn kind(&self) -> DeviceKind;
}

/// `pwrite` until everything is written, then `fdatasync`.
#[derive(Debug)]
pub struct PwriteDevice<F = File> {
    file: F,
}

impl<F: FileIo> PwriteDevice<F> {
    pub fn new(file: F) -> Self {
        PwriteDevice { file }
    }
}

impl<F: FileIo> LogDevice for PwriteDevice<F> {
    fn write_durable(&mut self, mut offset: u64, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.file.write_at(offset, data) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the disk took no bytes")),
                Ok(n) => {
                    offset += n as u64;
                    data = &data[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.file.sync_data()
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Pwrite
    }
}

/// How to choose the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring where the kernel allows it, the fallback otherwise.
    #[default]
    Auto,
    /// Always the fallback writer.
    Pwrite,
}

/// Opens the device for `file` as `mode` asks. When io_uring was wanted but is not
/// available, the second value says why.
pub fn open_device(file: File, mode: IoMode) -> (Box<dyn LogDevice>, Option<String>) {
    match mode {
        IoMode::Pwrite => (Box::new(PwriteDevice::new(file)), None),
        IoMode::Auto => auto_device(file),
    }
}

#[cfg(target_os = "linux")]
fn auto_device(file: File) -> (Box<dyn LogDevice>, Option<String>) {
    match uring::UringDevice::new(file.try_clone()) {
        Ok(device) => (Box::new(device), None),
        Err(e) => (Box::new(PwriteDevice::new(file)), Some(format!("io_uring is unavailable: {e}"))),
    }
}

#[cfg(not(target_os = "linux"))]
fn auto_device(file: File) -> (Box<dyn LogDevice>, Option<String>) {
    (Box::new(PwriteDevice::new(file)), Some("io_uring exists only on Linux".into()))
}

#[cfg(target_os = "linux")]
mod uring {
    #![allow(unsafe_code)]

    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    use io_uring::{IoUring, opcode, squeue, types};

    use super::{DeviceKind, LogDevice};

    const WRITE: u64 = 1;
    const SYNC: u64 = 2;

    /// A write and an fdatasync, linked, per call: one submission, one wait.
    pub(super) struct UringDevice {
        file: File,
        ring: IoUring,
        buf: Vec<u8>,
        broken: bool,
    }

    impl std::fmt::Debug for UringDevice {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("UringDevice").finish_non_exhaustive()
        }
    }

    impl UringDevice {
        pub(super) fn new(file: io::Result<File>) -> io::Result<UringDevice> {
            Ok(UringDevice { file: file?, ring: IoUring::new(8)?, buf: Vec::new(), broken: false })
        }

        /// Submits a write of `data` at `offset` linked to an fdatasync; returns the
        /// write's result and the sync's.
        /// Writes `self.buf[start..]` at `offset`, linked to an fdatasync. The kernel
        /// reads from the device's own buffer, which outlives any submission that is
        /// never seen to complete (it is leaked then).
        fn write_and_sync(&mut self, offset: u64, start: usize) -> io::Result<(i32, i32)> {
            if self.broken {
                return Err(io::Error::other(
                    "an earlier io_uring submission was lost; the device is unusable",
                ));
            }
            let data = &self.buf[start..];
            let fd = types::Fd(self.file.as_raw_fd());
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let write = opcode::Write::new(fd, data.as_ptr(), len)
                .offset(offset)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(WRITE);
            let sync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(SYNC);
            // SAFETY: the write entry points into `self.buf`, which is neither touched nor
            // freed until both completions are seen below; if they never are, the
            // buffer is leaked rather than freed, so the kernel never reads freed memory.
            unsafe {
                let mut queue = self.ring.submission();
                queue.push(&write).map_err(|_| io::Error::other("the submission queue is full"))?;
                queue.push(&sync).map_err(|_| io::Error::other("the submission queue is full"))?;
            }
            let (mut written, mut synced) = (None, None);
            while written.is_none() || synced.is_none() {
                match self.ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.broken = true;
                        std::mem::forget(std::mem::take(&mut self.buf));
                        return Err(e);
                    }
                }
                for cqe in self.ring.completion() {
                    match cqe.user_data() {
                        WRITE => written = Some(cqe.result()),
                        _ => synced = Some(cqe.result()),
                    }
                }
            }
            Ok((written.unwrap_or_default(), synced.unwrap_or_default()))
        }
    }

    impl UringDevice {
        /// Writes all of `self.buf` at `offset` and syncs it.
        fn write_buffer(&mut self, mut offset: u64) -> io::Result<()> {
            let mut start = 0;
            loop {
                let remaining = self.buf.len() - start;
                let (written, synced) = self.write_and_sync(offset, start)?;
                if written < 0 {
                    let e = io::Error::from_raw_os_error(-written);
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                if written == 0 && remaining > 0 {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "the disk took no bytes"));
                }
                let written = written as usize;
                if written < remaining {
                    // A short write breaks the link: the sync was cancelled. Write the
                    // rest (and sync) again.
                    offset += written as u64;
                    start += written;
                    continue;
                }
                if synced < 0 {
                    return Err(io::Error::from_raw_os_error(-synced));
                }
                return Ok(());
            }
        }
    }

    impl LogDevice for UringDevice {
        fn write_durable(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.buf.clear();
            self.buf.extend_from_slice(data);
            self.write_buffer(offset)
        }

        fn write_durable_owned(&mut self, offset: u64, data: &mut Vec<u8>) -> io::Result<()> {
            std::mem::swap(&mut self.buf, data);
            self.write_buffer(offset)
        }

        fn kind(&self) -> DeviceKind {
            DeviceKind::IoUring
        }
    }
}
