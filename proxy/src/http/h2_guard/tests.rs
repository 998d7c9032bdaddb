use super::*;

const LIMITS: H2Limits = H2Limits {
    max_premature_resets: 100,
    max_empty_frames: 1,
    max_priority_per_stream: 100,
    max_window_updates_per_data_frame: 10,
};

fn frame(kind: u8, flags: u8, stream: u32, len: u32) -> FrameHead {
    FrameHead {
        len,
        kind,
        flags,
        stream,
    }
}

fn open(l: &mut Ledger, stream: u32) -> Result<(), Flood> {
    l.received(frame(HEADERS, 0x4 | END_STREAM, stream, 20))
}

#[test]
fn a_client_that_resets_what_it_opens_is_closed_at_the_limit() {
    let mut l = Ledger::new(LIMITS);
    for i in 0..99u32 {
        open(&mut l, 2 * i + 1).unwrap();
        l.received(frame(RST_STREAM, 0, 2 * i + 1, 4)).unwrap();
    }
    open(&mut l, 199).unwrap();
    assert_eq!(
        l.received(frame(RST_STREAM, 0, 199, 4)),
        Err(Flood::PrematureResets)
    );
}

#[test]
fn cancelling_a_minority_of_streams_is_never_a_flood() {
    // A gRPC client whose deadlines cancel one call in three, for 100,000 calls.
    let mut l = Ledger::new(LIMITS);
    for i in 0..100_000u32 {
        let id = 2 * i + 1;
        open(&mut l, id).unwrap();
        if i % 3 == 0 {
            l.received(frame(RST_STREAM, 0, id, 4)).unwrap();
        }
    }
}

#[test]
fn old_good_streams_do_not_pay_for_a_later_reset_flood() {
    let mut l = Ledger::new(LIMITS);
    let mut id = 1;
    for _ in 0..1_000_000 {
        open(&mut l, id).unwrap();
        id += 2;
    }
    // The ratio is judged over recent streams: a burst of resets is caught within a few
    // windows, not after a million of them.
    let mut sent = 0;
    let caught = loop {
        open(&mut l, id).unwrap();
        sent += 1;
        if l.received(frame(RST_STREAM, 0, id, 4)).is_err() {
            break sent;
        }
        id += 2;
    };
    assert!(caught <= 2_000, "caught after {caught} resets");
}

#[test]
fn trailers_and_reused_ids_do_not_count_as_new_streams() {
    let mut l = Ledger::new(LIMITS);
    open(&mut l, 1).unwrap();
    l.received(frame(HEADERS, 0x4 | END_STREAM, 1, 10)).unwrap();
    l.received(frame(HEADERS, 0x4 | END_STREAM, 0, 10)).unwrap();
    assert_eq!(l.streams, 1);
}

#[test]
fn one_empty_frame_passes_two_in_a_row_do_not() {
    let mut l = Ledger::new(LIMITS);
    open(&mut l, 1).unwrap();
    l.received(frame(DATA, 0, 1, 0)).unwrap();
    l.received(frame(DATA, 0, 1, 5)).unwrap();
    l.received(frame(DATA, 0, 1, 0)).unwrap();
    // An empty DATA that ends the stream is how bodies end: never counted.
    l.received(frame(DATA, END_STREAM, 1, 0)).unwrap();
    l.received(frame(DATA, 0, 1, 0)).unwrap();
    assert_eq!(l.received(frame(DATA, 0, 1, 0)), Err(Flood::EmptyFrames));
}

#[test]
fn priority_frames_are_bounded_per_stream() {
    let mut l = Ledger::new(LIMITS);
    open(&mut l, 1).unwrap();
    for _ in 0..200 {
        l.received(frame(PRIORITY, 0, 3, 5)).unwrap();
    }
    assert_eq!(l.received(frame(PRIORITY, 0, 3, 5)), Err(Flood::Priority));
}

#[test]
fn window_updates_are_bounded_by_the_data_sent() {
    let mut l = Ledger::new(LIMITS);
    open(&mut l, 1).unwrap();
    for _ in 0..5 {
        l.sent(frame(DATA, 0, 1, 16_384));
    }
    // 1 + 2 × (1 stream + 10 × 5 DATA frames) = 103.
    for _ in 0..103 {
        l.received(frame(WINDOW_UPDATE, 0, 1, 4)).unwrap();
    }
    assert_eq!(
        l.received(frame(WINDOW_UPDATE, 0, 0, 4)),
        Err(Flood::WindowUpdates)
    );
}

#[test]
fn the_scanner_finds_headers_split_across_reads_after_the_preface() {
    let mut wire = Vec::new();
    wire.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let heads = [
        frame(0x4, 0, 0, 6),
        frame(HEADERS, 0x4, 1, 3),
        frame(DATA, END_STREAM, 1, 0),
        frame(RST_STREAM, 0, 1, 4),
    ];
    for h in heads {
        wire.extend_from_slice(&h.len.to_be_bytes()[1..]);
        wire.extend_from_slice(&[h.kind, h.flags]);
        wire.extend_from_slice(&h.stream.to_be_bytes());
        wire.extend(std::iter::repeat_n(0xaa, h.len as usize));
    }
    for piece in [1, 2, 5, 9, 10, 64] {
        let mut s = Scanner::new(PREFACE_LEN);
        let mut seen = Vec::new();
        for chunk in wire.chunks(piece) {
            s.scan::<()>(chunk, |f| {
                seen.push(f);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(seen, heads, "pieces of {piece}");
        assert!(s.at_boundary());
    }
}

#[test]
fn goaway_names_the_last_stream_and_enhance_your_calm() {
    let f = goaway(0x0102_0305);
    let head: [u8; 9] = f[..9].try_into().unwrap();
    assert_eq!(FrameHead::parse(&head), frame(0x7, 0, 0, 8));
    assert_eq!(&f[9..], &[1, 2, 3, 5, 0, 0, 0, 0xb]);
}
