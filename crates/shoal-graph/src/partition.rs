//! Partitions of bag collections: lists of values of one type that tasks
//! pass along without knowing the type.
//!
//! A partition is either *live* — a `Vec<T>` in this process, with the one
//! function that encodes its elements — or *encoded*: the elements'
//! postcard encodings, one after another, with their lengths. Steps that
//! know `T` (a user's function) take the values out; steps that do not
//! (shuffles, `distinct`, `frequencies`, concatenation) work on the
//! encodings, which equal values share. The encoding of a pair is its two
//! halves' encodings in a row, and of a `Vec` its length then its elements,
//! so such steps build partitions of pairs and groups from bytes alone.
//!
//! ```
//! use shoal_graph::partition::Partition;
//!
//! let live = Partition::from_vec(vec![1i64, 2, 3]);
//! let bytes = postcard::to_allocvec(&live)?;
//! let arrived: Partition = postcard::from_bytes(&bytes)?;
//! assert_eq!(arrived.len(), 3);
//! assert_eq!(arrived.into_vec::<i64>()?, vec![1, 2, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::any::type_name;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

use crate::{TaskError, Value};

/// A partition of a bag: values of one type, live or encoded.
#[derive(Clone)]
pub struct Partition(Repr);

#[derive(Clone)]
enum Repr {
    Live { items: Value, len: usize, codec: &'static LiveCodec },
    Encoded(Arc<Encoded>),
}

/// What a live partition knows of its element type without naming it.
struct LiveCodec {
    type_name: fn() -> &'static str,
    encode_each: fn(&Value, &mut Encoded) -> Result<(), TaskError>,
    visit_each: VisitEach,
}

/// Calls a visitor with each element's encoding.
type VisitEach = fn(&Value, &mut dyn FnMut(&[u8])) -> Result<(), TaskError>;

struct Codec<T>(std::marker::PhantomData<T>);

impl<T: Serialize + Send + Sync + 'static> Codec<T> {
    const CODEC: LiveCodec =
        LiveCodec { type_name: type_name::<T>, encode_each: encode_each::<T>, visit_each: visit_each::<T> };
}

fn encode_each<T: Serialize + 'static>(items: &Value, out: &mut Encoded) -> Result<(), TaskError> {
    let items = items
        .downcast_ref::<Vec<T>>()
        .ok_or_else(|| TaskError::Failed(format!("a partition that is not a Vec<{}>", type_name::<T>())))?;
    for item in items {
        out.push(item)?;
    }
    Ok(())
}

fn visit_each<T: Serialize + 'static>(items: &Value, visit: &mut dyn FnMut(&[u8])) -> Result<(), TaskError> {
    let items = items
        .downcast_ref::<Vec<T>>()
        .ok_or_else(|| TaskError::Failed(format!("a partition that is not a Vec<{}>", type_name::<T>())))?;
    let mut scratch = Vec::new();
    for item in items {
        scratch.clear();
        postcard::to_io(item, &mut scratch)
            .map_err(|e| TaskError::Failed(format!("a `{}` could not be encoded: {e}", type_name::<T>())))?;
        visit(&scratch);
    }
    Ok(())
}

