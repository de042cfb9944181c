//! The witness's decisions, through its router, and its files across a
//! restart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;

use super::*;
use crate::audit::sign::{AuditSigner, SignedKind};

const TS: &str = "2025-03-01T12:00:00.000000Z";

/// A checkpoint line in the writer's layout, signed by `s`.
fn checkpoint(s: &AuditSigner, seq: u64, head: [u8; 32], records: u64) -> String {
    let sig = s
        .sign(SignedKind::Checkpoint, seq, &head, TS, records, 0)
        .unwrap();
    let h = hex::encode(head);
    format!(
        r#"{{"seq":{seq},"ts":"{TS}","kind":"checkpoint","reason":"count","records":{records},"lost":0,"hash":"{h}","sig_pub":"{}","sig":"{}","prev":"{h}"}}"#,
        s.public_hex(),
        hex::encode(sig)
    )
}

async fn post(store: &Arc<Mutex<Store>>, body: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/checkpoints")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = router(store.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn open(dir: &std::path::Path, allowed: &[&AuditSigner]) -> Arc<Mutex<Store>> {
    let set: HashSet<Hash> = allowed.iter().map(|s| *s.key_id()).collect();
    Arc::new(Mutex::new(Store::open(dir, set).unwrap()))
}

#[tokio::test]
async fn decisions_with_an_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let node = AuditSigner::from_seed(&[1; 32]);
    let stranger = AuditSigner::from_seed(&[2; 32]);
    let store = open(dir.path(), &[&node]);

    let c10 = checkpoint(&node, 10, [0xaa; 32], 9);
    let c20 = checkpoint(&node, 20, [0xbb; 32], 19);
    let mut bad_sig = checkpoint(&node, 30, [0xcc; 32], 29);
    // Flip one hex digit of the signature (it sits just before prev).
    let at = bad_sig.find("\"sig\":\"").unwrap() + 7;
    let flipped = if &bad_sig[at..=at] == "0" { "1" } else { "0" };
    bad_sig.replace_range(at..=at, flipped);
    let unsigned = format!(
        r#"{{"seq":40,"ts":"{TS}","kind":"checkpoint","reason":"count","records":1,"lost":0,"hash":"{0}","prev":"{0}"}}"#,
        "ab".repeat(32)
    );
    let hit = format!(
        r#"{{"seq":41,"ts":"{TS}","kind":"hit","client":"192.0.2.1","prev":"{}"}}"#,
        "ab".repeat(32)
    );
    let table: Vec<(&str, String, StatusCode, &str)> = vec![
        ("new", c10.clone(), StatusCode::CREATED, "stored"),
        (
            "identical resend",
            c10.clone(),
            StatusCode::OK,
            "already held",
        ),
        ("next", c20.clone(), StatusCode::CREATED, "stored"),
        (
            "same seq, other head",
            checkpoint(&node, 20, [0xcd; 32], 19),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "seq backwards",
            checkpoint(&node, 15, [0xee; 32], 14),
            StatusCode::CONFLICT,
            "backwards",
        ),
        (
            "bad signature",
            bad_sig,
            StatusCode::FORBIDDEN,
            "bad signature",
        ),
        (
            "unknown key",
            checkpoint(&stranger, 50, [0xaa; 32], 49),
            StatusCode::FORBIDDEN,
            "unknown key",
        ),
        ("unsigned", unsigned, StatusCode::BAD_REQUEST, "not signed"),
        (
            "a hit",
            hit,
            StatusCode::BAD_REQUEST,
            "only start and checkpoint",
        ),
        ("garbage", "{\"seq\":".into(), StatusCode::BAD_REQUEST, ""),
        (
            "two records",
            format!("{c10}\n{c20}"),
            StatusCode::BAD_REQUEST,
            "one record",
        ),
    ];
    for (what, body, want, says) in table {
        let (status, text) = post(&store, &body).await;
        assert_eq!(status, want, "{what}: {text}");
        assert!(text.contains(says), "{what}: {text}");
    }
    assert_eq!(store.lock().unwrap().count(node.key_id()), 2);
    assert_eq!(store.lock().unwrap().count(stranger.key_id()), 0);

    // Conflicts and rollbacks are kept as evidence; bad signatures are not.
    let refused = std::fs::read_to_string(dir.path().join("refused.jsonl")).unwrap();
    assert_eq!(refused.lines().count(), 2, "{refused}");
    assert!(refused.contains("\"reason\":\"conflict\""));
    assert!(refused.contains("backwards"));

    // What verify reads back: sorted, with the chain heads.
    let (_, held_now) = held(dir.path(), node.key_id()).unwrap();
    assert_eq!(
        held_now
            .iter()
            .map(|h| (h.seq, h.head[0]))
            .collect::<Vec<_>>(),
        vec![(10, 0xaa), (20, 0xbb)]
    );

    // Only POST, only one path.
    let req = Request::builder()
        .uri("/v1/checkpoints")
        .body(Body::empty())
        .unwrap();
    let res = router(store.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/other")
        .body(Body::empty())
        .unwrap();
    let res = router(store.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_an_allow_list_any_key_is_stored_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let node = AuditSigner::from_seed(&[3; 32]);
    let store = open(dir.path(), &[]);
    let (status, _) = post(&store, &checkpoint(&node, 5, [1; 32], 4)).await;
    assert_eq!(status, StatusCode::CREATED);
    let file = dir
        .path()
        .join(format!("{}.jsonl", hex::encode(node.key_id())));
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains("\"verified\":false"), "{text}");
    // The signature is still checked against the key the record carries.
    let mut forged = checkpoint(&node, 6, [1; 32], 5);
    forged = forged.replace("\"records\":5", "\"records\":6");
    assert_eq!(post(&store, &forged).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn state_survives_a_restart_and_a_torn_line_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let node = AuditSigner::from_seed(&[4; 32]);
    let c1 = checkpoint(&node, 7, [9; 32], 6);
    {
        let store = open(dir.path(), &[&node]);
        assert_eq!(post(&store, &c1).await.0, StatusCode::CREATED);
        // A second witness on the same directory is refused.
        assert!(Store::open(dir.path(), HashSet::new()).is_err());
    }
    let file = dir
        .path()
        .join(format!("{}.jsonl", hex::encode(node.key_id())));
    let before = std::fs::read(&file).unwrap();
    // A crash mid-append leaves an unterminated line (never acknowledged).
    let mut torn = before.clone();
    torn.extend_from_slice(b"{\"received\":\"2025");
    std::fs::write(&file, &torn).unwrap();

    let store = open(dir.path(), &[&node]);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(post(&store, &c1).await.0, StatusCode::OK);
    assert_eq!(
        post(&store, &checkpoint(&node, 7, [8; 32], 6)).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        post(&store, &checkpoint(&node, 3, [8; 32], 2)).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        post(&store, &checkpoint(&node, 8, [8; 32], 7)).await.0,
        StatusCode::CREATED
    );
    let (_, h) = held(dir.path(), node.key_id()).unwrap();
    assert_eq!(h.len(), 2);
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        // Signing and verifying in a debug build is slow: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever arrives over the network, checking it never panics,
        /// and nothing but a record signed over its own fields passes.
        #[test]
        fn check_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = store::check(&bytes);
        }

        /// A valid line with any signed field changed is refused.
        #[test]
        fn changed_signed_fields_are_refused(seq in 1u64..1_000_000, delta in 1u64..1000, which in 0usize..4) {
            let node = AuditSigner::from_seed(&[9; 32]);
            let good = checkpoint(&node, seq, [7; 32], seq - 1);
            prop_assert!(matches!(store::check(good.as_bytes()), Ok(Ok(_))));
            let bad = match which {
                0 => good.replacen(&format!("\"seq\":{seq}"), &format!("\"seq\":{}", seq + delta), 1),
                1 => good.replacen(&format!("\"records\":{}", seq - 1), &format!("\"records\":{}", seq - 1 + delta), 1),
                2 => good.replacen("\"lost\":0", &format!("\"lost\":{delta}"), 1),
                _ => good.replacen("12:00:00.000000Z", &format!("12:00:00.{:06}Z", delta), 1),
            };
            prop_assert!(!matches!(store::check(bad.as_bytes()), Ok(Ok(_))));
        }
    }
}
