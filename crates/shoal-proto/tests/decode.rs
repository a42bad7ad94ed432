//! Property tests of the protocol: every message survives the wire, and no
//! input, however broken, makes decoding panic.

use std::fmt::Debug;

use proptest::collection::vec;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_graph::{Key, Token};
use shoal_proto::*;

// ---- strategies -------------------------------------------------------------

/// Short arbitrary text, including non-ASCII, to exercise length prefixes.
fn text() -> impl Strategy<Value = String> {
    ".{0,8}"
}

fn key() -> impl Strategy<Value = Key> {
    (text(), any::<u128>(), vec(any::<u32>(), 0..4))
        .prop_map(|(prefix, token, index)| Key::new(prefix, Token(token), index))
}

fn keys() -> impl Strategy<Value = Vec<Key>> {
    vec(key(), 0..4)
}

/// Any f64 but NaN (which is not equal to itself; NaN is checked bitwise below).
fn amount() -> impl Strategy<Value = f64> {
    prop::num::f64::POSITIVE
        | prop::num::f64::NEGATIVE
        | prop::num::f64::ZERO
        | prop::num::f64::INFINITE
        | prop::num::f64::SUBNORMAL
}

fn resources() -> impl Strategy<Value = Resources> {
    vec((text(), amount()), 0..3)
}

fn arg() -> impl Strategy<Value = ArgMsg> {
    prop_oneof![vec(any::<u8>(), 0..16).prop_map(ArgMsg::Value), key().prop_map(ArgMsg::Key)]
}

fn task() -> impl Strategy<Value = TaskMsg> {
    (key(), text(), vec(arg(), 0..6), any::<i32>(), any::<u32>(), resources(), vec(text(), 0..2), any::<bool>())
        .prop_map(|(key, func, args, priority, retries, resources, workers, held)| TaskMsg {
            key,
            func: func.into(),
            args: args.into(),
            priority,
            retries,
            resources,
            workers,
            held,
        })
}

fn to_scheduler() -> impl Strategy<Value = ToScheduler> {
    prop_oneof![
        vec(task(), 0..3).prop_map(ToScheduler::Submit),
        keys().prop_map(ToScheduler::Release),
        keys().prop_map(ToScheduler::Cancel),
        keys().prop_map(ToScheduler::WhoHas),
        Just(ToScheduler::Info),
        vec((key(), any::<u32>(), any::<u64>()), 0..3).prop_map(|items| ToScheduler::Scatter(
            items.into_iter().map(|(key, w, nbytes)| ScatteredMsg { key, worker: WorkerId(w), nbytes }).collect()
        )),
        Just(ToScheduler::Restart),
        keys().prop_map(ToScheduler::FireAndForget),
    ]
}

fn task_error() -> impl Strategy<Value = TaskErrorMsg> {
    prop_oneof![
        text().prop_map(|message| TaskErrorMsg::Failed { message }),
        (key(), key(), text()).prop_map(|(dependency, failed, message)| TaskErrorMsg::Dependency {
            dependency,
            failed,
            message
        }),
        Just(TaskErrorMsg::Cancelled),
        any::<u32>().prop_map(|attempts| TaskErrorMsg::WorkerLost { attempts }),
        text().prop_map(|reason| TaskErrorMsg::Unsatisfiable { reason }),
        key().prop_map(TaskErrorMsg::UnknownDependency),
    ]
}

fn worker_info() -> impl Strategy<Value = WorkerInfo> {
    (any::<u32>(), text(), text(), any::<u32>(), any::<u64>(), any::<u64>(), resources()).prop_map(
        |(id, name, data_address, threads, memory_limit, memory, resources)| WorkerInfo {
            id: WorkerId(id),
            name,
            data_address,
            threads,
            memory_limit,
            memory,
            resources,
        },
    )
}