impl Partition {
    /// A live partition holding `items`.
    pub fn from_vec<T: Serialize + Send + Sync + 'static>(items: Vec<T>) -> Partition {
        let len = items.len();
        Partition(Repr::Live { items: Arc::new(items), len, codec: &Codec::<T>::CODEC })
    }

    /// A partition of encoded elements.
    pub fn from_encoded(encoded: Encoded) -> Partition {
        Partition(Repr::Encoded(Arc::new(encoded)))
    }

    /// An empty partition.
    pub fn empty() -> Partition {
        Partition::from_encoded(Encoded::default())
    }

    /// How many elements it holds.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Live { len, .. } => *len,
            Repr::Encoded(e) => e.len(),
        }
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as `T`s: moved out of a live partition held only here,
    /// cloned from a shared one, decoded from an encoded one.
    ///
    /// # Errors
    /// When the partition holds another type, or its bytes are not `T`s.
    pub fn into_vec<T: DeserializeOwned + Clone + Send + Sync + 'static>(self) -> Result<Vec<T>, TaskError> {
        match self.0 {
            Repr::Live { items, codec, .. } => match items.downcast::<Vec<T>>() {
                Ok(items) => Ok(Arc::try_unwrap(items).unwrap_or_else(|shared| (*shared).clone())),
                Err(_) => Err(TaskError::Failed(format!(
                    "a step that takes `{}` was given a partition of `{}`",
                    type_name::<T>(),
                    (codec.type_name)()
                ))),
            },
            Repr::Encoded(encoded) => encoded.decode_all(),
        }
    }

    /// The elements' encodings: borrowed when encoded already, made when live.
    ///
    /// # Errors
    /// When an element does not serialise.
    pub fn encoded(&self) -> Result<Cow<'_, Encoded>, TaskError> {
        match &self.0 {
            Repr::Encoded(e) => Ok(Cow::Borrowed(e)),
            Repr::Live { items, codec, .. } => {
                let mut out = Encoded::default();
                (codec.encode_each)(items, &mut out)?;
                Ok(Cow::Owned(out))
            }
        }
    }

    /// Calls `visit` with each element's encoding in turn, without keeping
    /// them: cheaper than [`Partition::encoded`] when each is needed once.
    ///
    /// # Errors
    /// When an element does not serialise.
    pub fn for_each_encoded(&self, visit: &mut dyn FnMut(&[u8])) -> Result<(), TaskError> {
        match &self.0 {
            Repr::Encoded(e) => {
                e.iter().for_each(visit);
                Ok(())
            }
            Repr::Live { items, codec, .. } => (codec.visit_each)(items, visit),
        }
    }

    /// The elements of `parts` one after another.
    ///
    /// # Errors
    /// When an element does not serialise.
    pub fn concat(parts: &[Partition]) -> Result<Partition, TaskError> {
        if let [one] = parts {
            return Ok(one.clone());
        }
        let mut out = Encoded::default();
        for part in parts {
            out.extend(part.encoded()?.as_ref());
        }
        Ok(Partition::from_encoded(out))
    }
}

crate::task_output!(Partition);

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Live { len, codec, .. } => write!(f, "Partition<{}>[{len} live]", (codec.type_name)()),
            Repr::Encoded(e) => write!(f, "Partition[{} encoded, {} bytes]", e.len(), e.data.len()),
        }
    }
}

/// Elements as their postcard encodings, back to back.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Encoded {
    /// How many elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is no element.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The encoding of element `i`.
    ///
    /// # Panics
    /// When `i` is out of range, as indexing does.
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// The elements' encodings in order.
    #[inline]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Appends the encoding of `value`.
    ///
    /// # Errors
    /// When it does not serialise.
    pub fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TaskError> {
        postcard::to_io(value, &mut self.data)
            .map_err(|e| TaskError::Failed(format!("a `{}` could not be encoded: {e}", type_name::<T>())))?;
        self.ends.push(self.data.len());
        Ok(())
    }

    /// Appends an element whose encoding is `parts` in a row (a pair is
    /// its halves in a row).
    #[inline]
    pub fn push_raw(&mut self, parts: &[&[u8]]) {
        for part in parts {
            self.data.extend_from_slice(part);
        }
        self.ends.push(self.data.len());
    }

    /// Appends an element that is a `Vec` of the given elements' encodings,
    /// prefixed by `head` (a key, for a group `(key, values)`).
    pub fn push_group<'a>(&mut self, head: &[u8], items: impl ExactSizeIterator<Item = &'a [u8]>) {
        self.data.extend_from_slice(head);
        // A usize's varint takes at most 10 bytes.
        let mut buf = [0u8; 10];
        let count = postcard::to_slice(&items.len(), &mut buf).map(|c| c.len()).unwrap_or(0);
        self.data.extend_from_slice(&buf[..count]);
        for item in items {
            self.data.extend_from_slice(item);
        }
        self.ends.push(self.data.len());
    }

    /// Appends every element of `other`.
    pub fn extend(&mut self, other: &Encoded) {
        let base = self.data.len();
        self.data.extend_from_slice(&other.data);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    /// Decodes every element as a `T`.
    ///
    /// # Errors
    /// When an element is not a `T`.
    pub fn decode_all<T: DeserializeOwned>(&self) -> Result<Vec<T>, TaskError> {
        self.iter().map(decode::<T>).collect()
    }
}

