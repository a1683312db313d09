//! Every message survives encoding, framing (compressed or not) and decoding; and
//! random, truncated or corrupted bytes give an error, never a panic or a wrong message.

use proptest::prelude::*;
use tickdb_protocol::*;

fn rows() -> impl Strategy<Value = RowList> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..12)
        .prop_map(|rows| rows.iter().map(Vec::as_slice).collect())
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (any::<u32>(), "[a-z_]{0,12}", prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(request_id, reducer, args)| ClientMessage::CallReducer { request_id, reducer, args }),
        (any::<u32>(), prop::collection::vec(".{0,40}", 0..4), any::<u64>(), any::<u64>()).prop_map(
            |(query_set_id, queries, resume_after_tick, resume_epoch)| ClientMessage::Subscribe {
                query_set_id,
                queries,
                resume_after_tick,
                resume_epoch
            }
        ),
        any::<u32>().prop_map(|query_set_id| ClientMessage::Unsubscribe { query_set_id }),
        (any::<u32>(), ".{0,60}")
            .prop_map(|(request_id, sql)| ClientMessage::OneOffQuery { request_id, sql }),
    ]
}

fn table_update() -> impl Strategy<Value = TableUpdate> {
    (any::<u32>(), "[a-z]{1,8}", rows(), rows(), rows(), 1usize..3).prop_map(
        |(table_id, table_name, inserts, deletes, keys, width)| {
            let changed = (0..keys.len() * width).map(|i| i as u8).collect();
            let values = keys.iter().map(|k| &k[..k.len() / 2]).collect();
            TableUpdate {
                table_id,
                table_name,
                inserts,
                deletes,
                updates: RowUpdates { keys, changed, values },
            }
        },
    )
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (any::<[u8; 32]>(), "[a-zA-Z0-9.]{0,40}", any::<[u8; 16]>(), any::<u64>(), any::<u64>()).prop_map(
            |(identity, token, connection_id, tick, epoch)| ServerMessage::IdentityToken {
                identity,
                token,
                connection_id,
                tick,
                epoch
            }
        ),
        (
            any::<u32>(),
            any::<u64>(),
            prop::collection::vec((any::<u32>(), "[a-z]{1,8}", rows()), 0..3),
            prop::collection::vec((any::<u64>(), prop::collection::vec(table_update(), 0..2)), 0..3),
        )
            .prop_map(|(query_set_id, tick, tables, missed)| ServerMessage::SubscribeApplied {
                query_set_id,
                tick,
                tables: tables
                    .into_iter()
                    .map(|(table_id, table_name, rows)| TableRows { table_id, table_name, rows })
                    .collect(),
                resumed: !missed.is_empty(),
                missed: missed.into_iter().map(|(tick, tables)| MissedTick { tick, tables }).collect(),
            }),
        (
            any::<u64>(),
            any::<i64>(),
            prop::collection::vec((any::<u32>(), prop::collection::vec(table_update(), 0..3)), 0..3)
        )
            .prop_map(|(tick, timestamp_us, sets)| ServerMessage::TickUpdate {
                tick,
                timestamp_us,
                query_sets: sets
                    .into_iter()
                    .map(|(query_set_id, tables)| QuerySetUpdate { query_set_id, tables })
                    .collect(),
            }),
        (
            any::<u32>(),
            any::<u64>(),
            prop::result::maybe_ok(prop::collection::vec(any::<u8>(), 0..16), ".{0,20}"),
            any::<u64>(),
            prop::collection::vec((any::<u32>(), prop::collection::vec(table_update(), 0..2)), 0..2)
        )
            .prop_map(|(request_id, tick, outcome, duration_us, sets)| {
                ServerMessage::ReducerResult {
                    request_id,
                    tick,
                    outcome,
                    duration_us,
                    changes: sets
                        .into_iter()
                        .map(|(query_set_id, tables)| QuerySetUpdate { query_set_id, tables })
                        .collect(),
                }
            }),
        (
            any::<u32>(),
            prop::result::maybe_ok((prop::collection::vec("[a-z]{1,6}", 0..4), rows()), ".{0,20}"),
            any::<u64>()
        )
            .prop_map(|(request_id, outcome, duration_us)| ServerMessage::QueryResult {
                request_id,
                outcome: outcome.map(|(columns, rows)| QueryRows {
                    columns,
                    row_type: vec![21, 0, 0, 0, 0],
                    rows
                }),
                duration_us,
            }),
        (any::<u32>(), ".{0,30}")
            .prop_map(|(query_set_id, message)| ServerMessage::SubscriptionError { query_set_id, message }),
    ]
}