fn from_scheduler() -> impl Strategy<Value = FromScheduler> {
    prop_oneof![
        (key(), any::<u64>(), proptest::option::of(any::<u32>()), proptest::option::of(vec(any::<u8>(), 0..40)))
            .prop_map(|(key, nbytes, holder, inline)| FromScheduler::Finished {
                key,
                nbytes,
                holder: holder.map(WorkerId),
                inline
            }),
        (key(), task_error()).prop_map(|(key, error)| FromScheduler::Erred { key, error }),
        (vec(worker_info(), 0..3), vec((key(), vec(any::<u32>(), 0..3)), 0..3))
            .prop_map(|(workers, holders)| FromScheduler::WhoHas { workers, holders }),
        vec(worker_info(), 0..3).prop_map(FromScheduler::Info),
        (key(), text()).prop_map(|(key, reason)| FromScheduler::NoWorker { key, reason }),
        Just(FromScheduler::Restarted),
    ]
}

fn compute() -> impl Strategy<Value = ComputeMsg> {
    let dep = (key(), vec(text(), 0..3), any::<u64>(), proptest::option::of(vec(any::<u8>(), 0..40))).prop_map(
        |(key, holders, nbytes, inline)| DepLocation {
            key,
            holders: holders.into_iter().map(Into::into).collect(),
            nbytes,
            inline,
        },
    );
    (any::<u64>(), key(), text(), vec(arg(), 0..3), vec(dep, 0..3), any::<i32>()).prop_map(
        |(id, key, func, args, deps, priority)| ComputeMsg {
            id: TaskId(id),
            key,
            func: func.into(),
            args: args.into(),
            deps: deps.into_iter().collect(),
            priority,
        },
    )
}

fn to_worker() -> impl Strategy<Value = ToWorker> {
    prop_oneof![
        vec(compute(), 0..3).prop_map(ToWorker::Compute),
        keys().prop_map(ToWorker::Release),
        keys().prop_map(ToWorker::Steal),
        Just(ToWorker::Shutdown),
        Just(ToWorker::Restart),
    ]
}

fn from_worker() -> impl Strategy<Value = FromWorker> {
    let finished =
        (any::<u64>(), key(), any::<u64>(), any::<u64>(), proptest::option::of(vec(any::<u8>(), 0..40))).prop_map(
            |(id, key, nbytes, duration_us, inline)| FinishedMsg { id: TaskId(id), key, nbytes, duration_us, inline },
        );
    prop_oneof![
        worker_info().prop_map(FromWorker::Register),
        vec(finished, 0..4).prop_map(|f| FromWorker::Finished(f.into())),
        (key(), text()).prop_map(|(key, message)| FromWorker::Failed { key, message }),
        keys().prop_map(FromWorker::Stolen),
        any::<u64>().prop_map(|memory| FromWorker::Heartbeat { memory }),
        any::<bool>().prop_map(FromWorker::Paused),
    ]
}

fn peer_request() -> impl Strategy<Value = PeerRequest> {
    prop_oneof![
        keys().prop_map(PeerRequest::Get),
        keys().prop_map(PeerRequest::Put),
        keys().prop_map(PeerRequest::Share),
        keys().prop_map(PeerRequest::Lend),
        vec(any::<u64>(), 0..4).prop_map(PeerRequest::Return),
        (text(), vec(vec(any::<u8>(), 0..8), 0..3)).prop_map(|(func, args)| PeerRequest::Run { func, args }),
    ]
}

fn loan() -> impl Strategy<Value = Loan> {
    (key(), any::<u64>(), vec(any::<u8>(), 0..10), any::<u64>(), any::<u64>())
        .prop_map(|(key, id, head, addr, len)| Loan { key, id, head, addr, len })
}

fn peer_reply() -> impl Strategy<Value = PeerReply> {
    prop_oneof![
        (keys(), keys()).prop_map(|(keys, missing)| PeerReply::Data { keys, missing }),
        keys().prop_map(PeerReply::Stored),
        (any::<u32>(), any::<u64>(), any::<[u64; 2]>(), vec(loan(), 0..3), keys()).prop_map(
            |(pid, identity_addr, identity, loans, missing)| PeerReply::Lent {
                pid,
                identity_addr,
                identity,
                loans,
                missing
            }
        ),
        (vec((key(), text()), 0..3), keys()).prop_map(|(files, missing)| PeerReply::Shared { files, missing }),
        proptest::option::of(text()).prop_map(|e| PeerReply::Ran(e.map_or(Ok(()), Err))),
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Client), Just(Role::Worker), Just(Role::Peer)]
}