/// Decodes one element's encoding as a `T`.
///
/// # Errors
/// When the bytes are not a whole `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TaskError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(TaskError::Failed(format!(
            "an element is not a `{}`: {} bytes are left over",
            type_name::<T>(),
            rest.len()
        ))),
        Err(e) => Err(TaskError::Failed(format!("an element is not a `{}`: {e}", type_name::<T>()))),
    }
}

/// The distinct encodings seen so far, each with its slot: the order it was
/// first seen in. What `distinct`, `frequencies`, `foldby` and shuffles
/// group by. The bytes live once, in the keys; each table entry also holds
/// the key's length and its first and last eight bytes, which for a key of
/// at most 16 bytes (words, numbers) are the whole key, so a lookup of a
/// short key reads the table alone: following the slot into the keys was
/// half of a word count's time.
#[derive(Default)]
pub struct Distinct {
    table: hashbrown::HashTable<Entry>,
    keys: Encoded,
}

/// A key's length and outline, and its slot.
struct Entry {
    outline: Outline,
    slot: usize,
}

/// A key's length with its first and last eight bytes (fewer, overlapping,
/// for shorter keys): equal outlines mean equal keys of up to
/// [`Outline::WHOLE`] bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Outline {
    len: usize,
    head: u64,
    tail: u64,
}

impl Outline {
    /// The longest key an outline holds whole.
    const WHOLE: usize = 16;

    #[inline]
    fn of(key: &[u8]) -> Outline {
        let len = key.len();
        let (head, tail) = match len {
            0 => (0, 0),
            1..=3 => (u64::from(key[0]) | u64::from(key[len / 2]) << 8 | u64::from(key[len - 1]) << 16, 0),
            4..=7 => (u64::from(word32(&key[..4])), u64::from(word32(&key[len - 4..]))),
            _ => (word64(&key[..8]), word64(&key[len - 8..])),
        };
        Outline { len, head, tail }
    }
}

#[inline]
fn word32(bytes: &[u8]) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(bytes);
    u32::from_le_bytes(word)
}

#[inline]
fn word64(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

impl Distinct {
    /// The slot of `key`: a new one, [`Distinct::len`] before the call,
    /// when it was not seen before.
    #[inline]
    pub fn slot(&mut self, key: &[u8]) -> usize {
        let hash = xxhash_rust::xxh3::xxh3_64(key);
        let outline = Outline::of(key);
        let keys = &mut self.keys;
        let same = |e: &Entry| e.outline == outline && (outline.len <= Outline::WHOLE || keys.get(e.slot) == key);
        if let Some(entry) = self.table.find(hash, same) {
            return entry.slot;
        }
        let slot = keys.len();
        keys.push_raw(&[key]);
        self.table.insert_unique(hash, Entry { outline, slot }, |e| xxhash_rust::xxh3::xxh3_64(keys.get(e.slot)));
        slot
    }

    /// The value kept for `key` in `values`, which holds one value per
    /// slot: made by `new` when `key` was not seen before.
    #[inline]
    pub fn value<'v, V>(&mut self, key: &[u8], values: &'v mut Vec<V>, new: impl FnOnce() -> V) -> &'v mut V {
        let slot = self.slot(key);
        if slot == values.len() {
            values.push(new());
        }
        &mut values[slot]
    }

    /// How many distinct encodings.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none was seen.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The distinct encodings, slot by slot.
    pub fn keys(&self) -> &Encoded {
        &self.keys
    }

    /// The distinct encodings, slot by slot.
    pub fn into_keys(self) -> Encoded {
        self.keys
    }
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Encoded[{} elements, {} bytes]", self.len(), self.data.len())
    }
}

