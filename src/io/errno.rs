//! The kernel's ways of saying "interrupted": what the threads back end
//! retries, as the kernel retries inside io_uring. They live with the one
//! errno table, in the client crate (`ringxfer_ipc::errno`), as the client
//! sees the same codes; `transfer/errno.rs` adds what each errno means to a
//! job's next step.

pub(crate) use ringxfer_ipc::errno::interrupted;
