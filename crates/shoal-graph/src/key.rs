//! Keys name the results of tasks: a name prefix, a content token and an index.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_128;

/// A 128-bit content token: the hash of a function's identity and its arguments.
///
/// Equal calls of a pure function give equal tokens in every process of the
/// same binary, so equal work gets the same [`Key`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u128);

impl Token {
    /// A token no other call in this process gets (for impure calls, `pure(false)`).
    ///
    /// Mixes a per-process random base with a counter, so two processes do not
    /// hand out the same sequence either.
    pub fn fresh() -> Token {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let base = *BASE.get_or_init(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            now ^ u64::from(std::process::id()).rotate_left(32)
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 17];
        buf[..8].copy_from_slice(&base.to_le_bytes());
        buf[8..16].copy_from_slice(&n.to_le_bytes());
        buf[16] = 0xf5;
        Token(xxh3_128(&buf))
    }

    /// The token of some bytes.
    pub fn of_bytes(bytes: &[u8]) -> Token {
        Token(xxh3_128(bytes))
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Builds a [`Token`] from a function identity and a sequence of arguments.
///
/// Arguments are fed as their serde serialisation (postcard), so any
/// `Serialize` value can be part of a token, floats included.
#[derive(Default)]
pub struct Tokenizer {
    buf: Vec<u8>,
}

thread_local! {
    /// A buffer handed from one tokenizer to the next on this thread, so
    /// tokenizing a call allocates nothing.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Drop for Tokenizer {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() <= 4096 {
            buf.clear();
            SPARE.with(|s| s.set(buf));
        }
    }
}

impl Tokenizer {
    /// A tokenizer that starts with the given identity (usually a function name).
    pub fn new(identity: &[u8]) -> Tokenizer {
        let mut buf = SPARE.with(|s| s.take());
        buf.extend_from_slice(identity);
        Tokenizer { buf }
    }

    /// Adds a serialisable value.
    ///
    /// # Errors
    /// Fails when the value's `Serialize` implementation fails.
    pub fn add_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), postcard::Error> {
        self.buf.push(0x01);
        let buf = std::mem::take(&mut self.buf);
        self.buf = postcard::to_extend(value, buf)?;
        Ok(())
    }

    /// Adds a reference to another key.
    pub fn add_key(&mut self, key: &Key) {
        self.buf.push(0x02);
        self.buf.extend_from_slice(key.prefix.as_bytes());
        self.buf.extend_from_slice(&key.token().0.to_le_bytes());
        for i in key.index() {
            self.buf.extend_from_slice(&i.to_le_bytes());
        }
    }

    /// Adds raw bytes.
    pub fn add_bytes(&mut self, bytes: &[u8]) {
        self.buf.push(0x03);
        self.buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.buf.extend_from_slice(bytes);
    }

    /// The token of everything added.
    pub fn finish(&self) -> Token {
        Token::of_bytes(&self.buf)
    }
}

