//! The `redis` store type against a real `redis-server`: the answers of every operation the
//! component can make, as Spin's own Redis store gives them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use spin_runner::kv::redis::RedisKv;
use spin_runner::kv::Swap;
use support::RedisServer;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn every_operation_answers_as_spins_redis_store() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let kv = RedisKv::connect(&server.url()).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), None);
        assert!(!kv.exists("a").await.unwrap());
        kv.set("a", b"1").await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), Some(b"1".to_vec()));
        assert!(kv.exists("a").await.unwrap());
        kv.set_many(vec![
            ("b".into(), b"2".to_vec()),
            ("c".into(), vec![0, 255]),
        ])
        .await
        .unwrap();
        assert_eq!(
            kv.get_many(vec!["c".into(), "missing".into(), "a".into()])
                .await
                .unwrap(),
            vec![
                ("c".into(), Some(vec![0, 255])),
                ("missing".into(), None),
                ("a".into(), Some(b"1".to_vec())),
            ]
        );
        let mut keys = kv.keys().await.unwrap();
        keys.sort();
        assert_eq!(keys, ["a", "b", "c"]);
        kv.delete_many(vec!["b".into(), "c".into(), "never".into()])
            .await
            .unwrap();
        kv.delete("a").await.unwrap();
        kv.delete("a").await.unwrap();
        assert!(kv.keys().await.unwrap().is_empty());

        // Counters: INCRBY, kept as decimal text; adding 0 reads (and creates) them.
        assert_eq!(kv.increment("n", 0).await.unwrap(), 0);
        assert_eq!(kv.increment("n", 5).await.unwrap(), 5);
        assert_eq!(kv.increment("n", -2).await.unwrap(), 3);
        assert_eq!(kv.get("n").await.unwrap(), Some(b"3".to_vec()));
    });
}

#[test]
fn compare_and_swap_takes_exactly_one_of_racing_writers() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let kv = RedisKv::connect(&server.url()).await.unwrap();
        // From absent: the first swap wins, the second sees its value.
        assert_eq!(
            kv.compare_and_swap("k", None, b"one".to_vec())
                .await
                .unwrap(),
            Swap::Swapped
        );
        assert_eq!(
            kv.compare_and_swap("k", None, b"two".to_vec())
                .await
                .unwrap(),
            Swap::Conflict {
                current: Some(b"one".to_vec())
            }
        );
        // From a value: only from the value stored now.
        assert_eq!(
            kv.compare_and_swap("k", Some(b"stale".to_vec()), b"x".to_vec())
                .await
                .unwrap(),
            Swap::Conflict {
                current: Some(b"one".to_vec())
            }
        );
        assert_eq!(
            kv.compare_and_swap("k", Some(b"one".to_vec()), b"three".to_vec())
                .await
                .unwrap(),
            Swap::Swapped
        );
        kv.delete("k").await.unwrap();
        assert_eq!(
            kv.compare_and_swap("k", Some(b"three".to_vec()), b"x".to_vec())
                .await
                .unwrap(),
            Swap::Conflict { current: None }
        );

        // 32 writers race from absent on two connections: exactly one wins.
        let other = RedisKv::connect(&server.url()).await.unwrap();
        let mut racers = Vec::new();
        for i in 0..32u8 {
            let kv = if i % 2 == 0 {
                kv.clone()
            } else {
                other.clone()
            };
            racers.push(tokio::spawn(async move {
                kv.compare_and_swap("race", None, vec![i]).await.unwrap()
            }));
        }
        let mut won = 0;
        for r in racers {
            if r.await.unwrap() == Swap::Swapped {
                won += 1;
            }
        }
        assert_eq!(won, 1);
    });
}

#[test]
fn an_unreachable_redis_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = runtime()
        .block_on(RedisKv::connect(&format!("redis://127.0.0.1:{port}/0")))
        .unwrap_err();
    assert!(e.0.starts_with("redis:"), "{e:?}");
}
