//! Reads a safetensors file one tensor at a time, with positioned reads into buffers the tensors
//! then own.
//!
//! burn-store maps the whole file and copies each tensor out of the mapping. Every page of the
//! mapping it touched stays resident until the store is dropped, so loading a model peaked at twice
//! its size (OPUS-MT base: 643 MB resident for 298 MB of weights). Reading each tensor straight into
//! its own buffer keeps the peak at the model plus nothing: the buffer becomes the tensor's storage.
//! Hand-written because neither burn-store nor the `safetensors` crate reads without a mapping or a
//! whole-file buffer.

use crate::error::{Error, Result};
use burn::module::ParamId;
use burn::store::{TensorSnapshot, TensorSnapshotError};
use burn::tensor::{DType, TensorData};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// The format's own cap on its JSON header; a larger length is damage, not a header to allocate.
const MAX_HEADER: u64 = 100_000_000;

/// A safetensors file's header: where its data starts and the JSON describing each tensor.
pub struct Header {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes from the start of the file to the first byte of tensor data.
    data_start: u64,
    file_len: u64,
    /// Tensor name → `{dtype, shape, data_offsets}`, and `__metadata__`.
    json: serde_json::Map<String, serde_json::Value>,
}

fn corrupt(path: &Path, message: String) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("not a safetensors file: {message}"),
    }
}

impl Header {
    /// Opens `path` and reads its header alone.
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|_| corrupt(path, "shorter than its 8-byte header length".into()))?;
        let len = u64::from_le_bytes(len);
        if len > MAX_HEADER || len > file_len.saturating_sub(8) {
            return Err(corrupt(
                path,
                format!("its header length ({len} bytes) does not fit in the file"),
            ));
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header)
            .map_err(|e| Error::io(path, e))?;
        let json = match serde_json::from_slice(&header) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(corrupt(path, "its header is not a JSON object".into())),
            Err(e) => return Err(corrupt(path, format!("its header is not JSON ({e})"))),
        };
        Ok(Header {
            file: Arc::new(file),
            path: path.to_path_buf(),
            data_start: 8 + len,
            file_len,
            json,
        })
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> std::collections::HashMap<String, String> {
        self.json
            .get("__metadata__")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the tensors the file holds.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.json
            .keys()
            .filter(|k| *k != "__metadata__")
            .map(String::as_str)
    }

    /// The tensor `name`, read now; `None` when the file has no such tensor.
    pub fn tensor(&self, name: &str) -> Result<Option<TensorData>> {
        let Some(entry) = self.entry(name) else {
            return Ok(None);
        };
        let (info, begin) = self.locate(name, entry)?;
        read_tensor(&self.file, begin, &info.shape, info.dtype)
            .map(Some)
            .map_err(|e| corrupt(&self.path, format!("tensor {name:?}: {e}")))
    }

    /// The shape and type of tensor `name`, checked against the file, without reading it; `None`
    /// when the file has no such tensor.
    pub fn describe(&self, name: &str) -> Result<Option<(Vec<usize>, DType)>> {
        let Some(entry) = self.entry(name) else {
            return Ok(None);
        };
        let (info, _) = self.locate(name, entry)?;
        Ok(Some((info.shape, info.dtype)))
    }

    /// Rows `rows` of the tensor `name` `[rows, …]` of one-byte values, read now into `out` (which
    /// must hold exactly those rows): a stored int8 weight is packed a panel at a time, so loading
    /// never holds a whole weight beside its packed copy (30 MB for OPUS-MT base's vocabulary).
    pub fn read_byte_rows(
        &self,
        name: &str,
        rows: std::ops::Range<usize>,
        out: &mut [u8],
    ) -> Result<()> {
        let entry = self
            .entry(name)
            .ok_or_else(|| corrupt(&self.path, format!("tensor {name:?} is missing")))?;
        let (info, begin) = self.locate(name, entry)?;
        let row: usize = info.shape.iter().skip(1).product();
        let fits = info.dtype.size() == 1
            && info
                .shape
                .first()
                .is_some_and(|&n| rows.start <= rows.end && rows.end <= n)
            && out.len() == rows.len() * row;
        if !fits {
            return Err(corrupt(
                &self.path,
                format!(
                    "tensor {name:?} ({:?}, shape {:?}) has no one-byte rows {rows:?} of {} bytes",
                    info.dtype,
                    info.shape,
                    out.len()
                ),
            ));
        }
        read_at(&self.file, out, begin + (rows.start * row) as u64)
            .map_err(|e| corrupt(&self.path, format!("tensor {name:?}: {e}")))
    }

    /// The header's entry for tensor `name` (`__metadata__` is not a tensor).
    fn entry(&self, name: &str) -> Option<&serde_json::Value> {
        self.json.get(name).filter(|_| name != "__metadata__")
    }

    /// A tensor's description and the file offset of its first byte, checked against the file.
    fn locate(&self, name: &str, entry: &serde_json::Value) -> Result<(TensorInfo, u64)> {
        let info = TensorInfo::parse(entry)
            .map_err(|m| corrupt(&self.path, format!("tensor {name:?}: {m}")))?;
        let (begin, end) = (
            self.data_start.saturating_add(info.offsets[0]),
            self.data_start.saturating_add(info.offsets[1]),
        );
        let expected = info.numel().saturating_mul(info.dtype.size() as u64);
        if begin > end || end > self.file_len || end - begin != expected {
            return Err(corrupt(
                &self.path,
                format!(
                    "tensor {name:?} claims bytes {}..{} of a {}-byte data section for {} values \
                     of {:?}",
                    info.offsets[0],
                    info.offsets[1],
                    self.file_len - self.data_start,
                    info.numel(),
                    info.dtype
                ),
            ));
        }
        Ok((info, begin))
    }

    /// One snapshot per tensor, each reading its bytes from the file when burn applies it.
    pub fn snapshots(&self) -> Result<Vec<TensorSnapshot>> {
        let mut snapshots = Vec::with_capacity(self.json.len());
        for (name, entry) in &self.json {
            if name == "__metadata__" {
                continue;
            }
            let (info, begin) = self.locate(name, entry)?;
            let file = Arc::clone(&self.file);
            let shape = info.shape.clone();
            let dtype = info.dtype;
            let read = Rc::new(move || read_tensor(&file, begin, &shape, dtype));
            snapshots.push(TensorSnapshot::from_closure(
                read,
                info.dtype,
                info.shape.clone().into(),
                name.split('.').map(str::to_owned).collect(),
                Vec::new(),
                ParamId::new(),
            ));
        }
        Ok(snapshots)
    }
}