/// The shared name prefix of keys (`inc`, `sum`), one pointer wide.
///
/// Prefixes are interned: every `Prefix` of the same text is the same
/// allocation, so a million keys share one, keys decoded from the wire share
/// it too, and comparing prefixes is comparing pointers. Interned prefixes
/// live as long as the process; they are function and collection names, a
/// bounded set. So a prefix is a plain `'static` reference, not a counted
/// one: cloning or dropping a key (the scheduler does it a few times per
/// task) costs no atomic operation on a count every key shares.
#[derive(Clone, PartialOrd, Ord)]
pub struct Prefix(&'static String);

impl Hash for Prefix {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl PartialEq for Prefix {
    fn eq(&self, other: &Prefix) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Prefix {}

type Interned = std::collections::HashMap<String, &'static String>;

static PREFIXES: std::sync::LazyLock<std::sync::Mutex<Interned>> = std::sync::LazyLock::new(Default::default);

thread_local! {
    /// This thread's view of the interned prefixes, to avoid the global lock.
    static SEEN: std::cell::RefCell<Interned> = Default::default();
    /// The prefix this thread interned last: keys come in runs of one
    /// prefix (a map, a message of results), and comparing bytes with it is
    /// cheaper than hashing them.
    static LAST: std::cell::Cell<Option<&'static String>> = const { std::cell::Cell::new(None) };
}

fn intern(s: &str) -> &'static String {
    if let Some(p) = LAST.with(|last| last.get().filter(|p| p.as_str() == s)) {
        return p;
    }
    let p = intern_slow(s);
    LAST.with(|last| last.set(Some(p)));
    p
}

fn intern_slow(s: &str) -> &'static String {
    if let Some(p) = SEEN.with(|seen| seen.borrow().get(s).copied()) {
        return p;
    }
    let shared = {
        let mut all = PREFIXES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *all.entry(s.to_string()).or_insert_with(|| Box::leak(Box::new(s.to_string())))
    };
    SEEN.with(|seen| seen.borrow_mut().insert(s.to_string(), shared));
    shared
}

impl Prefix {
    /// The prefix text.
    pub fn as_str(&self) -> &str {
        self.0
    }
}

impl From<&str> for Prefix {
    fn from(s: &str) -> Prefix {
        Prefix(intern(s))
    }
}

impl From<String> for Prefix {
    fn from(s: String) -> Prefix {
        Prefix(intern(&s))
    }
}

impl std::ops::Deref for Prefix {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

/// The name of a task's result: `prefix-token`, with an optional index tuple
/// for collections (`('sum-3f9a…', 2, 0)` is chunk (2, 0) of a sum).
///
/// Cloning is cheap: the prefix is shared and the index is usually empty.
/// A key is 32 bytes (the token is stored as two words, so a key needs no
/// 16-byte alignment): every task holds one, so every byte counts.
#[derive(Clone)]
pub struct Key {
    prefix: Prefix,
    index: Option<Box<Box<[u32]>>>,
    token: [u64; 2],
}

impl Key {
    /// A key from its parts.
    pub fn new(prefix: impl Into<Prefix>, token: Token, index: impl Into<Box<[u32]>>) -> Key {
        let index: Box<[u32]> = index.into();
        Key {
            prefix: prefix.into(),
            index: if index.is_empty() { None } else { Some(Box::new(index)) },
            token: [token.0 as u64, (token.0 >> 64) as u64],
        }
    }

    /// A key without an index.
    pub fn scalar(prefix: impl Into<Prefix>, token: Token) -> Key {
        Key { prefix: prefix.into(), index: None, token: [token.0 as u64, (token.0 >> 64) as u64] }
    }

    /// The name prefix: usually the function's short name (`inc`, `sum`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shared prefix.
    pub fn shared_prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// The content token.
    pub fn token(&self) -> Token {
        Token(u128::from(self.token[0]) | (u128::from(self.token[1]) << 64))
    }

    /// The index tuple (empty for scalar keys).
    pub fn index(&self) -> &[u32] {
        self.index.as_deref().map_or(&[], |b| b)
    }

    /// The same name with another index (the chunk `index` of this layer).
    pub fn with_index(&self, index: impl Into<Box<[u32]>>) -> Key {
        let index: Box<[u32]> = index.into();
        Key {
            prefix: self.prefix.clone(),
            index: if index.is_empty() { None } else { Some(Box::new(index)) },
            token: self.token,
        }
    }

    /// `prefix-token`, the name shared by all chunks of one layer.
    pub fn name(&self) -> String {
        format!("{}-{}", self.prefix, self.token())
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        (self.prefix(), self.token(), self.index()).cmp(&(other.prefix(), other.token(), other.index()))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        // Token first: it differs for nearly every pair of distinct keys, and
        // prefixes are usually one shared allocation.
        self.token == other.token
            && self.prefix == other.prefix
            && match (&self.index, &other.index) {
                (None, None) => true,
                (Some(a), Some(b)) => a == b,
                _ => false,
            }
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The token already mixes the prefix's identity; hashing the string again
        // would only cost time on every map lookup.
        state.write_u128(self.token().0);
        for i in self.index() {
            state.write_u32(*i);
        }
    }
}

/// A hasher for [`Key`]s: the token is folded into one word, index elements
/// are mixed in with one multiply each, and a final folded multiply spreads
/// every input bit over the whole hash.
///
/// Tokens are usually uniform hashes already, but not always (keys built by
/// hand, simulations); the final fold keeps hashbrown's control bytes (taken
/// from the top bits) and bucket bits (from the bottom) both well mixed.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(MIX).rotate_left(31);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        let wide = u128::from(self.0) * u128::from(MIX);
        (wide as u64) ^ ((wide >> 64) as u64)
    }
}

