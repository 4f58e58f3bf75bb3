//! Files that come from outside (weights, model definitions, engine directories, tokenizer and
//! config files, plugins): only regular files are opened, so a FIFO, socket or device named as a
//! model fails at once instead of blocking or streaming forever, and whole-file reads check what
//! they got against the size the file had when opened, so a file truncated (or grown) while it is
//! read is an error. Reads go through `read(2)`, never a memory map: a file that shrinks under a
//! mapping raises SIGBUS on the next access, a read just returns fewer bytes.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What kind of non-regular file `meta` is, for messages ("a FIFO").
fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

fn not_regular(meta: &Metadata) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{}, not a regular file", kind_of(meta)))
}

/// Checks that `path` is a regular file (following symlinks) without opening it.
pub fn check_regular(path: &Path) -> io::Result<Metadata> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        Ok(meta)
    } else {
        Err(not_regular(&meta))
    }
}

/// Opens a regular file for reading and returns it with its size. The path is checked before
/// the open, and the opened file again (`fstat`), so a path swapped for a FIFO in between is
/// still refused; the open itself is non-blocking, so even then it cannot wait for a writer.
pub fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    check_regular(path)?;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok((file, meta.len()))
}

/// Fills `buf` (exactly the file's size as opened) from `file`, then checks the file ends there.
pub fn read_exactly(file: &mut File, buf: &mut [u8]) -> io::Result<()> {
    let want = buf.len();
    let mut got = 0;
    while got < want {
        match file.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file shrank from {want} to {got} bytes while it was read (truncated?)"),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut probe = [0u8; 1];
    loop {
        match file.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the file grew past {want} bytes while it was read (being written?)"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The whole of a regular file, at most `limit` bytes (a larger file is refused before reading).
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let (mut file, size) = open_regular(path)?;
    if size > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{size} bytes is more than the {limit} this file may have"),
        ));
    }
    let len = usize::try_from(size).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
    let mut buf = vec![0u8; len];
    read_exactly(&mut file, &mut buf)?;
    Ok(buf)
}

/// A regular file as UTF-8 text, at most `limit` bytes.
pub fn read_regular_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")))
}

/// The most bytes a text file of a model (config.json, tokenizer.json, a TOML definition,
/// plan.json) may have: generous for real ones (a 150k-token tokenizer.json is ~10 MB, a
/// plan.json a few MB), and still a bound on what a wrong path can make us read.
pub const TEXT_LIMIT: u64 = 1 << 30;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fifos_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("model.gguf");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open_regular(&fifo).unwrap_err().to_string();
        assert_eq!(err, "a FIFO, not a regular file");
        let err = read_regular(dir.path(), TEXT_LIMIT).unwrap_err().to_string();
        assert_eq!(err, "a directory, not a regular file");
        let err = read_regular(Path::new("/dev/null"), TEXT_LIMIT).unwrap_err().to_string();
        assert_eq!(err, "a character device, not a regular file");
    }

    #[test]
    fn reads_whole_files_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::File::create(&path).unwrap().write_all(b"{\"a\": 1}").unwrap();
        assert_eq!(read_regular_string(&path, 100).unwrap(), "{\"a\": 1}");
        let err = read_regular(&path, 4).unwrap_err().to_string();
        assert!(err.contains("8 bytes is more than the 4"), "{err}");
    }

    #[test]
    fn a_file_shorter_than_its_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, vec![1u8; 100]).unwrap();
        let (mut file, size) = open_regular(&path).unwrap();
        // Truncated after the size was taken: the read sees the shorter file.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(40).unwrap();
        let mut buf = vec![0u8; size as usize];
        let err = read_exactly(&mut file, &mut buf).unwrap_err().to_string();
        assert!(err.contains("shrank from 100 to 40 bytes"), "{err}");
    }
}