fn hello() -> impl Strategy<Value = Hello> {
    (role(), text(), proptest::option::of(text()))
        .prop_map(|(role, name, token)| Hello::new(role, name, token.as_deref()))
}

fn hello_reply() -> impl Strategy<Value = HelloReply> {
    prop_oneof![any::<u32>().prop_map(HelloReply::welcome), text().prop_map(|reason| HelloReply::Rejected { reason }),]
}

/// One message of any direction, so streams can mix them.
#[derive(Clone, Debug)]
enum AnyMsg {
    ToScheduler(ToScheduler),
    FromScheduler(FromScheduler),
    ToWorker(ToWorker),
    FromWorker(FromWorker),
    PeerRequest(PeerRequest),
    PeerReply(PeerReply),
    Raw(Vec<u8>),
}

fn any_msg() -> impl Strategy<Value = AnyMsg> {
    prop_oneof![
        to_scheduler().prop_map(AnyMsg::ToScheduler),
        from_scheduler().prop_map(AnyMsg::FromScheduler),
        to_worker().prop_map(AnyMsg::ToWorker),
        from_worker().prop_map(AnyMsg::FromWorker),
        peer_request().prop_map(AnyMsg::PeerRequest),
        peer_reply().prop_map(AnyMsg::PeerReply),
        vec(any::<u8>(), 0..32).prop_map(AnyMsg::Raw),
    ]
}

// ---- helpers ----------------------------------------------------------------

fn encode_any(msg: &AnyMsg, out: &mut Vec<u8>) {
    let result = match msg {
        AnyMsg::ToScheduler(m) => encode_message(m, out),
        AnyMsg::FromScheduler(m) => encode_message(m, out),
        AnyMsg::ToWorker(m) => encode_message(m, out),
        AnyMsg::FromWorker(m) => encode_message(m, out),
        AnyMsg::PeerRequest(m) => encode_message(m, out),
        AnyMsg::PeerReply(m) => encode_message(m, out),
        AnyMsg::Raw(bytes) => encode_raw(bytes, out),
    };
    result.expect("every message encodes");
}

/// Checks that `frame` is `msg`, decoding it as the message's own type.
fn assert_frame_is(frame: &Frame, msg: &AnyMsg) -> Result<(), TestCaseError> {
    fn check<T: DeserializeOwned + PartialEq + Debug>(frame: &Frame, want: &T) -> Result<(), TestCaseError> {
        prop_assert_eq!(frame.kind, FrameKind::Message);
        prop_assert_eq!(&decode_message::<T>(&frame.body).expect("valid body"), want);
        Ok(())
    }
    match msg {
        AnyMsg::ToScheduler(m) => check(frame, m),
        AnyMsg::FromScheduler(m) => check(frame, m),
        AnyMsg::ToWorker(m) => check(frame, m),
        AnyMsg::FromWorker(m) => check(frame, m),
        AnyMsg::PeerRequest(m) => check(frame, m),
        AnyMsg::PeerReply(m) => check(frame, m),
        AnyMsg::Raw(bytes) => {
            prop_assert_eq!(frame.kind, FrameKind::Raw);
            prop_assert_eq!(&frame.body, bytes);
            Ok(())
        }
    }
}

/// Sends `msg` through a frame and a decoder and checks what comes out: equal
/// as a value, and equal again byte for byte when re-encoded.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(msg: &T) -> Result<(), TestCaseError> {
    let mut wire = Vec::new();
    encode_message(msg, &mut wire).expect("encodes");
    let mut decoder = FrameDecoder::default();
    decoder.push(&wire);
    let frame = decoder.next_frame().expect("valid frame").expect("complete frame");
    prop_assert_eq!(frame.kind, FrameKind::Message);
    prop_assert_eq!(frame.body.len() + HEADER_LEN, wire.len());
    let back: T = decode_message(&frame.body).expect("valid message");
    prop_assert_eq!(&back, msg);
    let mut again = Vec::new();
    encode_message(&back, &mut again).expect("encodes");
    prop_assert_eq!(again, wire);
    prop_assert!(decoder.next_frame().expect("nothing left").is_none());
    prop_assert_eq!(decoder.buffered(), 0);
    Ok(())
}

