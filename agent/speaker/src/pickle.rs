//! Just enough of Python's pickle VM to read a legacy (pre-zip) `torch.save` file.
//!
//! The legacy layout is five pickles followed by raw storage bytes:
//!
//! ```text
//! magic (LONG1 0x1950a86a20f9469cfc6c) | protocol (1001) | sys_info dict
//!   | object pickle (tensors as persistent ids) | storage-key list
//!   | for each key in that list: u64 element count (LE) + count * element bytes
//! ```
//!
//! Only the opcodes those pickles use are implemented; anything else is reported by name and offset so a
//! different file fails loudly instead of being half-read. `GLOBAL`s are kept symbolic and `REDUCE` builds
//! a `Value::Call` the caller interprets, so nothing in the file can run code here.

use std::collections::HashMap;

/// A decoded pickle value. Only the shapes torch state dicts need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Insertion-ordered; torch state dicts are OrderedDicts and order is informative in errors.
    Dict(Vec<(Value, Value)>),
    Global {
        module: String,
        name: String,
    },
    /// `callable(*args)` left unevaluated; see `weights.rs` for the two callables torch files use.
    Call {
        callable: Box<Value>,
        args: Box<Value>,
    },
    PersistentId(Box<Value>),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PickleError {
    #[error("pickle ended early at byte {0}")]
    Truncated(usize),
    #[error("unsupported pickle opcode 0x{opcode:02x} ('{printable}') at byte {offset}")]
    Unsupported { opcode: u8, printable: char, offset: usize },
    #[error("malformed pickle at byte {offset}: {what}")]
    Malformed { offset: usize, what: &'static str },
}

/// Reads one pickle starting at `data[*pos]` and advances `pos` past its STOP opcode.
pub(crate) fn read_pickle(data: &[u8], pos: &mut usize) -> Result<Value, PickleError> {
    let mut vm = Vm { data, pos: *pos, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() };
    let value = vm.run()?;
    *pos = vm.pos;
    Ok(value)
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl Vm<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or(PickleError::Truncated(self.pos))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let len = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::Truncated(self.pos))?;
        let text = String::from_utf8(rest[..len].to_vec()).map_err(|_| self.malformed("GLOBAL name is not UTF-8"))?;
        self.pos += len + 1;
        Ok(text)
    }

    fn malformed(&self, what: &'static str) -> PickleError {
        PickleError::Malformed { offset: self.pos, what }
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        self.stack.pop().ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let height = self.marks.pop().ok_or_else(|| self.malformed("no MARK on the stack"))?;
        if height > self.stack.len() {
            return Err(self.malformed("MARK above the stack top"));
        }
        Ok(self.stack.split_off(height))
    }

    fn top_mut(&mut self) -> Result<&mut Value, PickleError> {
        let offset = self.pos;
        self.stack.last_mut().ok_or(PickleError::Malformed { offset, what: "stack underflow" })
    }

    fn memo_get(&self, key: u32) -> Result<Value, PickleError> {
        self.memo.get(&key).cloned().ok_or_else(|| self.malformed("memo key not set"))
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let top = self.stack.last().cloned().ok_or_else(|| self.malformed("PUT on an empty stack"))?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        if items.len() % 2 != 0 {
            return Err(self.malformed("SETITEMS with an odd number of values"));
        }
        let offset = self.pos;
        match self.top_mut()? {
            Value::Dict(entries) => {
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    entries.push((k, v));
                }
                Ok(())
            }
            // `OrderedDict()` arrives as an unevaluated call; the items land in a dict built from it.
            call @ Value::Call { .. } => {
                let mut entries = Vec::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    entries.push((k, v));
                }
                let Value::Call { callable, args } = std::mem::replace(call, Value::None) else { unreachable!() };
                if !is_ordered_dict(&callable) {
                    return Err(PickleError::Malformed {
                        offset,
                        what: "SETITEMS on a call that is not OrderedDict()",
                    });
                }
                let _ = args;
                *call = Value::Dict(entries);
                Ok(())
            }
            _ => Err(PickleError::Malformed { offset, what: "SETITEM(S) target is not a dict" }),
        }
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            let offset = self.pos;
            let opcode = self.u8()?;
            match opcode {
                0x80 => {
                    // PROTO: torch's legacy writer uses protocol 2.
                    let proto = self.u8()?;
                    if proto > 2 {
                        return Err(PickleError::Malformed { offset, what: "pickle protocol above 2" });
                    }
                }
                b'.' => return self.pop(),                 // STOP
                b'(' => self.marks.push(self.stack.len()), // MARK
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),  // NEWTRUE
                0x89 => self.stack.push(Value::Bool(false)), // NEWFALSE
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a => {
                    // LONG1: little-endian two's complement, at most 16 bytes here (the magic number is 10).
                    let n = self.u8()? as usize;
                    if n > 16 {
                        return Err(PickleError::Malformed { offset, what: "LONG1 wider than 128 bits" });
                    }
                    let bytes = self.take(n)?;
                    let mut buf = if bytes.last().is_some_and(|b| b & 0x80 != 0) { [0xffu8; 16] } else { [0u8; 16] };
                    buf[..n].copy_from_slice(bytes);
                    self.stack.push(Value::Int(i128::from_le_bytes(buf)));
                }
                b'G' => {
                    // BINFLOAT is big-endian.
                    let b = self.take(8)?;
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(raw)));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let bytes = self.take(n)?.to_vec();
                    let s = String::from_utf8(bytes)
                        .map_err(|_| PickleError::Malformed { offset, what: "BINUNICODE is not UTF-8" })?;
                    self.stack.push(Value::Str(s));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global { module, name });
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    // TUPLE1..TUPLE3
                    let n = (opcode - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(PickleError::Malformed { offset, what: "TUPLEn on a short stack" });
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'q' => {
                    let key = self.u8()?;
                    self.memo_put(key.into())?;
                }
                b'r' => {
                    let key = self.u32()?;
                    self.memo_put(key)?;
                }
                b'h' => {
                    let key = self.u8()?;
                    let v = self.memo_get(key.into())?;
                    self.stack.push(v);
                }
                b'j' => {
                    let key = self.u32()?;
                    let v = self.memo_get(key)?;
                    self.stack.push(v);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    if is_ordered_dict(&callable) {
                        self.stack.push(Value::Dict(Vec::new()));
                    } else {
                        self.stack.push(Value::Call { callable: Box::new(callable), args: Box::new(args) });
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(Value::PersistentId(Box::new(pid)));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top_mut()? {
                        Value::List(items) => items.push(v),
                        _ => {
                            return Err(PickleError::Malformed { offset, what: "APPEND target is not a list" });
                        }
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top_mut()? {
                        Value::List(list) => list.extend(items),
                        _ => {
                            return Err(PickleError::Malformed { offset, what: "APPENDS target is not a list" });
                        }
                    }
                }
                b'b' => {
                    // BUILD: OrderedDict state (torch's `_metadata` attribute) carries nothing we use.
                    let _state = self.pop()?;
                    if self.stack.is_empty() {
                        return Err(PickleError::Malformed { offset, what: "BUILD on an empty stack" });
                    }
                }
                other => {
                    let printable = if other.is_ascii_graphic() { other as char } else { '?' };
                    return Err(PickleError::Unsupported { opcode: other, printable, offset });
                }
            }
        }
    }
}

