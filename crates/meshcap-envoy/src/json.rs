//! Writing Envoy's JSON: messages print their fields in protobuf field-number order, defaults omitted,
//! exactly as Envoy's `/config_dump` does; text is pretty-printed with one-space indentation like Envoy's
//! admin output.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// A protobuf message that writes its fields (in field-number order) into an open JSON object.
pub(crate) trait ProtoFields {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error>;
}

/// Serializes a message as a JSON object of its fields.
pub(crate) struct Fields<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: ProtoFields + ?Sized> Serialize for Fields<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.0.write_fields(&mut map)?;
        map.end()
    }
}

/// Serializes a message as a `google.protobuf.Any`: `@type` first, then the fields.
pub(crate) struct Any<'a, T: ?Sized>(pub(crate) &'static str, pub(crate) &'a T);

impl<T: ProtoFields + ?Sized> Serialize for Any<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("@type", self.0)?;
        self.1.write_fields(&mut map)?;
        map.end()
    }
}

/// Pretty-print like Envoy's admin endpoints: one space of indentation, `"key": value`.
pub(crate) fn to_envoy_pretty<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(4096);
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Our Serialize impls only fail if the writer fails, and a Vec never does.
    if value.serialize(&mut serializer).is_err() {
        return String::new();
    }
    // Envoy's admin output ends with a newline.
    out.push(b'\n');
    String::from_utf8(out).unwrap_or_default()
}