proptest! {
    /// Client messages round-trip, framed with and without compression.
    #[test]
    fn client_messages_round_trip(m in client_message(), lz4 in any::<bool>()) {
        let compression = if lz4 { Compression::Lz4 } else { Compression::None };
        let framed = frame(compression, &m.encode());
        let decoded = ClientMessage::decode(&unframe(&framed, 1 << 20).unwrap()).unwrap();
        prop_assert_eq!(decoded, m);
    }

    /// Server messages round-trip, framed with and without compression.
    #[test]
    fn server_messages_round_trip(m in server_message(), lz4 in any::<bool>()) {
        let compression = if lz4 { Compression::Lz4 } else { Compression::None };
        let framed = frame(compression, &m.encode());
        let decoded = ServerMessage::decode(&unframe(&framed, 1 << 20).unwrap()).unwrap();
        prop_assert_eq!(decoded, m);
    }

    /// Random bytes are refused with an error (or, rarely, read as some message) and
    /// never panic either decoder.
    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = ClientMessage::decode(&bytes);
        let _ = ServerMessage::decode(&bytes);
        let _ = unframe(&bytes, 1 << 16);
    }

    /// Every truncation and every single-byte corruption of a real message decodes to
    /// an error or to some message, without panicking.
    #[test]
    fn truncated_and_flipped_never_panic(m in server_message(), at in any::<prop::sample::Index>(), xor in 1u8..) {
        let bytes = m.encode();
        let _ = ServerMessage::decode(&bytes[..at.index(bytes.len())]);
        let mut flipped = bytes.clone();
        let i = at.index(flipped.len());
        flipped[i] ^= xor;
        let _ = ServerMessage::decode(&flipped);
        let c = ClientMessage::OneOffQuery { request_id: 1, sql: "SELECT * FROM t".into() }.encode();
        let _ = ClientMessage::decode(&c[..at.index(c.len())]);
    }
}

/// A compressed message that claims to decompress past the limit is refused before
/// anything is allocated for it.
#[test]
fn decompression_is_bounded() {
    let big = vec![7u8; 100_000];
    let framed = frame(Compression::Lz4, &big);
    assert!(framed.len() < 2_000, "repetitive bytes compress");
    assert_eq!(unframe(&framed, 10_000), Err(ProtocolError::TooLarge { len: 100_000, max: 10_000 }));
    assert_eq!(unframe(&framed, 100_000).unwrap().len(), 100_000);
    assert_eq!(unframe(&[9, 1, 2], 10), Err(ProtocolError::UnknownCompression(9)));
    assert_eq!(unframe(&[], 10), Err(ProtocolError::Empty));
}

/// A small message is sent uncompressed even to a client that asked for LZ4.
#[test]
fn small_messages_are_not_compressed() {
    let m = ClientMessage::Unsubscribe { query_set_id: 3 }.encode();
    assert_eq!(frame(Compression::Lz4, &m)[0], 0);
    assert_eq!(frame(Compression::Lz4, &vec![1; COMPRESS_BYTES_MIN])[0], 1);
}

/// Row lists whose offsets run backwards or past the data are refused.
#[test]
fn bad_row_offsets_are_refused() {
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let data = b.create_vector(&[1u8, 2, 3]);
    let offsets = b.create_vector(&[0u32, 2, 1]);
    let rows = fb::RowList::create(&mut b, &fb::RowListArgs { data: Some(data), offsets: Some(offsets) });
    let name = b.create_string("t");
    let table = fb::TableRows::create(
        &mut b,
        &fb::TableRowsArgs { table_id: 1, table_name: Some(name), rows: Some(rows) },
    );
    let tables = b.create_vector(&[table]);
    let applied = fb::SubscribeApplied::create(
        &mut b,
        &fb::SubscribeAppliedArgs { query_set_id: 1, tick: 1, tables: Some(tables), ..Default::default() },
    );
    let root = fb::ServerMessage::create(
        &mut b,
        &fb::ServerMessageArgs {
            body_type: fb::ServerBody::SubscribeApplied,
            body: Some(applied.as_union_value()),
        },
    );
    b.finish_minimal(root);
    assert_eq!(ServerMessage::decode(b.finished_data()), Err(ProtocolError::BadOffsets));
}