fn drain(decoder: &mut FrameDecoder) -> Result<Vec<Frame>, ProtoError> {
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

/// Tries `body` as every message type; only panics matter. When a decode
/// succeeds, re-encoding and decoding again must give the same bytes: the
/// decoder accepted something the encoder can reproduce.
fn decode_as_everything(body: &[u8]) {
    fn try_as<T: Serialize + DeserializeOwned>(body: &[u8]) {
        if let Ok(msg) = decode_message::<T>(body) {
            let mut once = Vec::new();
            encode_message(&msg, &mut once).expect("a decoded message encodes");
            let back: T = decode_message(&once[HEADER_LEN..]).expect("its encoding decodes");
            let mut twice = Vec::new();
            encode_message(&back, &mut twice).expect("encodes");
            assert_eq!(once, twice, "decoding is not stable for {body:?}");
        }
    }
    try_as::<ToScheduler>(body);
    try_as::<FromScheduler>(body);
    try_as::<ToWorker>(body);
    try_as::<FromWorker>(body);
    try_as::<PeerRequest>(body);
    try_as::<PeerReply>(body);
    try_as::<Hello>(body);
    try_as::<HelloReply>(body);
    let _ = decode_hello(body);
}

// ---- (a) round trips --------------------------------------------------------

proptest! {
    #[test]
    fn to_scheduler_round_trips(msg in to_scheduler()) { round_trip(&msg)?; }

    #[test]
    fn from_scheduler_round_trips(msg in from_scheduler()) { round_trip(&msg)?; }

    #[test]
    fn to_worker_round_trips(msg in to_worker()) { round_trip(&msg)?; }

    #[test]
    fn from_worker_round_trips(msg in from_worker()) { round_trip(&msg)?; }

    #[test]
    fn borrowed_compute_messages_encode_as_owned_ones(mut tasks in vec(compute(), 0..4), keys_only in vec(any::<bool>(), 4)) {
        // Some tasks' arguments are exactly their dependencies' keys: the
        // scheduler sends those from the dependencies.
        for (t, &keys_only) in tasks.iter_mut().zip(&keys_only) {
            if keys_only {
                t.args = t.deps.iter().map(|d| ArgMsg::Key(d.key.clone())).collect();
            }
        }
        let refs: Vec<ComputeRef<'_>> = tasks
            .iter()
            .zip(&keys_only)
            .map(|(t, &keys_only)| ComputeRef {
                id: t.id,
                key: &t.key,
                func: &t.func,
                args: if keys_only { ArgsRef::Deps } else { ArgsRef::Given(&t.args) },
                deps: t
                    .deps
                    .iter()
                    .map(|d| DepRef {
                        key: &d.key,
                        holders: d.holders.iter().map(|h| &**h).collect(),
                        nbytes: d.nbytes,
                        inline: d.inline.as_deref(),
                    })
                    .collect(),
                priority: t.priority,
            })
            .collect();
        let (mut borrowed, mut owned) = (Vec::new(), Vec::new());
        encode_message(&refs, &mut borrowed).map_err(|e| TestCaseError::fail(e.to_string()))?;
        encode_message(&tasks, &mut owned).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(borrowed, owned);
        let back: Vec<ComputeMsg> = refs.iter().map(ComputeRef::to_msg).collect();
        prop_assert_eq!(&back, &tasks);
    }

    #[test]
    fn peer_messages_round_trip(request in peer_request(), reply in peer_reply()) {
        round_trip(&request)?;
        round_trip(&reply)?;
    }

    #[test]
    fn payload_types_round_trip(
        task in task(),
        compute in compute(),
        info in worker_info(),
        error in task_error(),
        client in any::<u32>(),
    ) {
        round_trip(&task)?;
        round_trip(&compute)?;
        round_trip(&info)?;
        round_trip(&error)?;
        round_trip(&ClientId(client))?;
        round_trip(&WorkerId(client))?;
    }

    #[test]
    fn handshake_messages_round_trip(hello in hello(), reply in hello_reply()) {
        round_trip(&hello)?;
        round_trip(&reply)?;
        let mut wire = Vec::new();
        encode_message(&hello, &mut wire).expect("encodes");
        prop_assert_eq!(decode_hello(&wire[HEADER_LEN..]).expect("valid hello"), hello);
    }

    /// A stream of mixed frames cut at arbitrary points comes back whole and
    /// in order, also to a reader that takes some bodies straight from the
    /// stream past the decoder (as the network layer does with large
    /// results).
    #[test]
    fn streams_survive_any_chunking_and_bodies_read_past_the_decoder(
        msgs in vec(any_msg(), 0..8),
        cuts in vec(1usize..64, 0..32),
        direct in vec(any::<bool>(), 8),
    ) {
        let mut wire = Vec::new();
        for msg in &msgs {
            encode_any(msg, &mut wire);
        }
        let mut decoder = FrameDecoder::default();
        let mut frames = Vec::new();
        let mut rest = &wire[..];
        let mut cuts = cuts.into_iter().chain(std::iter::repeat(usize::MAX));
        while frames.len() < msgs.len() {
            if let Some((kind, len)) = decoder.next_header().expect("valid stream") {
                if direct[frames.len()] {
                    let mut body = vec![0; len];
                    let n = decoder.take_body_start(&mut body);
                    let (from_stream, tail) = rest.split_at(len - n);
                    body[n..].copy_from_slice(from_stream);
                    rest = tail;
                    frames.push(Frame { kind, body });
                    continue;
                }
                if let Some(frame) = decoder.next_frame().expect("valid stream") {
                    frames.push(frame);
                    continue;
                }
            }
            prop_assert!(!rest.is_empty(), "the stream ended before its frames");
            let (chunk, tail) = rest.split_at(cuts.next().unwrap_or(usize::MAX).min(rest.len()));
            decoder.push(chunk);
            rest = tail;
        }
        for (frame, msg) in frames.iter().zip(&msgs) {
            assert_frame_is(frame, msg)?;
        }
        prop_assert_eq!(decoder.buffered(), 0);
        prop_assert!(rest.is_empty());
    }

    /// A frame holds one message exactly: any bytes after it are reported,
    /// with their count, whatever they are.
    #[test]
    fn bytes_after_a_message_are_trailing(msg in to_worker(), extra in vec(any::<u8>(), 1..16)) {
        let mut wire = Vec::new();
        encode_message(&msg, &mut wire).expect("encodes");
        wire.extend_from_slice(&extra);
        let result = decode_message::<ToWorker>(&wire[HEADER_LEN..]);
        let counted = matches!(result, Err(ProtoError::TrailingBytes(n)) if n == extra.len());
        prop_assert!(counted, "{:?}", result);
    }

    #[test]
    fn nan_resources_survive_bitwise(bits in any::<u64>()) {
        let nan = f64::from_bits(bits | 0x7ff0_0000_0000_0001); // some NaN
        let info = WorkerInfo {
            id: WorkerId(0),
            name: String::new(),
            data_address: String::new(),
            threads: 1,
            memory_limit: 0,
            memory: 0,
            resources: vec![("cpus".into(), nan)],
        };
        let mut wire = Vec::new();
        encode_message(&info, &mut wire).expect("encodes");
        let back: WorkerInfo = decode_message(&wire[HEADER_LEN..]).expect("decodes");
        prop_assert_eq!(back.resources[0].1.to_bits(), nan.to_bits());
    }
}

// ---- (b) arbitrary input never panics ---------------------------------------

proptest! {
    /// Raw noise into decoders with a small and the default cap.
    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..256), cap in 0usize..64) {
        for mut decoder in [FrameDecoder::new(cap), FrameDecoder::default()] {
            decoder.push(&bytes);
            // Stops at the first error: the stream is dead after one.
            while let Ok(Some(frame)) = decoder.next_frame() {
                prop_assert!(frame.body.len() <= decoder.max_frame_len());
                decode_as_everything(&frame.body);
            }
        }
    }

    /// Well-formed frames around garbage bodies: the decoder yields each frame
    /// exactly, stops at the first unknown kind, and no body panics a decode.
    #[test]
    fn garbage_bodies_in_honest_frames(frames in vec((0u8..4, vec(any::<u8>(), 0..48)), 0..6)) {
        let mut wire = Vec::new();
        for (kind, body) in &frames {
            wire.extend_from_slice(&(body.len() as u32).to_le_bytes());
            wire.push(*kind);
            wire.extend_from_slice(body);
        }
        let mut decoder = FrameDecoder::default();
        decoder.push(&wire);
        for (kind, body) in &frames {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    prop_assert_eq!(frame.kind.byte(), *kind);
                    prop_assert_eq!(&frame.body, body);
                    decode_as_everything(&frame.body);
                }
                Err(ProtoError::UnknownFrameKind(byte)) => {
                    prop_assert!(*kind > 1);
                    prop_assert_eq!(byte, *kind);
                    return Ok(());
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert!(decoder.next_frame().expect("stream ended cleanly").is_none());
    }

    /// Bodies that start like a message (a real variant tag) but go wrong later.
    #[test]
    fn garbage_after_a_valid_tag_never_panics(tag in 0u8..8, tail in vec(any::<u8>(), 0..64)) {
        let mut body = vec![tag];
        body.extend_from_slice(&tail);
        decode_as_everything(&body);
        // The magic and this version (one varint byte), then garbage.
        let mut hello = b"SHOL".to_vec();
        hello.push(PROTOCOL_VERSION as u8);
        hello.extend_from_slice(&body);
        decode_as_everything(&hello);
    }
}

