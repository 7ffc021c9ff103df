//! The enclave's messages over a byte stream, such as the pipes to an enclave process: the host
//! holds a [`PipeLink`], the enclave process runs [`serve`].
//!
//! Each frame is a 4-byte big-endian length and that many bytes of JSON: `{"call": n,
//! "request": …}` towards the enclave and `{"call": n, "response": …}` back. Calls are answered
//! in any order, so that many can be under way at once (orders on every enclave slot, a stateful
//! order waiting for its workload's turn). Neither side trusts the other's bytes: a frame over
//! [`MAX_FRAME_BYTES`] or that does not decode ends the stream, and a host whose enclave process
//! ends gets [`FailureKind::Transport`] for every call under way and every call after.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::link::EnclaveLink;
use crate::lock;
use crate::messages::{Failure, FailureKind, Request, Response};

/// The largest frame either side accepts: a work order at its 8 MiB limit, in base64, with room.
pub const MAX_FRAME_BYTES: usize = 32 << 20;

/// Calls the enclave process serves at once; further calls wait to be read.
const MAX_CALLS: usize = 256;

/// Why a stream of frames ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipeError {
    /// Reading or writing failed.
    #[error("pipe: {0}")]
    Io(#[from] io::Error),
    /// A frame longer than [`MAX_FRAME_BYTES`].
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    /// A frame that is not a call or an answer.
    #[error("a frame does not decode: {0}")]
    Malformed(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallFrame {
    call: u64,
    request: Request,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerFrame {
    call: u64,
    response: Response,
}

/// Reads one frame; `None` when the stream ends between frames.
///
/// # Errors
/// [`PipeError`] if reading fails, the stream ends inside a frame, or the frame is too long.
pub fn read_frame(reader: &mut impl Read) -> Result<Option<Vec<u8>>, PipeError> {
    let mut len = [0_u8; 4];
    let mut got = 0;
    while got < len.len() {
        match reader.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_FRAME_BYTES {
        return Err(PipeError::TooLarge(len));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Some(body))
}

fn write_frame(writer: &mut impl Write, body: &[u8]) -> Result<(), PipeError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|_| body.len() <= MAX_FRAME_BYTES)
        .ok_or(PipeError::TooLarge(body.len()))?;
    writer.write_all(&len.to_be_bytes())?;
    writer.write_all(body)?;
    writer.flush()?;
    Ok(())
}

/// Decodes a frame the host sent: the call's number and its request.
///
/// # Errors
/// [`PipeError::Malformed`] for anything else.
pub fn decode_call(frame: &[u8]) -> Result<(u64, Request), PipeError> {
    let CallFrame { call, request } =
        serde_json::from_slice(frame).map_err(|e| PipeError::Malformed(e.to_string()))?;
    Ok((call, request))
}

/// Decodes a frame the enclave sent: the call's number and its response.
///
/// # Errors
/// [`PipeError::Malformed`] for anything else.
pub fn decode_answer(frame: &[u8]) -> Result<(u64, Response), PipeError> {
    let AnswerFrame { call, response } =
        serde_json::from_slice(frame).map_err(|e| PipeError::Malformed(e.to_string()))?;
    Ok((call, response))
}

/// Serves `enclave` (an [`Enclave`], or a link that passes some requests on to one) to the host
/// at the other end of `input` and `output` until `input` ends, each call on a thread of its own.
///
/// # Errors
/// [`PipeError`] if the stream fails or the host sends a frame that does not decode.
pub fn serve(
    enclave: Arc<dyn EnclaveLink>,
    input: impl Read,
    output: impl Write + Send + 'static,
) -> Result<(), PipeError> {
    let mut input = BufReader::new(input);
    let output = Arc::new(Mutex::new(BufWriter::new(output)));
    let calls = Arc::new((Mutex::new(0_usize), Condvar::new()));
    while let Some(frame) = read_frame(&mut input)? {
        let (call, request) = decode_call(&frame)?;
        drop(frame);
        {
            let (running, freed) = &*calls;
            let mut running = lock(running);
            while *running >= MAX_CALLS {
                running = freed.wait(running).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            *running += 1;
        }
        let (enclave, output, calls) =
            (Arc::clone(&enclave), Arc::clone(&output), Arc::clone(&calls));
        let spawned = std::thread::Builder::new().name("enclave-call".into()).spawn(move || {
            // Every call is answered, and its slot given back, whatever happens in it.
            let response =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| enclave.call(request)))
                    .unwrap_or_else(|_| {
                        Response::Failed(Failure::new(
                            FailureKind::Platform,
                            "the enclave failed the call",
                        ))
                    });
            let answer = serde_json::to_vec(&AnswerFrame { call, response });
            if let Ok(answer) = answer {
                // A host that went away hears nothing; the input ends soon after.
                let _ = write_frame(&mut *lock(&output), &answer);
            }
            let (running, freed) = &*calls;
            *lock(running) -= 1;
            freed.notify_one();
        });
        spawned.map_err(PipeError::Io)?;
    }
    Ok(())
}

/// A link to an enclave at the other end of a byte stream (a process of its own, usually).
pub struct PipeLink {
    writer: Mutex<Box<dyn Write + Send>>,
    waiting: Arc<Mutex<Waiting>>,
    next_call: AtomicU64,
    child: Mutex<Option<Child>>,
    /// How long a call may wait for its answer; none: as long as it takes.
    timeout: Option<Duration>,
}

#[derive(Default)]
struct Waiting {
    calls: HashMap<u64, mpsc::Sender<Response>>,
    /// Why the stream ended, once it has.
    closed: Option<String>,
}

impl PipeLink {
    /// Starts `command` as the enclave process, speaking frames on its standard input and output
    /// (its standard error is left to the host's).
    ///
    /// # Errors
    /// The [`io::Error`] if the process cannot be started.
    pub fn spawn(command: &mut Command) -> io::Result<Self> {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(io::Error::other("the enclave process has no pipes"));
        };
        let link = Self::over(stdout, stdin);
        *lock(&link.child) = Some(child);
        Ok(link)
    }

    /// A link over `reader` (the enclave's answers) and `writer` (the host's calls).
    pub fn over(reader: impl Read + Send + 'static, writer: impl Write + Send + 'static) -> Self {
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let answers = Arc::clone(&waiting);
        let reading = std::thread::Builder::new()
            .name("enclave-answers".into())
            .spawn(move || read_answers(BufReader::new(reader), &answers));
        if let Err(error) = reading {
            lock(&waiting).closed = Some(format!("cannot read the enclave's answers: {error}"));
        }
        Self {
            writer: Mutex::new(Box::new(BufWriter::new(writer))),
            waiting,
            next_call: AtomicU64::new(1),
            child: Mutex::new(None),
            timeout: None,
        }
    }

    /// The same link, on which a call unanswered for `timeout` fails
    /// ([`FailureKind::Transport`]) and ends the link: an enclave that stopped answering, or a
    /// peer cut off without the stream closing, is given up rather than waited on for ever.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Hands each answer to its caller until the stream ends; then every caller, waiting or to
/// come, hears that it ended.
fn read_answers(mut reader: impl Read, waiting: &Mutex<Waiting>) {
    let ended = loop {
        let frame = match read_frame(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => break "the enclave process ended".to_owned(),
            Err(error) => break format!("the enclave's stream failed: {error}"),
        };
        match decode_answer(&frame) {
            Ok((call, response)) => {
                if let Some(caller) = lock(waiting).calls.remove(&call) {
                    let _ = caller.send(response);
                }
            }
            Err(error) => break format!("the enclave sent a bad frame: {error}"),
        }
    };
    let mut waiting = lock(waiting);
    waiting.closed = Some(ended);
    // Dropping the senders wakes every caller.
    waiting.calls.clear();
}

impl EnclaveLink for PipeLink {
    fn call(&self, request: Request) -> Response {
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = mpsc::channel();
        {
            let mut waiting = lock(&self.waiting);
            if let Some(closed) = &waiting.closed {
                return transport(closed.clone());
            }
            waiting.calls.insert(call, answer);
        }
        let frame = match serde_json::to_vec(&CallFrame { call, request }) {
            Ok(frame) => frame,
            Err(error) => {
                lock(&self.waiting).calls.remove(&call);
                return transport(format!("the request does not encode: {error}"));
            }
        };
        if let Err(error) = write_frame(&mut *lock(&self.writer), &frame) {
            lock(&self.waiting).calls.remove(&call);
            return transport(format!("cannot reach the enclave: {error}"));
        }
        drop(frame);
        let answer = match self.timeout {
            Some(timeout) => answered.recv_timeout(timeout).map_err(|error| match error {
                mpsc::RecvTimeoutError::Timeout => Some(timeout),
                mpsc::RecvTimeoutError::Disconnected => None,
            }),
            None => answered.recv().map_err(|_| None),
        };
        answer.unwrap_or_else(|timed_out| {
            let mut waiting = lock(&self.waiting);
            if let Some(timeout) = timed_out {
                waiting.calls.remove(&call);
                waiting.closed = Some(format!("the enclave did not answer within {timeout:?}"));
            }
            let closed = waiting.closed.clone();
            transport(closed.unwrap_or_else(|| "the enclave process ended".into()))
        })
    }
}

impl Drop for PipeLink {
    /// Closes the enclave's input, which ends its process, and waits for it.
    fn drop(&mut self) {
        *lock(&self.writer) = Box::new(io::sink());
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.wait();
        }
    }
}

impl std::fmt::Debug for PipeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = lock(&self.child).as_ref().map(Child::id);
        f.debug_struct("PipeLink").field("pid", &pid).finish_non_exhaustive()
    }
}

fn transport(message: String) -> Response {
    Response::Failed(Failure::new(FailureKind::Transport, message))
}
