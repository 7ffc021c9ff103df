//! `echo-result`: one output per input, same index, `"RESULT: "` followed by the input.

use crate::{Context, Input, Output, Workload, WorkloadError};

/// Avalon's echo workload.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoResult;

impl Workload for EchoResult {
    fn name(&self) -> &'static str {
        "echo-result"
    }

    fn process(&self, _: &Context<'_>, inputs: &[Input]) -> Result<Vec<Output>, WorkloadError> {
        Ok(inputs
            .iter()
            .map(|input| {
                let mut data = Vec::with_capacity(8 + input.data.len());
                data.extend_from_slice(b"RESULT: ");
                data.extend_from_slice(&input.data);
                Output { index: input.index, data }
            })
            .collect())
    }
}
