//! Reader for CTranslate2's `model.bin` (format versions 5 and 6).
//!
//! Layout, all little-endian: `u32 version`, `string spec name`, `u32 spec revision`, `u32 variable count`, then per
//! variable `string name`, `u8 rank`, `rank × u32 dims`, `u8 dtype`, `u32 byte count`, data; then `u32 alias count`
//! and `(string alias, string target)` pairs. A string is a `u16` length followed by that many bytes, the last one
//! a NUL. The reader never trusts a length: every read is bounds-checked, so a truncated or hostile file is an
//! error, not a panic (the fuzz target for weight files drives [`parse`]).
use std::collections::HashMap;
use std::ops::Range;

/// Element type codes, in CTranslate2's `DataType` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::BF16,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One variable: where its bytes are in the file, and how to read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub bytes: Range<usize>,
}

/// A parsed file: the spec and every variable (aliases resolved to their targets).
#[derive(Debug)]
pub struct Ct2File<'a> {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    data: &'a [u8],
    variables: HashMap<String, Variable>,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            format!(
                "truncated at byte {} reading {what} ({n} bytes wanted, {} left)",
                self.pos,
                self.data.len() - self.pos
            )
        })?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = usize::from(self.u16(what)?);
        let raw = self.take(n, what)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
}

/// Parses the header and variable table of `data` (no element is converted yet).
pub fn parse(data: &[u8]) -> Result<Ct2File<'_>, String> {
    let mut c = Cursor { data, pos: 0 };
    let version = c.u32("format version")?;
    if !(5..=6).contains(&version) {
        return Err(format!("CTranslate2 format version {version} is not supported (expected 5 or 6)"));
    }
    let spec = c.string("spec name")?;
    let revision = c.u32("spec revision")?;
    let count = c.u32("variable count")? as usize;
    let mut variables = HashMap::with_capacity(count.min(4096));
    for _ in 0..count {
        let name = c.string("variable name")?;
        let rank = usize::from(c.u8("rank")?);
        if rank > 8 {
            return Err(format!("variable {name:?} has rank {rank}"));
        }
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(c.u32("dimension")? as usize);
        }
        let code = c.u8("dtype")?;
        let dtype = DType::from_code(code).ok_or_else(|| format!("variable {name:?} has unknown dtype {code}"))?;
        let n_bytes = c.u32("byte count")? as usize;
        let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if elements.and_then(|e| e.checked_mul(dtype.size())) != Some(n_bytes) {
            return Err(format!("variable {name:?}: {n_bytes} bytes do not hold shape {shape:?} of {dtype:?}"));
        }
        let start = c.pos;
        c.take(n_bytes, "variable data")?;
        variables.insert(name, Variable { shape, dtype, bytes: start..start + n_bytes });
    }
    let aliases = c.u32("alias count")? as usize;
    for _ in 0..aliases {
        let alias = c.string("alias")?;
        let target = c.string("alias target")?;
        let var = variables.get(&target).cloned().ok_or_else(|| format!("alias {alias:?} names unknown {target:?}"))?;
        variables.insert(alias, var);
    }
    if c.pos != data.len() {
        return Err(format!("{} trailing bytes after the alias table", data.len() - c.pos));
    }
    Ok(Ct2File { version, spec, revision, data, variables })
}

impl Ct2File<'_> {
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.variables.keys().map(String::as_str)
    }

    /// The variable as f32 (from f32, f16 or bf16), checked against `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let var = self.variables.get(name).ok_or_else(|| format!("the model has no variable {name:?}"))?;
        if var.shape != shape {
            return Err(format!("{name:?} has shape {:?}, expected {shape:?}", var.shape));
        }
        let raw = &self.data[var.bytes.clone()];
        let out: Vec<f32> = match var.dtype {
            DType::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            DType::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            DType::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(format!("{name:?} is {other:?}; only float weights are supported (not quantised)")),
        };
        if out.iter().any(|v| !v.is_finite()) {
            return Err(format!("{name:?} holds NaN or infinite values"));
        }
        Ok(out)
    }

    /// A scalar integer flag (`num_heads`, `pre_norm`, ...).
    pub fn scalar(&self, name: &str) -> Result<i64, String> {
        let var = self.variables.get(name).ok_or_else(|| format!("the model has no variable {name:?}"))?;
        let raw = &self.data[var.bytes.clone()];
        if !var.shape.is_empty() {
            return Err(format!("{name:?} is not a scalar"));
        }
        Ok(match var.dtype {
            DType::I8 => i64::from(raw[0] as i8),
            DType::I16 => i64::from(i16::from_le_bytes([raw[0], raw[1]])),
            DType::I32 => i64::from(i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]])),
            other => return Err(format!("{name:?} is {other:?}, expected an integer scalar")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn tiny_file() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&6u32.to_le_bytes());
        string(&mut f, "WhisperSpec");
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&2u32.to_le_bytes());
        string(&mut f, "w");
        f.push(2);
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&2u32.to_le_bytes());
        f.push(4);
        f.extend_from_slice(&4u32.to_le_bytes());
        f.extend_from_slice(&half::f16::from_f32(1.5).to_le_bytes());
        f.extend_from_slice(&half::f16::from_f32(-2.0).to_le_bytes());
        string(&mut f, "heads");
        f.push(0);
        f.push(2);
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&6i16.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        string(&mut f, "alias");
        string(&mut f, "w");
        f
    }

    #[test]
    fn reads_variables_scalars_and_aliases() {
        let bytes = tiny_file();
        let file = parse(&bytes).unwrap();
        assert_eq!((file.version, file.spec.as_str(), file.revision), (6, "WhisperSpec", 3));
        assert_eq!(file.f32("w", &[1, 2]).unwrap(), vec![1.5, -2.0]);
        assert_eq!(file.f32("alias", &[1, 2]).unwrap(), vec![1.5, -2.0]);
        assert_eq!(file.scalar("heads").unwrap(), 6);
        assert!(file.f32("w", &[2, 1]).unwrap_err().contains("expected [2, 1]"));
        assert!(file.f32("nope", &[1]).unwrap_err().contains("no variable"));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = tiny_file();
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "prefix of {cut} bytes parsed");
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(parse(&bad).unwrap_err().contains("version 9"));
    }
}
