//! Durable state in JetStream KV: task records (`JETASK_TASKS`) and function specs
//! (`JETASK_FUNCTIONS`). Record writes are compare-and-swap on the key's revision, so a write
//! applies only from the state it was decided from.

use crate::core::function::Function;
use crate::core::subjects;
use crate::core::task::{Serialized, TaskRecord};
use crate::store::index;
use async_nats::jetstream::{self, context::PublishErrorKind, kv, stream::LastRawMessageErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` found the key already there.
    #[error("record already exists")]
    Exists,
    /// `update` found a newer revision than the one it was decided from.
    #[error("record changed since it was read")]
    Conflict,
    /// The record would not fit the server's message size.
    #[error("record too large for the NATS server: {0}")]
    TooLarge(String),
    #[error("stored value is not a valid record: {0}")]
    Corrupt(String),
    #[error("JetStream unavailable: {0}")]
    Nats(String),
}

fn nats(e: impl std::fmt::Display) -> StoreError {
    StoreError::Nats(e.to_string())
}

/// A record with the KV revision it was read at (or written as).
#[derive(Clone, Debug)]
pub struct Versioned {
    pub record: TaskRecord,
    pub revision: u64,
}

/// Task records, keyed by task ID.
#[derive(Clone)]
pub struct TaskStore {
    js: jetstream::Context,
    kv: kv::Store,
}

impl TaskStore {
    pub fn new(js: jetstream::Context, kv: kv::Store) -> Self {
        TaskStore { js, kv }
    }

    /// The record of `id` as the bucket's stream leader has it: never stale, so a decision
    /// may rest on it ("there is no record", "it is finished"). On a cluster a direct get may be
    /// answered by a replica still catching up after a failover, which would read a record
    /// just written as absent, and a delivery acknowledged on that is a task lost.
    pub async fn get(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        let subject = format!("{}{id}", self.kv.prefix);
        match self.kv.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => {
                let op = m.headers.get("KV-Operation").map(|v| v.as_str().to_string());
                if matches!(op.as_deref(), Some("DEL") | Some("PURGE")) || m.headers.get("Nats-Marker-Reason").is_some()
                {
                    return Ok(None);
                }
                decode(&m.payload, m.sequence).map(Some)
            }
            Err(e) => match e.kind() {
                LastRawMessageErrorKind::NoMessageFound => Ok(None),
                _ => Err(nats(e)),
            },
        }
    }

    /// The record of `id` from whichever replica answers first (a direct get): cheaper, and
    /// right for showing a record, but it may lag behind the leader for a moment after a
    /// failover. Never decide anything on it.
    pub async fn peek(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        let entry = self.kv.entry(id).await.map_err(nats)?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => decode(&e.value, e.revision).map(Some),
            _ => Ok(None),
        }
    }

    /// Writes a record that must not exist yet.
    pub async fn create(&self, record: &TaskRecord) -> Result<u64, StoreError> {
        self.create_as(record, &record.serialized()).await
    }

    /// [`create`](Self::create), with the record already serialized (for its events too).
    pub async fn create_as(&self, record: &TaskRecord, value: &Serialized) -> Result<u64, StoreError> {
        self.write(record, value, 0).await.map_err(|e| match e {
            StoreError::Conflict => StoreError::Exists,
            other => other,
        })
    }

    /// Writes `record` over the revision it was decided from.
    pub async fn update(&self, record: &TaskRecord, revision: u64) -> Result<u64, StoreError> {
        self.update_as(record, &record.serialized(), revision).await
    }

    /// [`update`](Self::update), with the record already serialized (for its events too).
    pub async fn update_as(&self, record: &TaskRecord, value: &Serialized, revision: u64) -> Result<u64, StoreError> {
        self.write(record, value, revision).await
    }

    async fn write(&self, record: &TaskRecord, value: &Serialized, revision: u64) -> Result<u64, StoreError> {
        if let Some(e) = value.error() {
            return Err(StoreError::Corrupt(e.to_string()));
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", revision.to_string().as_str());
        // The list index follows records from this header alone (a headers-only consumer).
        headers.insert(index::header::NAME, index::header::encode(record));
        let ack = self
            .js
            .publish_with_headers(
                subjects::task_key_subject(&record.id),
                headers,
                Bytes::from(value.record()),
            )
            .await
            .map_err(|e| publish_error(e.kind(), e))?
            .await
            .map_err(|e| publish_error(e.kind(), e))?;
        Ok(ack.sequence)
    }
}

fn decode(body: &[u8], revision: u64) -> Result<Versioned, StoreError> {
    let record = serde_json::from_slice(body).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    Ok(Versioned { record, revision })
}

fn publish_error(kind: PublishErrorKind, e: impl std::fmt::Display) -> StoreError {
    match kind {
        PublishErrorKind::WrongLastSequence => StoreError::Conflict,
        PublishErrorKind::MaxPayloadExceeded => StoreError::TooLarge(e.to_string()),
        _ => nats(e),
    }
}

/// Function specs, keyed by name; every replica watches them (see [`crate::store::registry`]).
#[derive(Clone)]
pub struct FunctionStore {
    kv: kv::Store,
}

impl FunctionStore {
    pub fn new(kv: kv::Store) -> Self {
        FunctionStore { kv }
    }

    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    pub async fn get(&self, name: &str) -> Result<Option<Function>, StoreError> {
        match self.kv.entry(name).await.map_err(nats)? {
            Some(e) if e.operation == kv::Operation::Put => serde_json::from_slice(&e.value)
                .map(Some)
                .map_err(|err| StoreError::Corrupt(err.to_string())),
            _ => Ok(None),
        }
    }

    pub async fn put(&self, f: &Function) -> Result<(), StoreError> {
        let body = serde_json::to_vec(f).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.kv.put(&f.name, body.into()).await.map_err(nats)?;
        Ok(())
    }

    /// Deletes `name`; `false` when there was no such function.
    pub async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        if self.get(name).await?.is_none() {
            return Ok(false);
        }
        self.kv.delete(name).await.map_err(nats)?;
        Ok(true)
    }

    pub async fn list(&self) -> Result<Vec<Function>, StoreError> {
        let mut keys = self.kv.keys().await.map_err(nats)?;
        let mut names = Vec::new();
        while let Some(k) = keys.next().await {
            names.push(k.map_err(nats)?);
        }
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Some(f) = self.get(&n).await? {
                out.push(f);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