struct TensorInfo {
    dtype: DType,
    shape: Vec<usize>,
    offsets: [u64; 2],
}

impl TensorInfo {
    fn parse(entry: &serde_json::Value) -> std::result::Result<Self, String> {
        let dtype = match entry.get("dtype").and_then(|d| d.as_str()) {
            Some("F64") => DType::F64,
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            Some("BF16") => DType::BF16,
            Some("I64") => DType::I64,
            Some("I32") => DType::I32,
            Some("I16") => DType::I16,
            Some("I8") => DType::I8,
            Some("U8") => DType::U8,
            Some(other) => return Err(format!("unsupported dtype {other}")),
            None => return Err("no dtype".into()),
        };
        let numbers = |key: &str| -> std::result::Result<Vec<u64>, String> {
            entry
                .get(key)
                .and_then(|v| v.as_array())
                .ok_or_else(|| format!("no {key}"))?
                .iter()
                .map(|v| v.as_u64().ok_or_else(|| format!("{key} holds {v}")))
                .collect()
        };
        let shape = numbers("shape")?
            .into_iter()
            .map(|d| usize::try_from(d).map_err(|_| format!("dimension {d} too large")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let offsets = numbers("data_offsets")?;
        let [begin, end] = offsets[..] else {
            return Err(format!("data_offsets {offsets:?} are not two numbers"));
        };
        Ok(TensorInfo {
            dtype,
            shape,
            offsets: [begin, end],
        })
    }

    fn numel(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |n, &d| n.saturating_mul(d as u64))
    }
}

/// Reads one tensor's little-endian values at `offset`. Floats land in a `Vec<f32>` (aligned for
/// the tensor that adopts it, so burn does not copy them again); other types go through bytes.
fn read_tensor(
    file: &File,
    offset: u64,
    shape: &[usize],
    dtype: DType,
) -> std::result::Result<TensorData, TensorSnapshotError> {
    let numel: usize = shape.iter().product();
    let io = |e: std::io::Error| TensorSnapshotError::IoError(e.to_string());
    if dtype == DType::F32 && cfg!(target_endian = "little") {
        let mut values = vec![0f32; numel];
        // SAFETY: `values` owns `4 · numel` initialized bytes, every bit pattern is a valid f32,
        // and the byte view is dropped before `values` is used again.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), 4 * numel) };
        read_at(file, bytes, offset).map_err(io)?;
        return Ok(TensorData::new(values, shape.to_vec()));
    }
    let mut bytes = vec![0u8; numel * dtype.size()];
    read_at(file, &mut bytes, offset).map_err(io)?;
    Ok(TensorData::from_bytes_vec(bytes, shape.to_vec(), dtype))
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    // `&File` reads and seeks through the shared handle; the loader reads one tensor at a time.
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}
