//! A reader for the handful of ONNX protobuf messages the loader needs, so the crate needs neither `protoc`
//! nor generated code:
//!
//! ```text
//! ModelProto.graph(7) -> GraphProto.node(1) ------> NodeProto.op_type(4) / input(1) / output(2) / attribute(5)
//!                        GraphProto.initializer(5)   AttributeProto.name(1) / ints(8) / s(4) / t(5) / g(6)
//!                                                    TensorProto.dims(1) / data_type(2) / float_data(4)
//!                                                                / name(8) / raw_data(9) / data_location(14)
//! ```
//!
//! Silero's export keeps its weights as `Constant` nodes inside `If` branches rather than as initializers, so
//! attributes and nested graphs are decoded too. Everything else is skipped by wire type. ONNX is proto2, where
//! repeated scalars may arrive packed or one by one; both are accepted.

/// `TensorProto.DataType.FLOAT`.
pub(crate) const DATA_TYPE_FLOAT: i32 = 1;

/// Subgraphs nest (`If` inside `If`); a hostile file must not be able to overflow the stack.
const MAX_GRAPH_DEPTH: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct Graph {
    pub nodes: Vec<Node>,
    pub initializers: Vec<Tensor>,
}

#[derive(Debug, Default)]
pub(crate) struct Node {
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Default)]
pub(crate) struct Attribute {
    pub name: String,
    pub ints: Vec<i64>,
    pub bytes: Vec<u8>,
    pub tensor: Option<Tensor>,
    pub graph: Option<Graph>,
}

#[derive(Debug, Default)]
pub(crate) struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i32,
    /// Decoded only for FLOAT tensors (the weights); other element types keep their dims and type only.
    pub floats: Vec<f32>,
    /// Weights stored in a side file (`data_location = EXTERNAL`) are not supported.
    pub external: bool,
}

impl Node {
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// Decodes a `ModelProto` and returns its main graph.
pub(crate) fn parse_model(bytes: &[u8]) -> Result<Graph, String> {
    let mut r = Reader::new(bytes);
    let mut graph = None;
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (7, WireType::Len) => graph = Some(parse_graph(r.len_delimited()?, 0)?),
            _ => r.skip(wire)?,
        }
    }
    graph.ok_or_else(|| "ModelProto has no graph".to_string())
}

fn parse_graph(bytes: &[u8], depth: usize) -> Result<Graph, String> {
    if depth > MAX_GRAPH_DEPTH {
        return Err(format!("subgraphs nested deeper than {MAX_GRAPH_DEPTH}"));
    }
    let mut r = Reader::new(bytes);
    let mut g = Graph::default();
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, WireType::Len) => g.nodes.push(parse_node(r.len_delimited()?, depth)?),
            (5, WireType::Len) => g.initializers.push(parse_tensor(r.len_delimited()?)?),
            _ => r.skip(wire)?,
        }
    }
    Ok(g)
}

fn parse_node(bytes: &[u8], depth: usize) -> Result<Node, String> {
    let mut r = Reader::new(bytes);
    let mut n = Node::default();
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, WireType::Len) => n.inputs.push(r.string()?),
            (2, WireType::Len) => n.outputs.push(r.string()?),
            (4, WireType::Len) => n.op_type = r.string()?,
            (5, WireType::Len) => n.attributes.push(parse_attribute(r.len_delimited()?, depth)?),
            _ => r.skip(wire)?,
        }
    }
    Ok(n)
}

fn parse_attribute(bytes: &[u8], depth: usize) -> Result<Attribute, String> {
    let mut r = Reader::new(bytes);
    let mut a = Attribute::default();
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, WireType::Len) => a.name = r.string()?,
            (4, WireType::Len) => a.bytes = r.len_delimited()?.to_vec(),
            (5, WireType::Len) => a.tensor = Some(parse_tensor(r.len_delimited()?)?),
            (6, WireType::Len) => a.graph = Some(parse_graph(r.len_delimited()?, depth + 1)?),
            (8, WireType::Varint) => a.ints.push(r.varint()? as i64),
            (8, WireType::Len) => {
                let mut packed = Reader::new(r.len_delimited()?);
                while !packed.at_end() {
                    a.ints.push(packed.varint()? as i64);
                }
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(a)
}

