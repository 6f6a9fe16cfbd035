//! Spin's `redis` key-value store type: the store's keys are Redis keys of one database,
//! as `spin up` keeps them (`spinframework/spin`, `crates/key-value-redis`), so several
//! runners, or a runner and `spin up`, share one store through one Redis.
//!
//! Every operation is one Redis command: `GET`, `SET`, `DEL`, `EXISTS`, `KEYS *`, `MGET`,
//! `MSET`, and `INCRBY` for counters, which Redis keeps as decimal text (SQLite stores keep
//! 8 little-endian bytes: a counter is read with `increment` by 0, never decoded). A
//! compare-and-swap is a Lua script, atomic on the server: it sets the value only if the key
//! still holds what `current` returned (absent included). Spin's own Redis store uses
//! `WATCH`, `MULTI` and `EXEC` on a connection of its own per swap; a script gives the same
//! answer to every swap from a value read (a key changed and changed back in between is the
//! one case a `WATCH` refuses and the script accepts) without holding a connection between
//! the guest's two calls, so all requests share one multiplexed connection, which
//! reconnects by itself when Redis restarts.

use redis::aio::ConnectionManager;
use redis::{Client, Script, Value};

use super::{KvError, Swap};

/// Sets `KEYS[1]` to `ARGV[2]` if it holds `ARGV[1]` (`ARGV[3]` = "1"), or if it is absent
/// (`ARGV[3]` = "0"); else returns what it holds. Returns `{1}` when swapped, `{0, value}`
/// or `{0}` (absent) when not.
const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
local expected_present = ARGV[3] == '1'
if (expected_present and current == ARGV[1]) or (not expected_present and current == false) then
  redis.call('SET', KEYS[1], ARGV[2])
  return {1}
end
if current == false then
  return {0}
end
return {0, current}
";

/// A Redis database used as Spin key-value stores.
#[derive(Clone)]
pub struct RedisKv {
    connection: ConnectionManager,
    cas: Script,
    url: String,
}

impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv").field("url", &self.url).finish()
    }
}

fn err(e: redis::RedisError) -> KvError {
    KvError(format!("redis: {e}"))
}

impl RedisKv {
    /// Connects to the Redis at `url` (`redis://host:port/db`, Spin's `url` setting).
    pub async fn connect(url: &str) -> Result<Self, KvError> {
        let client = Client::open(url).map_err(err)?;
        let connection = client.get_connection_manager().await.map_err(err)?;
        Ok(Self {
            connection,
            cas: Script::new(CAS_SCRIPT),
            url: redacted(url),
        })
    }

    /// The Redis this store uses, without any password in its URL.
    pub fn describe(&self) -> &str {
        &self.url
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, KvError> {
        cmd.query_async(&mut self.connection.clone())
            .await
            .map_err(err)
    }

    /// The value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.query(redis::cmd("EXISTS").arg(key)).await
    }

    /// Every key of the database.
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        self.query(redis::cmd("KEYS").arg("*")).await
    }

    /// The values of `keys`, in order.
    pub async fn get_many(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(&keys)).await?;
        Ok(keys.into_iter().zip(values).collect())
    }

    /// Sets `key`.
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.query(redis::cmd("SET").arg(key).arg(value)).await
    }

    /// Deletes `key` (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.query::<i64>(redis::cmd("DEL").arg(key))
            .await
            .map(drop)
    }

    /// Sets every pair at once (`MSET` is atomic).
    pub async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.query(redis::cmd("MSET").arg(&pairs)).await
    }

    /// Deletes every key at once.
    pub async fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.query::<i64>(redis::cmd("DEL").arg(&keys))
            .await
            .map(drop)
    }

    /// Adds `delta` to the counter at `key` (absent counts as 0) and returns the sum.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.query(redis::cmd("INCRBY").arg(key).arg(delta)).await
    }

    /// Sets `key` to `value` if it still holds `expected` (`None`: absent).
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<Swap, KvError> {
        let present = if expected.is_some() { "1" } else { "0" };
        let reply: Vec<Value> = self
            .cas
            .key(key)
            .arg(expected.unwrap_or_default())
            .arg(value)
            .arg(present)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(err)?;
        match reply.as_slice() {
            [Value::Int(1)] => Ok(Swap::Swapped),
            [Value::Int(0)] => Ok(Swap::Conflict { current: None }),
            [Value::Int(0), Value::BulkString(current)] => Ok(Swap::Conflict {
                current: Some(current.clone()),
            }),
            other => Err(KvError(format!(
                "redis: unexpected compare-and-swap reply {other:?}"
            ))),
        }
    }
}

/// `url` with the password, if any, replaced by `***`.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{}{masked}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_reach_a_log_line() {
        assert_eq!(
            redacted("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("redis://default:s3cret@redis:6379"),
            "redis://default:***@redis:6379"
        );
        assert_eq!(
            redacted("redis://s3cret@redis:6379"),
            "redis://***@redis:6379"
        );
    }
}
