//! Reading request bodies: small ones into an ordinary buffer, large ones into an anonymous memory
//! map that reserves from the node's budget as bytes arrive and is given back to the system, with
//! its reservation, when the last reference to the body goes (the allocator would keep it).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use bytes::BytesMut;
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies up to this size are read into an ordinary buffer and parsed as they come; larger ones
/// reserve from the node's body budget and are parsed on the blocking pool.
pub(crate) const LARGE_BODY_BYTES: usize = 64 << 10;

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyError {
    /// More bytes than the limit.
    #[error("the body is over the limit")]
    TooLarge,
    /// The budget for large bodies in memory is spent (or no memory could be mapped).
    #[error("too many large requests in flight")]
    Busy,
    /// The connection broke before the body was complete.
    #[error("the body could not be read")]
    Broken,
}

/// Reads a body of at most `limit` bytes; `declared` is its `Content-Length`, if any. A large
/// body takes a kibibyte of `budget` for each kibibyte that arrives, and keeps it until the
/// returned bytes (and every slice of them) are dropped, so a parse that outlives its request
/// still counts.
pub(crate) async fn read(
    mut body: Body,
    declared: Option<usize>,
    limit: usize,
    budget: &Arc<Semaphore>,
) -> Result<Bytes, BodyError> {
    let capacity = declared.unwrap_or(limit).min(limit);
    let mut buffer = if capacity <= LARGE_BODY_BYTES {
        Buffer::Small(BytesMut::with_capacity(capacity), capacity)
    } else {
        let map =
            memmap2::MmapOptions::new().len(capacity).map_anon().map_err(|_| BodyError::Busy)?;
        Buffer::Large(Large { map, len: 0, reserved: None, budget: Arc::clone(budget) })
    };
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Broken)?.into_data() else { continue };
        buffer.extend(&data)?;
    }
    Ok(buffer.freeze())
}

enum Buffer {
    /// A buffer, and the most it may hold.
    Small(BytesMut, usize),
    Large(Large),
}

/// A large body: its memory map, how much of it is filled, and the budget it holds.
struct Large {
    map: memmap2::MmapMut,
    len: usize,
    reserved: Option<OwnedSemaphorePermit>,
    budget: Arc<Semaphore>,
}

impl Buffer {
    fn extend(&mut self, data: &[u8]) -> Result<(), BodyError> {
        match self {
            Self::Small(buffer, most) if buffer.len() + data.len() <= *most => {
                buffer.extend_from_slice(data);
                Ok(())
            }
            Self::Small(..) => Err(BodyError::TooLarge),
            Self::Large(large) => large.extend(data),
        }
    }

    fn freeze(self) -> Bytes {
        match self {
            Self::Small(buffer, _) => buffer.freeze(),
            Self::Large(large) => {
                let len = large.len;
                Bytes::from_owner(Held { map: large.map, _reserved: large.reserved }).slice(..len)
            }
        }
    }
}

impl Large {
    fn extend(&mut self, data: &[u8]) -> Result<(), BodyError> {
        let end = self.len + data.len();
        let target = self.map.get_mut(self.len..end).ok_or(BodyError::TooLarge)?;
        let held = self.reserved.as_ref().map_or(0, |permit| permit.num_permits());
        let needed = end.div_ceil(1024).saturating_sub(held);
        if needed > 0 {
            let more = u32::try_from(needed).map_err(|_| BodyError::Busy)?;
            let permit = Arc::clone(&self.budget)
                .try_acquire_many_owned(more)
                .map_err(|_| BodyError::Busy)?;
            match &mut self.reserved {
                Some(reserved) => reserved.merge(permit),
                None => self.reserved = Some(permit),
            }
        }
        target.copy_from_slice(data);
        self.len = end;
        Ok(())
    }
}

/// A large body's memory and its reservation, released together.
struct Held {
    map: memmap2::MmapMut,
    _reserved: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}