/// On the wire: the element lengths, then the bytes.
impl Serialize for Encoded {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let lens: Vec<usize> = (0..self.len()).map(|i| self.get(i).len()).collect();
        let mut t = serializer.serialize_tuple(2)?;
        t.serialize_element(&lens)?;
        t.serialize_element(&Bytes(&self.data))?;
        t.end()
    }
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ByteBuf, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        deserializer.deserialize_byte_buf(V)
    }
}

impl<'de> Deserialize<'de> for Encoded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Encoded, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Encoded;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("element lengths and bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Encoded, A::Error> {
                let lens: Vec<usize> = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let data: ByteBuf = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let mut ends = Vec::with_capacity(lens.len());
                let mut end = 0usize;
                for len in lens {
                    end = end.checked_add(len).ok_or_else(|| de::Error::custom("element lengths overflow"))?;
                    ends.push(end);
                }
                if end != data.0.len() {
                    return Err(de::Error::custom(format!(
                        "element lengths add up to {end} bytes, but {} are there",
                        data.0.len()
                    )));
                }
                Ok(Encoded { data: data.0, ends })
            }
        }
        deserializer.deserialize_tuple(2, V)
    }
}

impl Serialize for Partition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.encoded().map_err(serde::ser::Error::custom)?.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Partition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Partition, D::Error> {
        Encoded::deserialize(deserializer).map(Partition::from_encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn groups_and_pairs_are_built_from_encodings() {
        let mut keys = Encoded::default();
        keys.push("a").expect("encodes");
        let mut values = Encoded::default();
        for v in [1i64, 2, 3] {
            values.push(&v).expect("encodes");
        }
        let mut groups = Encoded::default();
        groups.push_group(keys.get(0), values.iter());
        let decoded: Vec<(String, Vec<i64>)> = groups.decode_all().expect("a group");
        assert_eq!(decoded, vec![("a".to_string(), vec![1, 2, 3])]);
        let mut pairs = Encoded::default();
        pairs.push_raw(&[keys.get(0), values.get(2)]);
        assert_eq!(pairs.decode_all::<(String, i64)>().expect("a pair"), vec![("a".to_string(), 3)]);
    }

    #[test]
    fn wrong_types_are_named() {
        let err = Partition::from_vec(vec![1i64]).into_vec::<String>().expect_err("not strings");
        assert!(err.to_string().contains("alloc::string::String"), "{err}");
        assert!(err.to_string().contains("i64"), "{err}");
    }

    #[test]
    fn lengths_that_do_not_fit_the_bytes_are_refused() {
        let bad = postcard::to_allocvec(&(vec![3usize], Bytes(&[1, 2]))).expect("encodes");
        // postcard keeps only the kind of a custom error, not its message.
        assert!(postcard::from_bytes::<Partition>(&bad).is_err());
    }

    proptest! {
        #[test]
        fn distinct_slots_match_a_map(keys in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..24), 0..200)) {
            // A small alphabet makes keys that share heads, tails and lengths.
            let mut distinct = Distinct::default();
            let mut expected = std::collections::HashMap::new();
            for key in &keys {
                let next = expected.len();
                let slot = *expected.entry(key.clone()).or_insert(next);
                prop_assert_eq!(distinct.slot(key), slot);
            }
            prop_assert_eq!(distinct.len(), expected.len());
            for (key, slot) in &expected {
                prop_assert_eq!(distinct.keys().get(*slot), key.as_slice());
            }
        }

        #[test]
        fn any_partition_survives_the_wire(items in proptest::collection::vec(any::<(i32, String)>(), 0..50), split in 0usize..50) {
            let split = split.min(items.len());
            let parts = [Partition::from_vec(items[..split].to_vec()), Partition::from_vec(items[split..].to_vec())];
            let joined = Partition::concat(&parts).expect("encodes");
            let bytes = postcard::to_allocvec(&joined).expect("encodes");
            let back: Partition = postcard::from_bytes(&bytes).expect("decodes");
            prop_assert_eq!(back.into_vec::<(i32, String)>().expect("same type"), items);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = postcard::from_bytes::<Partition>(&bytes) {
                let _ = p.into_vec::<String>();
            }
        }
    }
}
