//! The backend under concurrent load through the real runner and its SQLite store: no
//! lost writes, one winner per idempotency key, unique v3 IDs, and 503 (with nothing
//! acknowledged lost) while the store is unavailable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::thread;

use crate::support::*;
use e2e::SEED_004_REQUEST;

fn list_all(stack: &e2e::Stack) -> Vec<String> {
    let member = user("u-member", &[(ORG, "member")]);
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = get(
            stack,
            &member,
            &format!("/api/workspaces?orgId={ORG}&limit=7{cursor}"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        ids.extend(
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["workspaceId"].as_str().unwrap().to_owned()),
        );
        match body["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return ids,
        }
    }
}

#[test]
fn fifty_parallel_creates_are_all_listed() {
    let stack = backend();
    let created: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let stack = &stack;
                s.spawn(move || {
                    let body = SEED_004_REQUEST
                        .replace("CS101: Introduction to AI", &format!("Parallel {i}"));
                    let r = post_json(stack, &owner(), "/api/workspaces", &body, &[]);
                    assert_eq!(r.status, 201, "{}", r.text());
                    r.json()["data"]["workspaceId"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: BTreeSet<String> = created.into_iter().collect();
    assert_eq!(created.len(), 50);
    let listed = list_all(&stack);
    assert_eq!(listed.len(), 50, "a listing shows each workspace once");
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), created);
}

#[test]
fn concurrent_retries_of_one_key_create_once() {
    let stack = backend();
    let key = uuid::Uuid::new_v4().to_string();
    let results: Vec<(u16, Option<String>, String)> = thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let (stack, key) = (&stack, &key);
                s.spawn(move || {
                    let r = post_json(
                        stack,
                        &owner(),
                        "/api/workspaces",
                        SEED_004_REQUEST,
                        &[("idempotency-key", key)],
                    );
                    let id = r.json()["data"]["workspaceId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    (
                        r.status,
                        r.header("idempotent-replayed").map(str::to_owned),
                        id,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let fresh: Vec<_> = results
        .iter()
        .filter(|(s, replayed, _)| *s == 201 && replayed.is_none())
        .collect();
    assert_eq!(fresh.len(), 1, "{results:?}");
    for (status, replayed, id) in &results {
        match status {
            201 => assert!(
                replayed.is_none() || (replayed.as_deref() == Some("true") && *id == fresh[0].2)
            ),
            409 => {}
            other => panic!("unexpected {other}: {results:?}"),
        }
    }
    assert_eq!(list_all(&stack), vec![fresh[0].2.clone()]);
    // Once complete, every retry replays the same workspace.
    let r = post_json(
        &stack,
        &owner(),
        "/api/workspaces",
        SEED_004_REQUEST,
        &[("idempotency-key", &key)],
    );
    assert_eq!(
        (r.status, r.header("idempotent-replayed")),
        (201, Some("true"))
    );
    assert_eq!(
        r.json()["data"]["workspaceId"].as_str(),
        Some(fresh[0].2.as_str())
    );
}

#[test]
fn concurrent_v3_creates_get_unique_ids() {
    let stack = backend();
    allow_user_creation(&stack);
    let ids: BTreeSet<i64> = thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let stack = &stack;
                s.spawn(move || {
                    let who = user(&format!("u-{i}"), &[(ORG, "member")]);
                    let body = format!("name=Team+{i}");
                    let r = call(
                        stack,
                        Some(&who),
                        "POST",
                        "/api/v3/workspaces",
                        &[("content-type", "application/x-www-form-urlencoded")],
                        Some(body.as_bytes()),
                    );
                    assert_eq!(r.status, 201, "{}", r.text());
                    r.json()["id"].as_i64().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids, (1..=30).collect());
}

#[test]
fn a_locked_store_gives_503_and_loses_nothing_acknowledged() {
    let stack = backend();
    let before = post_json(&stack, &owner(), "/api/workspaces", SEED_004_REQUEST, &[]);
    assert_eq!(before.status, 201);
    let id = before.json()["data"]["workspaceId"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another process holding an exclusive lock on Spin's SQLite file makes every store
    // call fail after the runner's busy timeout.
    let db = rusqlite::Connection::open(stack.state_dir().join("sqlite_key_value.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = post_json(
        &stack,
        &owner(),
        "/api/workspaces",
        SEED_004_REQUEST,
        &[("idempotency-key", "k-503")],
    );
    assert_eq!((r.status, problem(&r).as_str()), (503, "store-unavailable"));
    assert!(r.header("retry-after").is_some());
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    assert_eq!(list_all(&stack), vec![id.clone()]);
    assert_eq!(
        get(&stack, &owner(), &format!("/api/workspaces/{id}")).status,
        200
    );
    // The key was never claimed, so the retry runs.
    let retry = post_json(
        &stack,
        &owner(),
        "/api/workspaces",
        SEED_004_REQUEST,
        &[("idempotency-key", "k-503")],
    );
    assert_eq!(
        (retry.status, retry.header("idempotent-replayed")),
        (201, None)
    );
}