/// Builds [`KeyHasher`]s.
pub type KeyBuildHasher = std::hash::BuildHasherDefault<KeyHasher>;

/// A hash map keyed by [`Key`] with the fast [`KeyHasher`].
pub type KeyHashMap<V> = std::collections::HashMap<Key, V, KeyBuildHasher>;

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.index.is_none() {
            write!(f, "{}-{}", self.prefix, self.token())
        } else {
            write!(f, "('{}-{}'", self.prefix, self.token())?;
            for i in self.index() {
                write!(f, ", {i}")?;
            }
            f.write_str(")")
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The short name of a function for key prefixes: `my_crate::module::double`
/// becomes `double`; closures become `lambda`, as in Dask.
pub fn short_fn_name(type_name: &str) -> &str {
    if type_name.contains("{{closure}}") {
        return "lambda";
    }
    let base = type_name.split('<').next().unwrap_or(type_name);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_dask_style() {
        let k = Key::scalar("double", Token(0x5ce1));
        assert_eq!(std::mem::size_of::<Key>(), 32);
        assert_eq!(k.to_string(), "double-00000000000000000000000000005ce1");
        let c = k.with_index(vec![2, 0]);
        assert_eq!(c.to_string(), "('double-00000000000000000000000000005ce1', 2, 0)");
    }

    #[test]
    fn tokens_are_content_based() {
        let tok = |v: f64| {
            let mut t = Tokenizer::new(b"f");
            t.add_value(&v).expect("f64 serialises");
            t.finish()
        };
        assert_eq!(tok(1.5), tok(1.5));
        assert_ne!(tok(1.5), tok(2.5));
        assert_ne!(Token::fresh(), Token::fresh());
    }

    #[test]
    fn short_names() {
        assert_eq!(short_fn_name("tutorial::double"), "double");
        assert_eq!(short_fn_name("tutorial::main::{{closure}}"), "lambda");
        assert_eq!(short_fn_name("core::ops::add<i32>"), "add");
    }
}

/// On the wire a key is `(prefix, token words, index)`.
impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.prefix.as_str(), self.token, self.index()).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    /// Interned straight from the decoder's buffer: no `String` is made for
    /// a prefix already known.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Prefix, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Prefix;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key prefix")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Prefix, E> {
                Ok(Prefix::from(text))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        let (prefix, token, index): (Prefix, [u64; 2], Vec<u32>) = serde::Deserialize::deserialize(deserializer)?;
        Ok(Key { prefix, index: if index.is_empty() { None } else { Some(Box::new(index.into_boxed_slice())) }, token })
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_postcard() {
        for key in [Key::scalar("inc", Token(u128::MAX - 7)), Key::new("sum", Token(3), vec![2, 0, 9])] {
            let bytes = postcard::to_allocvec(&key).expect("encodes");
            let back: Key = postcard::from_bytes(&bytes).expect("decodes");
            assert_eq!(back, key);
            assert_eq!(back.to_string(), key.to_string());
        }
    }
}