// ---- (c) prefixes -----------------------------------------------------------

proptest! {
    /// Every strict prefix of a valid stream is "not yet": no error, and only
    /// the frames that are complete in it, which are the stream's first ones.
    #[test]
    fn strict_prefixes_are_never_errors(msgs in vec(any_msg(), 1..5)) {
        let mut wire = Vec::new();
        let mut ends = Vec::new();
        for msg in &msgs {
            encode_any(msg, &mut wire);
            ends.push(wire.len());
        }
        for cut in 0..wire.len() {
            let mut decoder = FrameDecoder::default();
            decoder.push(&wire[..cut]);
            let frames = match drain(&mut decoder) {
                Ok(frames) => frames,
                Err(e) => return Err(TestCaseError::fail(format!("prefix {cut}: {e}"))),
            };
            let complete = ends.iter().filter(|&&end| end <= cut).count();
            prop_assert!(frames.len() < msgs.len());
            prop_assert_eq!(frames.len(), complete, "prefix of {} bytes", cut);
            for (frame, msg) in frames.iter().zip(&msgs) {
                assert_frame_is(frame, msg)?;
            }
            prop_assert_eq!(decoder.buffered(), cut - ends[..complete].last().copied().unwrap_or(0));
        }
    }

    /// A message body cut short never decodes as the message it came from
    /// and never panics.
    #[test]
    fn truncated_bodies_fail_cleanly(msg in from_worker()) {
        let mut wire = Vec::new();
        encode_message(&msg, &mut wire).expect("encodes");
        let body = &wire[HEADER_LEN..];
        for cut in 0..body.len() {
            match decode_message::<FromWorker>(&body[..cut]) {
                Ok(other) => prop_assert_ne!(&other, &msg, "prefix {} decoded to the whole", cut),
                Err(ProtoError::Malformed { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("prefix {cut}: unexpected {e:?}"))),
            }
        }
    }
}