fn parse_tensor(bytes: &[u8]) -> Result<Tensor, String> {
    let mut r = Reader::new(bytes);
    let mut t = Tensor::default();
    let mut raw: &[u8] = &[];
    let mut float_data = Vec::new();
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, WireType::Varint) => t.dims.push(r.varint()? as i64),
            (1, WireType::Len) => {
                let mut packed = Reader::new(r.len_delimited()?);
                while !packed.at_end() {
                    t.dims.push(packed.varint()? as i64);
                }
            }
            (2, WireType::Varint) => t.data_type = r.varint()? as i32,
            (4, WireType::Fixed32) => float_data.push(f32::from_bits(r.fixed32()?)),
            (4, WireType::Len) => {
                let packed = r.len_delimited()?;
                if packed.len() % 4 != 0 {
                    return Err("packed float_data length is not a multiple of 4".into());
                }
                float_data.extend(packed.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            }
            (8, WireType::Len) => t.name = r.string()?,
            (9, WireType::Len) => raw = r.len_delimited()?,
            (14, WireType::Varint) => t.external = r.varint()? == 1,
            _ => r.skip(wire)?,
        }
    }
    if t.data_type == DATA_TYPE_FLOAT && !t.external {
        t.floats = if !raw.is_empty() {
            if raw.len() % 4 != 0 {
                return Err(format!("tensor {:?}: raw_data length {} is not a multiple of 4", t.name, raw.len()));
            }
            // ONNX raw_data is little-endian regardless of the host.
            raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        } else {
            float_data
        };
    }
    Ok(t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn key(&mut self) -> Result<Option<(u32, WireType)>, String> {
        if self.at_end() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| "field number out of range".to_string())?;
        let wire = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            5 => WireType::Fixed32,
            other => {
                return Err(format!("unsupported protobuf wire type {other} (field {field})"));
            }
        };
        if field == 0 {
            return Err("protobuf field number 0".into());
        }
        Ok(Some((field, wire)))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated message")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn fixed32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length out of range".to_string())?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, String> {
        let bytes = self.len_delimited()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string field is not UTF-8".to_string())
    }

    fn skip(&mut self, wire: WireType) -> Result<(), String> {
        match wire {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.take(8).map(drop),
            WireType::Len => self.len_delimited().map(drop),
            WireType::Fixed32 => self.take(4).map(drop),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny protobuf writer, enough to build test models by hand.
    #[derive(Default)]
    pub(crate) struct Writer(pub Vec<u8>);

    impl Writer {
        fn varint(&mut self, mut v: u64) {
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(byte);
                    return;
                }
                self.0.push(byte | 0x80);
            }
        }
        pub fn uint(&mut self, field: u32, v: u64) -> &mut Self {
            self.varint(u64::from(field) << 3);
            self.varint(v);
            self
        }
        pub fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
            self.varint((u64::from(field) << 3) | 2);
            self.varint(b.len() as u64);
            self.0.extend_from_slice(b);
            self
        }
        pub fn fixed32(&mut self, field: u32, v: u32) -> &mut Self {
            self.varint((u64::from(field) << 3) | 5);
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
    }

    pub(crate) fn float_tensor(name: &str, dims: &[i64], values: &[f32], raw: bool) -> Vec<u8> {
        let mut t = Writer::default();
        for &d in dims {
            t.uint(1, d as u64);
        }
        t.uint(2, DATA_TYPE_FLOAT as u64).bytes(8, name.as_bytes());
        if raw {
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            t.bytes(9, &raw);
        } else {
            for v in values {
                t.fixed32(4, v.to_bits());
            }
        }
        t.0
    }

    #[test]
    fn decodes_constant_nodes_inside_if_branches() {
        let tensor = float_tensor("w", &[2, 1], &[1.5, -2.0], true);
        let mut value_attr = Writer::default();
        value_attr.bytes(1, b"value").bytes(5, &tensor).uint(20, 4);
        let mut constant = Writer::default();
        constant.bytes(2, b"w").bytes(4, b"Constant").bytes(5, &value_attr.0);
        let mut branch = Writer::default();
        branch.bytes(1, &constant.0);
        let mut then_attr = Writer::default();
        then_attr.bytes(1, b"then_branch").bytes(6, &branch.0);
        let mut if_node = Writer::default();
        if_node.bytes(1, b"cond").bytes(4, b"If").bytes(5, &then_attr.0);
        let mut graph = Writer::default();
        graph.bytes(1, &if_node.0);
        let mut model = Writer::default();
        model.uint(1, 8).bytes(7, &graph.0);

        let g = parse_model(&model.0).unwrap();
        let sub = g.nodes[0].attribute("then_branch").unwrap().graph.as_ref().unwrap();
        let t = sub.nodes[0].attribute("value").unwrap().tensor.as_ref().unwrap();
        assert_eq!((t.name.as_str(), t.dims.as_slice(), t.floats.as_slice()), ("w", &[2, 1][..], &[1.5, -2.0][..]));
    }

    #[test]
    fn float_data_and_packed_ints_decode_too() {
        let t = parse_tensor(&float_tensor("x", &[3], &[0.25, 0.5, 1.0], false)).unwrap();
        assert_eq!(t.floats, vec![0.25, 0.5, 1.0]);

        let mut packed = Writer::default();
        packed.varint(128);
        packed.varint(2);
        let mut attr = Writer::default();
        attr.bytes(1, b"strides").bytes(8, &packed.0);
        let a = parse_attribute(&attr.0, 0).unwrap();
        assert_eq!(a.ints, vec![128, 2]);
    }

    #[test]
    fn truncated_or_garbage_input_is_an_error_not_a_panic() {
        let mut graph = Writer::default();
        graph.bytes(1, b"\x22\x08Constant");
        let mut model = Writer::default();
        model.bytes(7, &graph.0);
        let full = model.0.clone();
        for cut in 1..full.len() {
            let _ = parse_model(&full[..cut]);
        }
        assert!(parse_model(b"\x3a\xff\xff\xff\xff\x0f").is_err());
        assert!(parse_model(b"\x0b").is_err(), "wire type 3 (groups) is rejected");
        assert!(parse_model(b"").unwrap_err().contains("no graph"));
    }
}
