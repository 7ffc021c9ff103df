//! `inside-out-eval`: file reads and writes requested by the work order and performed by the host
//! (wire spec §6). Each input item is `read <path>` or `write <path> <content>` and gives one
//! output `RESULT: <result>`; paths are confined to the host's workload data directory.

use crate::io::{IoError, WorkloadPath};
use crate::{Context, Input, Output, Workload, WorkloadError};

/// Avalon's inside-out workload.
#[derive(Debug, Clone, Copy, Default)]
pub struct InsideOutEval;

/// Avalon's file buffer: reads return at most this many bytes.
const MAX_READ: usize = 1024;

fn failure(verb: &str, error: &IoError) -> String {
    match error {
        IoError::OutsideDataDirectory => {
            format!("FAILED TO {verb}: Path is outside the data directory")
        }
        _ => format!("FAILED TO {verb}: Unable to open file"),
    }
}

impl InsideOutEval {
    fn execute(context: &Context<'_>, request: &str) -> String {
        let args: Vec<&str> = request.split(' ').filter(|a| !a.is_empty()).collect();
        match args.as_slice() {
            ["read", path] => {
                match WorkloadPath::parse(path).and_then(|p| context.io.read(&p, MAX_READ)) {
                    Ok(contents) => crate::text(&contents),
                    Err(error) => failure("READ", &error),
                }
            }
            ["write", path, content] => {
                match WorkloadPath::parse(path)
                    .and_then(|p| context.io.write(&p, content.as_bytes()))
                {
                    Ok(()) => "FILE WRITE SUCCESS".to_owned(),
                    Err(error) => failure("WRITE", &error),
                }
            }
            ["read" | "write", ..] => "Insufficient arguments passed for i/o operation".to_owned(),
            _ => String::new(),
        }
    }
}

impl Workload for InsideOutEval {
    fn name(&self) -> &'static str {
        "inside-out-eval"
    }

    fn uses_host_io(&self) -> bool {
        true
    }

    fn process(
        &self,
        context: &Context<'_>,
        inputs: &[Input],
    ) -> Result<Vec<Output>, WorkloadError> {
        Ok(inputs
            .iter()
            .map(|input| {
                let result = Self::execute(context, &crate::text(&input.data));
                Output::new(input.index, format!("RESULT: {result}"))
            })
            .collect())
    }
}