// ---- (d) corruption ---------------------------------------------------------

proptest! {
    /// Flipping one byte of a valid frame may give errors, never a panic; a
    /// corrupted kind byte is reported as such.
    #[test]
    fn single_byte_corruption_never_panics(
        msg in prop_oneof![
            to_scheduler().prop_map(AnyMsg::ToScheduler),
            from_worker().prop_map(AnyMsg::FromWorker),
            to_worker().prop_map(AnyMsg::ToWorker),
        ],
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut wire = Vec::new();
        encode_any(&msg, &mut wire);
        let at = at.index(wire.len());
        wire[at] ^= flip;
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.push(&wire);
        let result = drain(&mut decoder);
        if at == 4 {
            match (wire[4], &result) {
                (1, Ok(frames)) => prop_assert_eq!(frames[0].kind, FrameKind::Raw),
                (byte, Err(ProtoError::UnknownFrameKind(b))) => prop_assert_eq!(byte, *b),
                (byte, other) => prop_assert!(false, "kind {} gave {:?}", byte, other),
            }
        }
        if at > 4 {
            // The header is intact, so the frame comes out; only its body is off.
            let frames = result.as_ref().expect("header intact");
            prop_assert_eq!(frames.len(), 1);
            prop_assert_eq!(&frames[0].body[..], &wire[HEADER_LEN..]);
        }
        for frame in result.unwrap_or_default() {
            decode_as_everything(&frame.body);
        }
    }
}

