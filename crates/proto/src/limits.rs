//! What one work order may carry. The listener checks these before any work that grows with the
//! request, and the enclave checks them again (it trusts no host), from one definition, so both
//! accept the same requests.

/// Size limits on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestLimits {
    /// The largest request body, in bytes (Avalon's enclave heap was 8 MiB).
    pub max_request_bytes: usize,
    /// The most `inData` plus `outData` items of a work order.
    pub max_data_items: usize,
    /// The most JSON values (scalars, arrays and objects) a request may hold, so that its size
    /// in memory stays near its size on the wire (a work order at the item limit holds about
    /// 7,000).
    pub max_json_values: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { max_request_bytes: 8 << 20, max_data_items: 1024, max_json_values: 65_536 }
    }
}

impl RequestLimits {
    /// The message for a request of `bytes` bytes over the limit.
    pub fn too_large_message(&self, bytes: usize) -> String {
        format!(
            "Work order request is too large: {bytes} bytes, the limit is {}",
            self.max_request_bytes
        )
    }

    /// The message for a work order with `items` data items, over the limit.
    pub fn too_many_items_message(&self, items: usize) -> String {
        format!("Too many data items: {items}, the limit is {}", self.max_data_items)
    }
}
