//! The shoal wire protocol: messages between clients, the scheduler and
//! workers. Pure: serde and postcard, no runtime.

mod msg;

pub use msg::*;