// ---- (e) handshake ----------------------------------------------------------

proptest! {
    #[test]
    fn matching_token_is_accepted_and_any_other_is_not(
        role in role(),
        expected in ".{1,16}",
        other in ".{0,16}",
    ) {
        let good = Hello::new(role, "n", Some(&expected));
        prop_assert_eq!(check_hello(&good, Some(&expected)), Ok(role));
        prop_assert_eq!(check_hello(&good, None), Ok(role));
        let bad = Hello::new(role, "n", Some(&other));
        let want = if other == expected { Ok(role) } else { Err(HandshakeError::WrongToken) };
        prop_assert_eq!(check_hello(&bad, Some(&expected)), want);
        let none = Hello::new(role, "n", None);
        prop_assert_eq!(check_hello(&none, Some(&expected)), Err(HandshakeError::MissingToken));
    }

    /// A token that differs from the expected one in a single byte is wrong.
    #[test]
    fn near_miss_tokens_are_wrong(expected in "[a-z0-9]{1,32}", at in any::<prop::sample::Index>()) {
        let mut given = expected.clone().into_bytes();
        let i = at.index(given.len());
        given[i] = if given[i] == b'x' { b'y' } else { b'x' };
        let given = String::from_utf8(given).expect("ascii");
        // Also a token that is the expected one cut short or extended: the
        // length matters, not just the bytes both have.
        let shorter = &expected[..expected.len() - 1];
        let longer = format!("{expected}{}", &expected[..1]);
        for token in [given.as_str(), shorter, &longer] {
            let hello = Hello::new(Role::Worker, "w", Some(token));
            prop_assert_eq!(check_hello(&hello, Some(&expected)), Err(HandshakeError::WrongToken), "{:?}", token);
        }
    }

    #[test]
    fn other_versions_are_named_in_the_error(version in any::<u16>(), hello in hello()) {
        let hello = Hello { version, ..hello };
        let result = check_hello(&hello, None);
        let mut wire = Vec::new();
        encode_message(&hello, &mut wire).expect("encodes");
        let decoded = decode_hello(&wire[HEADER_LEN..]);
        if version == PROTOCOL_VERSION {
            prop_assert_eq!(result, Ok(hello.role));
            prop_assert_eq!(decoded.expect("valid"), hello);
        } else {
            let err = result.expect_err("other version");
            prop_assert_eq!(&err, &HandshakeError::Version { theirs: version, ours: PROTOCOL_VERSION });
            prop_assert_eq!(
                err.to_string(),
                format!("protocol version {version} is not spoken here (this side speaks {PROTOCOL_VERSION})")
            );
            let decoded = decoded.expect_err("other version");
            let named = matches!(decoded, ProtoError::Handshake(HandshakeError::Version { theirs, .. }) if theirs == version);
            prop_assert!(named, "{:?}", decoded);
        }
    }

    #[test]
    fn wrong_magic_is_not_a_shoal_peer(magic in any::<[u8; 4]>(), hello in hello()) {
        prop_assume!(magic != MAGIC);
        let hello = Hello { magic, ..hello };
        prop_assert_eq!(check_hello(&hello, None), Err(HandshakeError::NotShoal { found: magic }));
        let mut wire = Vec::new();
        encode_message(&hello, &mut wire).expect("encodes");
        let err = decode_hello(&wire[HEADER_LEN..]).expect_err("wrong magic");
        let named = matches!(err, ProtoError::Handshake(HandshakeError::NotShoal { found }) if found == magic);
        prop_assert!(named, "{:?}", err);
    }

    #[test]
    fn replies_check_as_sent(reply in hello_reply()) {
        match (&reply, check_reply(&reply)) {
            (HelloReply::Welcome { id, .. }, Ok(got)) => prop_assert_eq!(*id, got),
            (HelloReply::Rejected { reason }, Err(HandshakeError::Rejected { reason: got })) => {
                prop_assert_eq!(reason, &got)
            }
            (reply, got) => prop_assert!(false, "{:?} gave {:?}", reply, got),
        }
    }
}
