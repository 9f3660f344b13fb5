//! The I/O layer: the ring (io_uring, or the threads back end in its place),
//! the typed operations (op/), the table of operations in flight, the
//! queueing of operations, and the pools of pipes, buffers and worker
//! pieces they lend. It imports nothing from the layers above it (engine,
//! transfer, server, settings): completions are routed by `Owner` and an
//! opaque tag the owner chose, and what an owner makes of them is the
//! owner's business.

pub(crate) mod buffer_pool;
pub(crate) mod errno;
pub(crate) mod fd;
pub(crate) mod op;
pub(crate) mod opcodes;
pub(crate) mod ops;
pub(crate) mod parking;
pub(crate) mod piece_pool;
pub(crate) mod pipe_pool;
pub(crate) mod queue;
pub(crate) mod ring;
mod threads;
pub mod unavailable;

/// The ring and the table of its operations in flight, together: whoever
/// queues work borrows this one field of the engine, and nothing else.
pub struct Io {
    pub ring: ring::Ring,
    pub ops: ops::OpTable,
}

/// Which I/O back end the loop drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// io_uring; start-up fails if it is unavailable.
    Uring,
    /// Worker threads doing the same operations with plain syscalls.
    Threads,
    /// io_uring when the kernel allows it, else threads, saying why once.
    Auto,
}

impl EngineKind {
    /// The name used in flags, the config file and logs.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Uring => "uring",
            EngineKind::Threads => "threads",
            EngineKind::Auto => "auto",
        }
    }

    /// Parses `uring`, `threads` or `auto`.
    pub fn parse(s: &str) -> Option<EngineKind> {
        [EngineKind::Uring, EngineKind::Threads, EngineKind::Auto]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

/// Why the engine could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "io_uring_setup with {entries} entries failed with {}: {cause}",
        unavailable::errno_name(source)
    )]
    RingSetup {
        entries: u32,
        /// What the errno means here and how to fix it.
        cause: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "io_uring lacks operations the engine needs ({}): the kernel is too old; \
         upgrade it, or run --engine threads",
        opcode_names(.0)
    )]
    MissingOpcodes(Vec<&'static opcodes::Opcode>),
    #[error("the threads engine could not start: {0}")]
    Threads(#[source] std::io::Error),
    #[error("io_uring_enter failed: {source}")]
    Enter {
        #[source]
        source: std::io::Error,
    },
    #[error("no pipe could be made for the pipe pool: {0}")]
    NoPipes(#[source] pipe_pool::PipeError),
    #[error("invalid setting: {0}")]
    Config(String),
    #[error("the I/O buffer pool: {0}")]
    Buffers(#[from] buffer_pool::BufferError),
}

/// "FTRUNCATE, SEND_ZC": opcodes by their kernel names.
fn opcode_names(ops: &[&opcodes::Opcode]) -> String {
    let names: Vec<String> = ops.iter().map(|o| o.name.to_ascii_uppercase()).collect();
    names.join(", ")
}