fn is_ordered_dict(v: &Value) -> bool {
    matches!(v, Value::Global { module, name } if module == "collections" && name == "OrderedDict")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Result<Value, PickleError> {
        let mut pos = 0;
        read_pickle(bytes, &mut pos)
    }

    #[test]
    fn reads_the_legacy_magic_number() {
        // pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
        let bytes = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";
        assert_eq!(read_all(bytes).unwrap(), Value::Int(0x1950a86a20f9469cfc6c));
    }

    #[test]
    fn reads_dicts_tuples_and_memo() {
        // {'a': (1, 300, 70000), 'b': [None, True], 'c': ('a',)} at protocol 2, the last value via a memo ref.
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01M,\x01J\x70\x11\x01\x00\x87q\x02X\x01\x00\x00\x00bq\x03]q\x04(N\x88eX\x01\x00\x00\x00ch\x01\x85q\x05u.";
        let v = read_all(bytes).unwrap();
        let Value::Dict(entries) = v else { panic!("not a dict: {v:?}") };
        assert_eq!(entries[0].0, Value::Str("a".into()));
        assert_eq!(entries[0].1, Value::Tuple(vec![Value::Int(1), Value::Int(300), Value::Int(70000)]));
        assert_eq!(entries[1].1, Value::List(vec![Value::None, Value::Bool(true)]));
        assert_eq!(entries[2].1, Value::Tuple(vec![Value::Str("a".into())]));
    }

    #[test]
    fn names_unsupported_opcodes() {
        // FRAME (protocol 4) is not something a legacy torch file contains.
        let err = read_all(b"\x95\x00").unwrap_err();
        assert!(err.to_string().contains("0x95"), "{err}");
        assert!(matches!(read_all(b"\x80\x02K"), Err(PickleError::Truncated(_))));
    }
}
